"""Frozen models of a bundle definition, as written in `bundles/definitions/*.yaml`.

A definition is data, not code: a province or municipality adds or changes a bundle by
editing a file. Cross-step rules (cycles, unknown adapters, unknown fields) are checked by
`bundles.catalogue`, which knows the file a definition came from.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STEP_ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
BUNDLE_ID_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"


class Frozen(BaseModel):
    """Base for immutable models that reject unknown keys (typos in a definition are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class LocalizedText(Frozen):
    """A text in both official languages."""

    en: str = Field(min_length=1)
    fr: str = Field(min_length=1)


class Level(StrEnum):
    """Order of government that runs a program."""

    FEDERAL = "federal"
    PROVINCIAL = "provincial"
    MUNICIPAL = "municipal"


class RetrySpec(Frozen):
    """How tellonce retries a step after a transient error.

    Retries are always bounded: after `maximum_attempts` attempts, or once the step's
    deadline has passed, the step parks in `needs_attention` for an operator.
    """

    initial_interval: timedelta = timedelta(seconds=2)
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=10.0)
    maximum_interval: timedelta = timedelta(minutes=5)
    maximum_attempts: int = Field(default=8, ge=1, le=100)


class CompensationSpec(Frozen):
    """How a completed step is undone when the bundle fails before its pivot or is withdrawn."""

    description: LocalizedText


class EligibilityRule(Frozen):
    """A step runs only when a submission field holds one of the listed values."""

    field: str = Field(min_length=1)
    one_of: tuple[str, ...] = Field(min_length=1)
    guidance: LocalizedText


class ConsentPurpose(Frozen):
    """A purpose a resident consents to, with the notice they are shown."""

    label: LocalizedText
    notice: LocalizedText


class SubmissionRule(Frozen):
    """A bundle's own constraint on one submission field, checked after its schema.

    A schema serves several bundles; a rule narrows it for one of them, e.g. `newborn-on`
    registers only births in Ontario.
    """

    field: str = Field(min_length=1, description="Dotted path of the field the rule checks.")
    one_of: tuple[str, ...] = Field(min_length=1)
    code: str = Field(pattern=STEP_ID_PATTERN, description="Stable error code reported when it fails.")
    message: LocalizedText


class StepDefinition(Frozen):
    """One program that a bundle notifies, through one adapter."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    program: LocalizedText
    organization: LocalizedText
    level: Level
    adapter: str = Field(min_length=1)
    fields: tuple[str, ...] = Field(
        min_length=1,
        description="Dotted paths of the submission fields this step may receive (data minimisation).",
    )
    consent: str | None = Field(
        default=None, description="Consent purpose the resident must give; None if none is needed."
    )
    needs: tuple[str, ...] = ()
    references: tuple[str, ...] = Field(
        default=(),
        description=(
            "Steps (among those this step needs, directly or not) whose legacy reference this "
            "step sends, e.g. the birth registration number to CRA."
        ),
    )
    optional: bool = Field(default=False, description="An optional step's failure does not fail the bundle.")
    pivot: bool = Field(
        default=False,
        description="After this step is done nothing is rolled back: later failures go to an operator.",
    )
    eligibility: EligibilityRule | None = None
    retry: RetrySpec = RetrySpec()
    call_timeout: timedelta = Field(
        default=timedelta(seconds=30), description="Longest one call to the legacy system may take."
    )
    deadline: timedelta = Field(
        default=timedelta(hours=24),
        description="How long tellonce keeps retrying before an operator is asked to decide.",
    )
    reply_timeout: timedelta = Field(
        default=timedelta(days=7),
        description=(
            "How long to wait for an asynchronous reply, when the system answers later, before an "
            "operator is asked."
        ),
    )
    awaits: Literal["birth_notice"] | None = Field(
        default=None,
        description=(
            "A fact from outside the submission the step waits for before it is sent: "
            "`birth_notice`, the hospital's or midwife's Notice of Live Birth matching the statement."
        ),
    )
    await_within: timedelta = Field(
        default=timedelta(days=30),
        description="How long the step waits for what it `awaits` before an operator is asked.",
    )
    compensation: CompensationSpec | None = None
    without_consent: LocalizedText | None = Field(
        default=None, description="Guidance shown when the resident did not consent (apply directly)."
    )
    on_done: LocalizedText | None = Field(
        default=None, description="What the resident can expect once the step is done."
    )


class BundleDefinition(Frozen):
    """A versioned life-event bundle for one jurisdiction."""

    id: str = Field(pattern=BUNDLE_ID_PATTERN)
    version: int = Field(ge=1)
    jurisdiction: str = Field(pattern=r"^CA(-[A-Z]{2})?(-[A-Z0-9-]+)?$")
    life_event: str = Field(min_length=1)
    title: LocalizedText
    description: LocalizedText
    submission_schema: str = Field(
        min_length=1, description="Name of the submission schema, e.g. 'newborn/v1'."
    )
    consent_purposes: dict[str, ConsentPurpose] = Field(default_factory=dict)
    submission_rules: tuple[SubmissionRule, ...] = Field(
        default=(), description="Constraints this bundle adds to its submission schema."
    )
    steps: tuple[StepDefinition, ...] = Field(min_length=1)

    def step(self, step_id: str) -> StepDefinition:
        """Return the step with this id (KeyError when absent)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)
