"""Deterministic orchestration: no I/O, clocks, randomness or threads in this package."""
