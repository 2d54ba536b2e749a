"""Rewrite passes: they change only the graph (and the modules it owns)."""
