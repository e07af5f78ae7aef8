"""Adapters to legacy systems: the SDK integrators implement, and one module per system.

Nothing here imports Temporal: an adapter knows its protocol and its system, nothing else.
"""
