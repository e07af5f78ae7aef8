"""Declarative field mapping from a step's projected fields to one legacy system's request format.

Every legacy system names things its own way (`surname`, `last_name`, `CHILD_SURNAME`...). An
adapter lists its renames once; values the projection lacks are left out, never invented.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MISSING = object()
"""What `get_path` returns for a path the data does not have (None is a value)."""


@dataclass(frozen=True)
class Rename:
    """Copy the value at `source` to `target` (dotted paths), optionally transformed.

    Attributes:
        source: Dotted path in the projected fields, e.g. `child.date_of_birth`. A path to a
            section copies the whole section.
        target: Dotted path in the system's request, e.g. `child.birth_date`.
        transform: Applied to a present, non-null value; returning None leaves the target out.
    """

    source: str
    target: str
    transform: Callable[[Any], Any] | None = None


def get_path(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or `MISSING`."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set a value at a dotted path, creating the sections on the way."""
    *parents, leaf = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def leaf_paths(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted path that ends at a value that is not a section."""
    paths: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            paths.extend(leaf_paths(value, f"{path}."))
        else:
            paths.append(path)
    return paths


class FieldMap:
    """An ordered set of `Rename`s: the whole of what an adapter sends to its system."""

    def __init__(self, *renames: Rename) -> None:
        self.renames = renames

    def apply(self, projected: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Map projected fields to the system's format.

        Args:
            projected: The step's projected fields (a nested dict).

        Returns:
            The system's request fields, and the projected leaf paths no rename used (names
            only, never values: the caller may log them to spot a definition that sends more
            than the system takes).
        """
        mapped: dict[str, Any] = {}
        for rename in self.renames:
            value = get_path(projected, rename.source)
            if value is MISSING or value is None:
                continue
            if rename.transform is not None:
                value = rename.transform(value)
                if value is None:
                    continue
            set_path(mapped, rename.target, value)
        sources = [rename.source for rename in self.renames]
        unused = [
            path
            for path in leaf_paths(projected)
            if not any(path == source or path.startswith(f"{source}.") for source in sources)
        ]
        return mapped, unused


def upper(value: Any) -> str:
    """Upper-case text, as mainframe records keep names and places."""
    return str(value).upper()


def digits(value: Any) -> str:
    """Only the digits (a SIN typed with spaces or dashes)."""
    return re.sub(r"\D", "", str(value))


def compact_date(value: Any) -> str:
    """`2026-01-31` as `20260131`, the fixed-width date of older systems."""
    return str(value).replace("-", "")


def compact_postal_code(value: Any) -> str:
    """`k1a 0b1` as `K1A0B1`."""
    return re.sub(r"\s", "", str(value)).upper()


def language_letter(value: Any) -> str | None:
    """`en`/`fr` as the one-letter code (`E`/`F`) many federal systems use."""
    return {"en": "E", "fr": "F"}.get(str(value))


TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "upper": upper,
    "digits": digits,
    "compact_date": compact_date,
    "compact_postal_code": compact_postal_code,
    "language_letter": language_letter,
}
"""The transforms a system declared by configuration (`bundles/systems/*.yaml`) may name.

A whitelist of plain functions: a configuration file chooses among them and can run nothing else.
"""
