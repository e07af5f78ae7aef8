"""Resolve a validated submission against a bundle definition into the plan a bundle executes.

Pure functions only: the plan is computed once, before the workflow starts, and travels in the
workflow's input so the definition version in force at submission is fixed in its history.
"""

from __future__ import annotations

import calendar
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from bundles.models import (
    BundleDefinition,
    Frozen,
    Level,
    LocalizedText,
    RetrySpec,
    StepDefinition,
    StepVariant,
)

_MISSING = object()


class SkipReason(StrEnum):
    """Why a step is skipped before it starts."""

    NO_CONSENT = "no_consent"
    NOT_ELIGIBLE = "not_eligible"
    NO_VARIANT = "no_variant"


class PlannedStep(Frozen):
    """One step of a resolved plan: its definition's policy plus the data it may receive."""

    id: str
    program: LocalizedText
    organization: LocalizedText
    level: Level
    system: str = Field(description="The adapter id; also the legacy system's task-queue suffix.")
    needs: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    optional: bool = False
    pivot: bool = False
    before_pivot: bool = Field(
        default=False,
        description="True when the step may run before the pivot is done (so it can be rolled back).",
    )
    failure_rolls_back: bool = Field(
        default=False,
        description=(
            "True when this required step's failure rolls the bundle back even after the pivot "
            "(the definition's `roll_back_on_failure: always`)."
        ),
    )
    compensable: bool = False
    on_compensated: LocalizedText | None = None
    not_before: datetime | None = Field(
        default=None,
        description=(
            "Earliest time the request may be sent: the system takes an effective-dated change only "
            "so far ahead of its date."
        ),
    )
    retry: RetrySpec = RetrySpec()
    call_timeout: timedelta = timedelta(seconds=30)
    deadline: timedelta = timedelta(hours=24)
    reply_timeout: timedelta = timedelta(days=7)
    awaits: Literal["birth_notice"] | None = None
    await_within: timedelta = timedelta(days=30)
    payload: dict[str, Any] = Field(default_factory=dict)
    skip: SkipReason | None = None
    skip_message: LocalizedText | None = None
    on_done: LocalizedText | None = None


class BundlePlan(Frozen):
    """Everything a `BundleWorkflow` needs, fixed at submission time."""

    bundle_id: str
    definition_version: int
    definition_digest: str
    jurisdiction: str
    steps: tuple[PlannedStep, ...]

    def step(self, step_id: str) -> PlannedStep:
        """Return the planned step with this id (KeyError when absent)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


_DIGESTS: OrderedDict[int, tuple[BundleDefinition, str]] = OrderedDict()
_DIGESTS_KEPT = 64


def definition_digest(definition: BundleDefinition) -> str:
    """A short, stable fingerprint of a definition, recorded with each bundle."""
    # Definitions are frozen and few, but serialising one costs more than the rest of planning:
    # remember the last few by identity (the entry keeps the object alive, so ids stay unique).
    cached = _DIGESTS.get(id(definition))
    if cached is not None and cached[0] is definition:
        _DIGESTS.move_to_end(id(definition))
        return cached[1]
    canonical = json.dumps(definition.model_dump(mode="json"), sort_keys=True).encode()
    digest = hashlib.sha256(canonical).hexdigest()[:16]
    _DIGESTS[id(definition)] = (definition, digest)
    if len(_DIGESTS) > _DIGESTS_KEPT:
        _DIGESTS.popitem(last=False)
    return digest


def merge_fields(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it, nested objects merged key by key (an amendment)."""
    merged = dict(base)
    for key, value in changes.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = merge_fields(current, value)
        else:
            merged[key] = value
    return merged


def leaf_paths(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted path of every leaf of a payload (an empty object counts as a leaf)."""
    paths: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            paths |= leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """Return the value at a dotted path, or `None` when any part is absent."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def project(data: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """Copy only the listed dotted paths into a new nested dict (absent paths are left out)."""
    projected: dict[str, Any] = {}
    for path in paths:
        value: Any = data
        for part in path.split("."):
            value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
            if value is _MISSING:
                break
        if value is _MISSING:
            continue
        *parents, leaf = path.split(".")
        target = projected
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return projected


def steps_after_pivot(definition: BundleDefinition) -> frozenset[str]:
    """Ids of the steps that (transitively) need the pivot step."""
    pivots = {s.id for s in definition.steps if s.pivot}
    after: set[str] = set()
    changed = True
    while changed:
        changed = False
        for step in definition.steps:
            if step.id not in after and any(n in pivots or n in after for n in step.needs):
                after.add(step.id)
                changed = True
    return frozenset(after)


def resolve_plan(
    definition: BundleDefinition,
    submission: Mapping[str, Any],
    consents: Mapping[str, bool],
) -> BundlePlan:
    """Resolve a validated submission (JSON-mode dict) into the plan its bundle executes.

    A step whose consent purpose was not granted, or whose eligibility rule does not hold,
    is planned as skipped and receives no data at all. A step with variants goes to the receiver
    the submission selects (e.g. the new address's municipality), or is skipped when none applies.
    """
    after_pivot = steps_after_pivot(definition)
    return BundlePlan(
        bundle_id=definition.id,
        definition_version=definition.version,
        definition_digest=definition_digest(definition),
        jurisdiction=definition.jurisdiction,
        steps=tuple(
            _plan_step(
                step,
                submission,
                consents,
                before_pivot=step.id not in after_pivot,
                always_rolls_back=definition.roll_back_on_failure == "always",
                zone=ZoneInfo(definition.timezone),
            )
            for step in definition.steps
        ),
    )


def matches(value: Any, one_of: tuple[str, ...]) -> bool:
    """Whether a submitted value is one of the listed ones (trimmed, case-insensitive)."""
    return value is not None and str(value).strip().casefold() in {v.casefold() for v in one_of}


def not_before(step: StepDefinition, submission: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    """When a step's effective-dated change may first be sent (None: at once).

    Its system takes the change at most `months_ahead` months before the date it takes effect,
    from midnight in the bundle's time zone.
    """
    rule = step.effective_date
    if rule is None or rule.months_ahead is None:
        return None
    raw = lookup(submission, rule.field)
    if raw is None:
        return None
    effective = date.fromisoformat(str(raw))
    index = effective.year * 12 + effective.month - 1 - rule.months_ahead
    year, month = divmod(index, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    earliest = date(year, month + 1, min(effective.day, last_day))
    return datetime.combine(earliest, time(0), zone)


def _plan_step(
    step: StepDefinition,
    submission: Mapping[str, Any],
    consents: Mapping[str, bool],
    *,
    before_pivot: bool,
    always_rolls_back: bool,
    zone: ZoneInfo,
) -> PlannedStep:
    skip: SkipReason | None = None
    skip_message: LocalizedText | None = None
    adapter, organization, program = step.adapter, step.organization, step.program
    variant: StepVariant | None = None
    if step.variants:
        variant = next(
            (v for v in step.variants if matches(lookup(submission, v.when.field), v.when.one_of)), None
        )
        if variant is not None:
            adapter, organization = variant.adapter, variant.organization
            program = variant.program or program
    if step.consent is not None and not consents.get(step.consent, False):
        skip, skip_message = SkipReason.NO_CONSENT, step.without_consent
    elif step.eligibility is not None:
        value = lookup(submission, step.eligibility.field)
        if value is None or str(value) not in step.eligibility.one_of:
            skip, skip_message = SkipReason.NOT_ELIGIBLE, step.eligibility.guidance
    elif step.variants and variant is None:
        skip, skip_message = SkipReason.NO_VARIANT, step.no_variant
    return PlannedStep(
        id=step.id,
        program=program,
        organization=organization,
        level=step.level,
        system=adapter,
        needs=step.needs,
        references=step.references,
        optional=step.optional,
        pivot=step.pivot,
        before_pivot=before_pivot,
        failure_rolls_back=always_rolls_back and not step.optional,
        compensable=step.compensation is not None,
        not_before=None if skip else not_before(step, submission, zone),
        on_compensated=step.compensation.description if step.compensation else None,
        retry=step.retry,
        call_timeout=step.call_timeout,
        deadline=step.deadline,
        reply_timeout=step.reply_timeout,
        awaits=step.awaits,
        await_within=step.await_within,
        payload={} if skip else project(submission, step.fields),
        skip=skip,
        skip_message=skip_message,
        on_done=step.on_done,
    )
