"""Plans pick a step's receiver by the submission, and bundles bound dates by their own rules."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from bundles.models import BundleDefinition, SubmissionRule
from bundles.plan import SkipReason, resolve_plan
from bundles.submissions.validation import add_months, rule_holds


def text(en: str) -> dict[str, str]:
    return {"en": en, "fr": f"{en} (fr)"}


MUNICIPAL = {
    "id": "municipality",
    "program": text("Property tax and water billing"),
    "organization": text("Your municipality"),
    "level": "municipal",
    "adapter": "ottawa-revenue",
    "fields": ["new_address"],
    "optional": True,
    "variants": [
        {
            "when": {"field": "new_address.municipality", "one_of": ["Ottawa"]},
            "adapter": "ottawa-revenue",
            "organization": text("City of Ottawa"),
        },
        {
            "when": {"field": "new_address.municipality", "one_of": ["Toronto", "North York"]},
            "adapter": "toronto-revenue",
            "organization": text("City of Toronto"),
            "program": text("Utility billing"),
        },
    ],
    "no_variant": text("Tell your municipality yourself"),
}


def definition() -> BundleDefinition:
    return BundleDefinition.model_validate(
        {
            "id": "variants-test",
            "version": 1,
            "jurisdiction": "CA-ON",
            "life_event": "address_change",
            "title": text("Address"),
            "description": text("Variants"),
            "submission_schema": "address_change/v1",
            "steps": [MUNICIPAL],
        }
    )


def municipal_step(municipality: str) -> Any:
    submission = {"new_address": {"municipality": municipality, "street": "1 Main St"}}
    return resolve_plan(definition(), submission, {}).step("municipality")


@pytest.mark.parametrize(
    ("municipality", "system", "organization", "program"),
    [
        ("Ottawa", "ottawa-revenue", "City of Ottawa", "Property tax and water billing"),
        ("  ottawa ", "ottawa-revenue", "City of Ottawa", "Property tax and water billing"),
        ("NORTH YORK", "toronto-revenue", "City of Toronto", "Utility billing"),
    ],
)
def test_the_first_matching_variant_chooses_the_receiver(
    municipality: str, system: str, organization: str, program: str
) -> None:
    step = municipal_step(municipality)
    assert step.skip is None
    assert step.system == system
    assert step.organization.en == organization
    assert step.program.en == program
    assert step.payload == {"new_address": {"municipality": municipality, "street": "1 Main St"}}


def test_no_matching_variant_skips_the_step_with_its_guidance_and_no_data() -> None:
    step = municipal_step("Kingston")
    assert step.skip is SkipReason.NO_VARIANT
    assert step.skip_message is not None and step.skip_message.en == "Tell your municipality yourself"
    assert step.payload == {}


def test_a_rule_is_either_a_list_of_values_or_a_date_window() -> None:
    base = {"field": "effective_date", "code": "bad_date", "message": text("Bad date")}
    with pytest.raises(ValidationError, match="exactly one"):
        SubmissionRule.model_validate(base)
    with pytest.raises(ValidationError, match="exactly one"):
        SubmissionRule.model_validate(
            {**base, "one_of": ["x"], "date_within": {"months_behind": 1, "months_ahead": 1}}
        )


@pytest.mark.parametrize(
    ("value", "holds"),
    [
        ("2025-11-23", True),  # exactly 12 months back
        ("2025-11-22", False),
        ("2027-05-23", True),  # exactly 6 months ahead
        ("2027-05-24", False),
        ("2026-11-23", True),
        ("not a date", False),
    ],
)
def test_a_date_window_counts_calendar_months_from_today(value: str, holds: bool) -> None:
    rule = SubmissionRule.model_validate(
        {
            "field": "effective_date",
            "date_within": {"months_behind": 12, "months_ahead": 6},
            "code": "effective_date_out_of_range",
            "message": text("Out of range"),
        }
    )
    assert rule_holds(rule, value, date(2026, 11, 23)) is holds


def test_months_are_added_on_the_calendar() -> None:
    assert add_months(date(2026, 8, 31), -6) == date(2026, 2, 28)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert add_months(date(2026, 11, 23), 2) == date(2027, 1, 23)
