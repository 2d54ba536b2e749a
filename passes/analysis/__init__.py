"""Analysis passes: they read the graph and write only the property set."""
