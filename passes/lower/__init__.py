"""Lowering passes: bind the quantum ops of a rewritten graph to an execution backend."""
