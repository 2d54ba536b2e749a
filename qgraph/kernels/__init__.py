"""Classical reference implementations (closed forms, statevector simulators) of qgraph's quantum kernels."""
