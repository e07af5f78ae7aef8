"""Sandbox doubles of the legacy systems declared by configuration (`bundles/systems/*.yaml`).

Each system file with a `sandbox:` block becomes a simulated system that speaks the standard REST
protocol, keeps a ledger like the built-in ones and hands out references with its own prefix.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from adapters.configured import SystemFile, load_systems
from infra.sandbox.systems import SystemSpec

REFERENCE_ALPHABET = string.digits + string.ascii_uppercase
REFERENCE_LENGTH = 8


def reference_maker(prefix: str) -> Callable[[datetime], str]:
    """References such as `OTT-HBHC-7Q2M4K1Z`: the system's prefix and random characters, no data."""

    def make(_now: datetime) -> str:
        return f"{prefix}-{''.join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))}"

    return make


def spec_for(system: SystemFile) -> SystemSpec | None:
    """The simulated system of one system file; None when the file declares no sandbox double."""
    double = system.sandbox
    if double is None:
        return None
    return SystemSpec(
        id=system.id,
        name=system.name,
        honours_keys=double.honours_keys,
        reversible=system.reversible,
        new_reference=reference_maker(double.reference_prefix),
        accepted_state=double.accepted_state,
        accepted=double.accepted,
    )


def configured_specs(directory: Path | str | None = None) -> tuple[SystemSpec, ...]:
    """The simulated systems declared in configuration files (default the packaged `bundles/systems`).

    Raises:
        DefinitionError: A system file is broken; the sandbox does not start half-configured.
    """
    specs = (spec_for(system) for system in load_systems(directory))
    return tuple(spec for spec in specs if spec is not None)
