"""Sandbox doubles of legacy systems declared by configuration (placeholder until that lands)."""

from __future__ import annotations

from infra.sandbox.systems import SystemSpec


def configured_specs() -> tuple[SystemSpec, ...]:
    """The simulated systems declared in configuration files."""
    return ()
