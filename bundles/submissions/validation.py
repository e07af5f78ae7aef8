"""Validate a resident's submission for a bundle: its schema, its consents and the bundle's own rules.

Every problem becomes a `FieldError` with a dotted path, a stable code and a bilingual
message, so a form can show each one next to its field. Submitted values never appear in an
error: a value may be a Social Insurance Number. No text may hold `<` or `>` (no name, address
or other detail needs them, and refusing them keeps markup out of everything downstream), nor
an invisible or control character (a zero-width space pasted with an address would pass here
and then be refused by a legacy system's batch file, after the resident was told "accepted").
"""

from __future__ import annotations

import calendar
import unicodedata
from collections.abc import Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bundles.messages import message_for
from bundles.models import BundleDefinition, LocalizedText, SubmissionRule
from bundles.plan import lookup
from bundles.submissions.registry import SUBMISSION_SCHEMAS
from bundles.validators import safe_path, toronto_today


class FieldError(BaseModel):
    """One problem with a submission, at one field."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="Dotted path of the field, e.g. 'birth_parent.sin'; '' for the whole form.")
    code: str = Field(description="Stable error code, e.g. 'sin_checksum' or pydantic's 'missing'.")
    message: LocalizedText


class SubmissionInvalid(Exception):  # noqa: N818  # the API's vocabulary: a submission is invalid
    """A submission that cannot be accepted; `errors` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        # Paths and codes only: the exception text may be logged and must hold no personal data.
        summary = ", ".join(f"{e.path or '<form>'} ({e.code})" for e in errors)
        super().__init__(f"submission invalid: {summary}")
        self.errors = errors


class ValidatedSubmission(BaseModel):
    """An accepted submission, ready for `bundles.plan.resolve_plan`."""

    model_config = ConfigDict(frozen=True)

    submission_schema: str
    data: dict[str, Any] = Field(
        description="The normalised form in JSON mode, without empty fields or consents."
    )
    consents: dict[str, bool]
    notices: list[LocalizedText] = Field(default_factory=list)


def _schema_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(
            path=safe_path(err["loc"]), code=err["type"], message=message_for(err["type"], err.get("ctx"))
        )
        for err in exc.errors(include_input=False, include_url=False)
    ]


def _consent_errors(definition: BundleDefinition, raw: Mapping[str, Any]) -> list[FieldError]:
    consents = raw.get("consents")
    if not isinstance(consents, Mapping):
        return []  # a wrong type is the schema's error to report
    return [
        FieldError(
            path=safe_path(("consents", key)),
            code="unknown_consent_purpose",
            message=message_for("unknown_consent_purpose"),
        )
        for key in consents
        if key not in definition.consent_purposes
    ]


def rule_holds(rule: SubmissionRule, value: Any, today: date) -> bool:
    """Whether a submitted value satisfies one of the bundle's own rules (on `today`)."""
    if rule.one_of is not None:
        return str(value).strip().upper() in {v.upper() for v in rule.one_of}
    window = rule.date_within
    assert window is not None  # the model requires one kind of rule
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        return False
    if window.months_behind is not None and day < add_months(today, -window.months_behind):
        return False
    return window.months_ahead is None or day <= add_months(today, window.months_ahead)


def add_months(day: date, months: int) -> date:
    """The same day `months` calendar months later (or earlier), clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


MARKUP_CHARACTERS = frozenset("<>")
MARKUP_MESSAGE = LocalizedText(
    en="Remove the characters < and >; they have no place in names, addresses or other details",
    fr="Retirez les caractères < et >; ils n'ont pas leur place dans les noms, les adresses ou "
    "les autres renseignements",
)


def _texts(value: Any) -> list[tuple[tuple[int | str, ...], str]]:
    """Every string of a JSON tree with its location (iterative: the tree may be deep)."""
    found: list[tuple[tuple[int | str, ...], str]] = []
    pending: list[tuple[tuple[int | str, ...], Any]] = [((), value)]
    while pending:
        loc, node = pending.pop()
        if isinstance(node, str):
            found.append((loc, node))
        elif isinstance(node, Mapping):
            pending.extend(((*loc, str(key)), child) for key, child in node.items())
        elif isinstance(node, list):
            pending.extend(((*loc, index), child) for index, child in enumerate(node))
    return found


def _text_errors(data: Any, already: set[str]) -> list[FieldError]:
    """Texts holding markup, or characters of Unicode's "other" categories (controls, format
    characters such as zero-width spaces and direction overrides, unassigned code points)."""
    errors: dict[str, FieldError] = {}
    for loc, text in _texts(data):
        # Nearly every text is printable and free of markup: then no character can be refused
        # (`isprintable` is False for every "other" category), so skip the per-character scan.
        if text.isprintable() and MARKUP_CHARACTERS.isdisjoint(text):
            continue
        path = safe_path(loc)
        if path in already:
            continue
        if any(unicodedata.category(char).startswith("C") for char in text):
            errors.setdefault(
                path, FieldError(path=path, code="text_characters", message=message_for("text_characters"))
            )
        elif not MARKUP_CHARACTERS.isdisjoint(text):
            errors.setdefault(path, FieldError(path=path, code="markup_characters", message=MARKUP_MESSAGE))
    return sorted(errors.values(), key=lambda e: e.path)


def _rule_errors(
    definition: BundleDefinition, data: Mapping[str, Any], already: set[str], today: date
) -> list[FieldError]:
    errors: list[FieldError] = []
    for rule in definition.submission_rules:
        if rule.field in already:
            continue  # the field is already wrong in itself; one message per field is enough
        value = lookup(data, rule.field)
        if value is not None and not rule_holds(rule, value, today):
            errors.append(FieldError(path=rule.field, code=rule.code, message=rule.message))
    return errors


def validate_submission(
    definition: BundleDefinition, raw: Mapping[str, Any], *, today: date | None = None
) -> ValidatedSubmission:
    """Validate a submission for a bundle and return its normalised data.

    Checks the definition's submission schema (field formats and cross-field rules), that
    every consent names a purpose of this bundle, and the bundle's own submission rules.

    Args:
        definition: The bundle the resident is submitting to.
        raw: The submission as received (parsed JSON).
        today: The date to validate against; defaults to today in America/Toronto. Tests
            pin it so date rules (12 months, 30 days) stay stable.

    Returns:
        The normalised data, the consents and any notices for the resident.

    Raises:
        SubmissionInvalid: With every problem found, each with its path and code.
        LookupError: When the definition names a schema this version does not know (the
            catalogue refuses such definitions at load time).
    """
    schema = SUBMISSION_SCHEMAS.get(definition.submission_schema)
    if schema is None:
        raise LookupError(f"unknown submission schema {definition.submission_schema!r}")
    today = today or toronto_today()
    errors: list[FieldError] = []
    model: BaseModel | None = None
    try:
        model = schema.model_validate(raw, context={"today": today})
    except ValidationError as exc:
        errors.extend(_schema_errors(exc))
    if isinstance(raw, Mapping):
        errors.extend(_consent_errors(definition, raw))
        checked = model.model_dump(mode="json") if model is not None else raw
        errors.extend(_rule_errors(definition, checked, {e.path for e in errors}, today))
        errors.extend(_text_errors(checked, {e.path for e in errors}))
    if errors or model is None:
        raise SubmissionInvalid(errors)

    data = model.model_dump(mode="json", exclude_none=True)
    consents: dict[str, bool] = data.pop("consents", {})
    notices_of = getattr(model, "notices", None)
    notices: list[LocalizedText] = notices_of(today=today) if callable(notices_of) else []
    return ValidatedSubmission(
        submission_schema=definition.submission_schema, data=data, consents=consents, notices=notices
    )
