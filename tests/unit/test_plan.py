"""Plans resolved from the newborn-on examples: consent, eligibility and data minimisation per step."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.models import BundleDefinition
from bundles.plan import BundlePlan, SkipReason, definition_digest, lookup, project, resolve_plan
from bundles.submissions import validate_submission

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "newborn-on"
TODAY = date(2026, 11, 23)

CCB_FIELDS = {
    "birth_parent.given_names",
    "birth_parent.surname",
    "birth_parent.date_of_birth",
    "birth_parent.place_of_birth.municipality",
    "birth_parent.place_of_birth.province_or_country",
    "birth_parent.sin",
    "birth_parent.mailing_address.street",
    "birth_parent.mailing_address.unit",
    "birth_parent.mailing_address.municipality",
    "birth_parent.mailing_address.province",
    "birth_parent.mailing_address.postal_code",
    "child.given_names",
    "child.surname",
    "child.date_of_birth",
    "child.place_of_birth.facility_name",
    "child.place_of_birth.municipality",
    "child.place_of_birth.province",
    "child.sex",
}


@pytest.fixture(scope="module")
def definition() -> BundleDefinition:
    return Catalogue.load(known_adapters=KNOWN_ADAPTERS).get("newborn-on")


def plan_for(definition: BundleDefinition, name: str) -> BundlePlan:
    raw = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))["submission"]
    validated = validate_submission(definition, raw, today=TODAY)
    return resolve_plan(definition, validated.data, validated.consents)


def leaves(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every value that is not itself a section."""
    found: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        found |= leaves(value, f"{path}.") if isinstance(value, Mapping) else {path}
    return found


def test_with_every_consent_every_step_runs(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "complete")
    assert [(s.id, s.skip) for s in plan.steps] == [(s.id, None) for s in definition.steps]
    assert (plan.bundle_id, plan.definition_version, plan.jurisdiction) == ("newborn-on", 1, "CA-ON")
    assert plan.definition_digest == definition_digest(definition)
    assert all(step.payload for step in plan.steps)


def test_ccb_payload_keys_are_exactly_what_cra_takes(definition: BundleDefinition) -> None:
    payload = plan_for(definition, "complete").step("canada_child_benefit").payload
    assert leaves(payload) == CCB_FIELDS
    assert payload["birth_parent"]["sin"] == "123456782"


def test_marital_status_never_reaches_cra(definition: BundleDefinition) -> None:
    for name in ("complete", "not-eligible-for-sin"):
        plan = plan_for(definition, name)
        assert not any("marital" in path for path in leaves(plan.step("canada_child_benefit").payload))
        assert lookup(plan.step("birth_registration").payload, "birth_parent.marital_status") is not None


def test_registration_gets_the_health_number_but_not_the_sin(definition: BundleDefinition) -> None:
    payload = plan_for(definition, "complete").step("birth_registration").payload
    assert lookup(payload, "birth_parent.health_number") == "0987654324AB"
    assert lookup(payload, "birth_parent.sin") is None
    assert lookup(payload, "other_parent.status_in_canada") is None
    assert lookup(payload, "child.place_of_birth.province") == "ON"


def test_the_resp_promoter_gets_only_the_minimum(definition: BundleDefinition) -> None:
    payload = plan_for(definition, "complete").step("education_savings_referral").payload
    assert leaves(payload) == {
        "language",
        "resp_referral.promoter",
        "birth_parent.given_names",
        "birth_parent.surname",
        "birth_parent.email",
        "birth_parent.phone",
        "birth_parent.mailing_address.street",
        "birth_parent.mailing_address.unit",
        "birth_parent.mailing_address.municipality",
        "birth_parent.mailing_address.province",
        "birth_parent.mailing_address.postal_code",
        "child.given_names",
        "child.date_of_birth",
    }


def test_no_step_receives_a_field_outside_its_definition(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "complete")
    for step in definition.steps:
        allowed = step.fields
        for path in leaves(plan.step(step.id).payload):
            assert any(path == f or path.startswith(f"{f}.") for f in allowed), (step.id, path)


def test_without_consent_steps_are_skipped_with_guidance_and_no_data(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "no-consents")
    registration = plan.step("birth_registration")
    assert registration.skip is None
    assert registration.payload
    for step in definition.steps[1:]:
        planned = plan.step(step.id)
        assert planned.skip is SkipReason.NO_CONSENT
        assert planned.skip_message == step.without_consent
        assert planned.payload == {}


def test_a_temporary_resident_is_not_eligible_for_the_sin_step(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "not-eligible-for-sin")
    sin = plan.step("social_insurance_number")
    assert sin.skip is SkipReason.NOT_ELIGIBLE
    eligibility = definition.step("social_insurance_number").eligibility
    assert eligibility is not None
    assert sin.skip_message == eligibility.guidance
    assert sin.payload == {}
    # The other consented steps still run, CCB with the temporary resident's SIN.
    assert plan.step("canada_child_benefit").skip is None
    assert lookup(plan.step("canada_child_benefit").payload, "birth_parent.sin") == "912345675"
    assert plan.step("education_savings_referral").skip is SkipReason.NO_CONSENT


def test_a_missing_consent_outranks_eligibility(definition: BundleDefinition) -> None:
    raw = json.loads((EXAMPLES / "not-eligible-for-sin.json").read_text(encoding="utf-8"))["submission"]
    raw["consents"]["sin_application"] = False
    validated = validate_submission(definition, raw, today=TODAY)
    plan = resolve_plan(definition, validated.data, validated.consents)
    assert plan.step("social_insurance_number").skip is SkipReason.NO_CONSENT


def test_pivot_and_compensation_flags(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "complete")
    assert plan.step("birth_registration").pivot
    assert plan.step("birth_certificate").before_pivot
    assert plan.step("birth_certificate").compensable
    for step_id in ("social_insurance_number", "canada_child_benefit", "education_savings_referral"):
        assert not plan.step(step_id).before_pivot
        assert plan.step(step_id).references == ("birth_registration",)
    assert plan.step("birth_certificate").optional
    assert plan.step("education_savings_referral").optional


def test_steps_carry_their_adapter_and_policy(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "complete")
    assert {s.id: s.system for s in plan.steps} == {s.id: s.adapter for s in definition.steps}
    for step in definition.steps:
        planned = plan.step(step.id)
        assert (planned.retry, planned.call_timeout, planned.deadline) == (
            step.retry,
            step.call_timeout,
            step.deadline,
        )
        assert planned.on_done == step.on_done


def test_a_plan_survives_a_json_round_trip(definition: BundleDefinition) -> None:
    plan = plan_for(definition, "complete")
    assert BundlePlan.model_validate_json(plan.model_dump_json()) == plan


def test_project_takes_whole_sections_and_skips_absent_paths() -> None:
    data = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert project(data, ("a.c", "e", "x.y")) == {"a": {"c": {"d": 2}}, "e": 3}
