"""Gate-level qiskit circuits of qgraph's quantum kernels (what sampled backends run)."""
