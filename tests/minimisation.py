"""Data minimisation read off the wire: what each legacy system recorded versus its step's projection.

The sandbox ledgers hold exactly what each simulated system received, whatever the protocol
(JSON, a SOAP body, a fixed-width record, a queue message). A submission value that reached a
system although its step's projection leaves that field out is a leak. Values are compared
normalised (case, accents, spaces and punctuation folded) because adapters reformat what they
send: `046 454 286` travels as `046454286`, `2026-01-31` as `20260131`, `Élodie` as `ELODIE`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any

from bundles.plan import BundlePlan

MIN_LENGTH = 5
"""Shorter values (`F`, `ON`, `en`, `2`) match by chance in any record: they prove nothing."""
CONTAINED_LENGTH = 8
"""A value this long found inside a longer one counts too (a SIN inside a composed record field)."""


def normalised(value: Any) -> str:
    """A value folded to lower-case letters and digits, without accents."""
    text = unicodedata.normalize("NFKD", str(value))
    return "".join(c for c in text if c.isalnum() and not unicodedata.combining(c)).casefold()


def leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) of a nested document, list items included."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, f"{prefix}{index}.")
    elif data is not None and not isinstance(data, bool):
        yield prefix.rstrip("."), data


def leaked_fields(
    plan: BundlePlan, submission: Mapping[str, Any], ledgers: Mapping[str, list[dict[str, Any]]]
) -> dict[str, list[str]]:
    """Per system, the submission fields outside its steps' projections whose values it received.

    Args:
        plan: The bundle's resolved plan (each step's `payload` is its projection).
        submission: The validated submission (JSON mode).
        ledgers: Each system's ledger entries for this bundle.

    Returns:
        Only systems with a leak, each with the leaked dotted paths (never the values).
    """
    leaks: dict[str, list[str]] = {}
    for system, entries in ledgers.items():
        allowed = {
            normalised(value)
            for step in plan.steps
            if step.system == system
            for _, value in leaves(step.payload)
        }
        received = [normalised(value) for entry in entries for _, value in leaves(entry["fields"])]
        found = sorted(
            path
            for path, value in leaves(submission)
            if len(key := normalised(value)) >= MIN_LENGTH
            and key not in allowed
            and any(key == got or (len(key) >= CONTAINED_LENGTH and key in got) for got in received)
        )
        if found:
            leaks[system] = found
    return leaks
