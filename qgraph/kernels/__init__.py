"""Classical reference implementations of qgraph's quantum kernels (closed forms, statevectors)."""
