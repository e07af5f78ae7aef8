"""Frozen models of a bundle definition, as written in `bundles/definitions/*.yaml`.

A definition is data, not code: a province or municipality adds or changes a bundle by
editing a file. Cross-step rules (cycles, unknown adapters, unknown fields) are checked by
`bundles.catalogue`, which knows the file a definition came from.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class DateWindow(Frozen):
    """How far from the day of submission a date may lie, in calendar months."""

    months_behind: int | None = Field(
        default=None, ge=0, le=120, description="How far back the date may be; None for no limit."
    )
    months_ahead: int | None = Field(
        default=None, ge=0, le=120, description="How far ahead the date may be; None for no limit."
    )


class SubmissionRule(Frozen):
    """A bundle's own constraint on one submission field, checked after its schema.

    A schema serves several bundles; a rule narrows it for one of them, e.g. `newborn-on`
    registers only births in Ontario, and `address-change-on` takes an effective date from
    12 months back to 6 months ahead, the widest window its programs accept.
    Exactly one of `one_of` and `date_within` is given.
    """

    field: str = Field(min_length=1, description="Dotted path of the field the rule checks.")
    one_of: tuple[str, ...] | None = Field(default=None, min_length=1)
    date_within: DateWindow | None = Field(
        default=None, description="The field is an ISO date that must lie within this window."
    )
    code: str = Field(pattern=STEP_ID_PATTERN, description="Stable error code reported when it fails.")
    message: LocalizedText

    @model_validator(mode="after")
    def _one_kind(self) -> SubmissionRule:
        if (self.one_of is None) == (self.date_within is None):
            raise ValueError("a submission rule has exactly one of 'one_of' and 'date_within'")
        return self


class Condition(Frozen):
    """A submission field holds one of the listed values (compared case-insensitively)."""

    field: str = Field(min_length=1)
    one_of: tuple[str, ...] = Field(min_length=1)


class StepVariant(Frozen):
    """Who receives a step when a condition holds, e.g. the new address's municipality.

    The first variant whose condition holds replaces the step's own `adapter`, `organization`
    and (when given) `program`; the rest of the step (fields, consent, policy) is shared.
    """

    when: Condition
    adapter: str = Field(min_length=1)
    organization: LocalizedText
    program: LocalizedText | None = None


class EffectiveDate(Frozen):
    """A step carries a change that takes effect on a date of the submission.

    Systems differ in how far ahead they take a change: CRA takes an address up to 6 months
    ahead, others only from the day itself. A date further ahead than `months_ahead` holds the
    step, durably, until the system will take it.
    """

    field: str = Field(min_length=1, description="Dotted path of the ISO date the change takes effect.")
    months_ahead: int | None = Field(
        default=None,
        ge=0,
        le=120,
        description="How far ahead of the date the system takes it; 0: not before the day; None: any.",
    )


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
    variants: tuple[StepVariant, ...] = Field(
        default=(),
        description=(
            "Receivers chosen by the submission, first match wins. When none matches, the step is "
            "skipped with the `no_variant` guidance, which the catalogue requires of such a step."
        ),
    )
    no_variant: LocalizedText | None = Field(
        default=None, description="Guidance shown when no variant applies (e.g. contact your municipality)."
    )
    effective_date: EffectiveDate | None = None
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
    timezone: str = Field(
        default="America/Toronto", description="Where the bundle's dates (effective dates) are reckoned."
    )
    roll_back_on_failure: Literal["before_pivot", "always"] = Field(
        default="before_pivot",
        description=(
            "`before_pivot`: a required step's failure rolls back reversible steps only until the pivot "
            "is done; after it, failures go to an operator (a birth stays registered). `always`: a "
            "required step's failure rolls back every reversible step done, before or after the pivot "
            "(an address change reaches all required programs or none)."
        ),
    )
    steps: tuple[StepDefinition, ...] = Field(min_length=1)

    def step(self, step_id: str) -> StepDefinition:
        """Return the step with this id (KeyError when absent)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


class StepOverride(BaseModel):
    """Keys of one inherited step that a derived bundle changes: `id` names the step, the rest override.

    The keys are deep-merged onto the base step (sections such as `retry` merge key by key; lists
    such as `fields` replace the whole list), and the result must be a valid `StepDefinition`.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str = Field(pattern=STEP_ID_PATTERN)


class DerivedDefinition(Frozen):
    """A bundle defined as changes to another one (`extends`), as a municipality or province writes it.

    It is resolved when the catalogue loads into an ordinary `BundleDefinition`: the base's steps
    minus `remove_steps`, with `replace_steps` merged in, then `add_steps` appended. Everything it
    does not say (life event, submission schema, roll-back policy) comes from the base.
    """

    extends: str = Field(pattern=BUNDLE_ID_PATTERN, description="Id of the bundle this one changes.")
    id: str = Field(pattern=BUNDLE_ID_PATTERN)
    version: int = Field(ge=1)
    jurisdiction: str = Field(pattern=r"^CA(-[A-Z]{2})?(-[A-Z0-9-]+)?$")
    title: LocalizedText | None = Field(default=None, description="Default: the base's title.")
    description: LocalizedText | None = Field(default=None, description="Default: the base's description.")
    timezone: str | None = Field(default=None, description="Default: the base's time zone.")
    remove_steps: tuple[str, ...] = Field(default=(), description="Ids of inherited steps to leave out.")
    replace_steps: tuple[StepOverride, ...] = Field(
        default=(), description="Changes to inherited steps, each naming the step by `id`."
    )
    add_steps: tuple[StepDefinition, ...] = Field(
        default=(), description="New steps, after the inherited ones."
    )
    add_consent_purposes: dict[str, ConsentPurpose] = Field(default_factory=dict)
    add_submission_rules: tuple[SubmissionRule, ...] = ()
