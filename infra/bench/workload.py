"""What the bench sends: distinct synthetic newborn submissions, their hospital notices, and the
dependency shape the raw baseline mirrors."""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any

from stdnum import luhn

from adapters.batch import BatchFileAdapter
from adapters.message_queue import MessageQueueAdapter
from adapters.registry import ADAPTER_TYPES
from bundles.plan import BundlePlan
from infra.bench.raw import RawStep

BUNDLE_ID = "newborn-on"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "newborn-on" / "complete.json"

GIVEN_NAMES = ("Léa", "Noémie", "Anaïs", "Éloïse", "Maëlle", "Zoé", "Aurélie", "Cécile")
"""Synthetic given names agreeing with the example's `sex: F`; accents exercise the name rules."""


def load_example(path: Path = EXAMPLE) -> dict[str, Any]:
    """The example submission every bundle of a run is varied from."""
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["submission"]
    return loaded


class Submissions:
    """Distinct submissions for one run: no two share a health number or a birth time.

    Distinct data keeps the run honest: identical bodies would be twins to the birth-notice
    matcher and duplicates in the sandbox ledgers. The health numbers start at a random base so
    that a second run against the same server does not meet the first run's lingering matchers.
    """

    def __init__(self, template: dict[str, Any] | None = None) -> None:
        self.template = template if template is not None else load_example()
        self.base = 100_000_000 + secrets.randbelow(700_000_000)

    def body(self, index: int) -> dict[str, Any]:
        """The `index`th submission of the run."""
        body = copy.deepcopy(self.template)
        child = body["child"]
        child["given_names"] = GIVEN_NAMES[index % len(GIVEN_NAMES)]
        minute = (index * 7 + 1) % 1440
        child["time_of_birth"] = f"{minute // 60:02d}:{minute % 60:02d}"
        digits = f"{(self.base + index) % 1_000_000_000:09d}"
        body["birth_parent"]["health_number"] = digits + luhn.calc_check_digit(digits)
        return body


def replies_later(system: str) -> bool:
    """Whether a system answers after its call: batch files and message queues do."""
    adapter = ADAPTER_TYPES.get(system)
    return adapter is not None and issubclass(adapter, BatchFileAdapter | MessageQueueAdapter)


def raw_shape(plan: BundlePlan) -> list[RawStep]:
    """The plan's steps as the raw baseline runs them: same needs, same signal waits.

    Skipped steps are left out, as tellonce calls no system for them.
    """
    kept = {step.id for step in plan.steps if step.skip is None}
    return [
        RawStep(
            id=step.id,
            needs=tuple(need for need in step.needs if need in kept),
            awaits_fact=step.awaits is not None,
            reply_later=replies_later(step.system),
        )
        for step in plan.steps
        if step.id in kept
    ]
