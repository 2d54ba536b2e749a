"""Data shipped with qgraph: a small SST-2 sample for the demo and the tests (see README.md)."""
