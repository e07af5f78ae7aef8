"""The `address_change/v1` schema and the `address-change-on` bundle's rules, plans and projections."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.http import JsonRestAdapter
from adapters.registry import ADAPTER_TYPES, KNOWN_ADAPTERS
from bundles.catalogue import DEFAULT_DIRECTORY, load_definition
from bundles.messages import NOTICES
from bundles.models import BundleDefinition
from bundles.plan import SkipReason, project, resolve_plan
from bundles.submissions import SubmissionInvalid, ValidatedSubmission, validate_submission
from infra.sandbox.addresses import ADDRESS_SYSTEMS, AddressBook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "address-change-on"
# The complete example moves on 2026-11-30; pin "today" a week before so date rules stay put.
TODAY = date(2026, 11, 23)
TORONTO = ZoneInfo("America/Toronto")


@pytest.fixture(scope="module")
def definition() -> BundleDefinition:
    return load_definition(DEFAULT_DIRECTORY / "address-change-on.yaml", known_adapters=KNOWN_ADAPTERS)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())["submission"]
    return data


def validate(definition: BundleDefinition, raw: dict[str, Any], today: date = TODAY) -> ValidatedSubmission:
    return validate_submission(definition, raw, today=today)


def errors_of(definition: BundleDefinition, raw: Any, today: date = TODAY) -> set[tuple[str, str]]:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(definition, raw, today=today)
    return {(error.path, error.code) for error in caught.value.errors}


def test_complete_example_is_accepted_and_normalised(definition: BundleDefinition) -> None:
    result = validate(definition, example("complete"))

    resident = result.data["resident"]
    assert resident["sin"] == "135792463"
    assert resident["health_number"] == "4532017888"
    assert resident["driver_licence_number"] == "T65123456880412"
    assert result.data["effective_date"] == "2026-11-30"
    assert result.consents == dict.fromkeys(
        (
            "cra_address",
            "service_canada_address",
            "elections_canada",
            "mto_address",
            "ohip_address",
            "municipal_address",
        ),
        True,
    )
    assert "consents" not in result.data
    # The move is a week away: the resident is told some programs get it only then.
    assert result.notices == [NOTICES["address_effective_later"]]


def test_a_move_that_already_happened_has_no_notice(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["effective_date"] = TODAY.isoformat()
    assert validate(definition, raw).notices == []


def test_the_wrong_identity_example_is_valid_data(definition: BundleDefinition) -> None:
    """Wrong answers are ServiceOntario's to find, not the form's: the example passes validation."""
    result = validate(definition, example("wrong-identity"))
    assert result.data["identity"]["document_last4"] == "RK91"


@pytest.mark.parametrize(
    ("effective", "accepted"),
    [
        ("2025-11-23", True),  # exactly 12 months back
        ("2025-11-22", False),
        ("2027-05-23", True),  # exactly 6 months ahead
        ("2027-05-24", False),
        ("2026-11-23", True),
    ],
)
def test_the_effective_date_lies_within_12_months_back_and_6_ahead(
    definition: BundleDefinition, effective: str, accepted: bool
) -> None:
    raw = example("complete")
    raw["effective_date"] = effective
    if accepted:
        validate(definition, raw)
    else:
        assert errors_of(definition, raw) == {("effective_date", "effective_date_out_of_window")}


def test_a_date_that_is_not_a_date_gets_the_date_message(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["effective_date"] = "next tuesday"
    assert errors_of(definition, raw) == {("effective_date", "date_from_datetime_parsing")}


def test_a_move_out_of_ontario_is_refused_by_the_bundle_rule(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["new_address"] = {
        "street": "1 rue Exemple",
        "municipality": "Gatineau",
        "province": "QC",
        "postal_code": "J8X 1A1",
    }
    assert errors_of(definition, raw) == {("new_address.province", "move_outside_ontario")}
    rule = next(r for r in definition.submission_rules if r.code == "move_outside_ontario")
    assert "Ontario" in rule.message.en
    assert "Ontario" in rule.message.fr


def test_cra_and_service_canada_need_the_sin(definition: BundleDefinition) -> None:
    raw = example("complete")
    del raw["resident"]["sin"]
    assert errors_of(definition, raw) == {("resident.sin", "sin_required_for_cra_address")}

    raw["consents"]["cra_address"] = False
    assert errors_of(definition, raw) == {("resident.sin", "sin_required_for_service_canada_address")}

    raw["consents"]["service_canada_address"] = False
    validate(definition, raw)


def test_the_licence_and_health_card_need_their_numbers(definition: BundleDefinition) -> None:
    raw = example("complete")
    del raw["resident"]["driver_licence_number"]
    assert errors_of(definition, raw) == {
        ("resident.driver_licence_number", "driver_licence_required_for_mto")
    }

    raw = example("complete")
    del raw["resident"]["health_number"]
    assert errors_of(definition, raw) == {("resident.health_number", "health_number_required_for_ohip")}


def test_serviceontario_needs_one_number_to_find_the_file(definition: BundleDefinition) -> None:
    raw = example("complete")
    for key in ("driver_licence_number", "health_number"):
        del raw["resident"][key]
    raw["consents"].update(mto_address=False, ohip_address=False)
    assert errors_of(definition, raw) == {("resident", "identity_number_required")}


def test_the_new_address_must_differ_from_the_old(definition: BundleDefinition) -> None:
    raw = example("complete")
    # Same place, typed differently: still the same address.
    raw["new_address"] = {
        "street": "250  example CRESCENT",
        "municipality": "ottawa",
        "province": "on",
        "postal_code": "k2p1l4",
    }
    assert errors_of(definition, raw) == {("new_address", "new_address_same_as_old")}


@pytest.mark.parametrize(
    ("path", "value", "code"),
    [
        (("resident", "driver_licence_number"), "12345-67890-12345", "driver_licence_format"),
        (("resident", "driver_licence_number"), "T6512-34568-8041", "driver_licence_format"),
        (("identity", "document_last4"), "48210", "document_last4_format"),
        (("identity", "document_last4"), "48-1", "document_last4_format"),
        (("identity", "document_type"), "library_card", "literal_error"),
        (("identity", "old_postal_code"), "K2P 1L", "postal_code_format"),
        (("resident", "health_number"), "4532017889", "health_number_checksum"),
        (("new_address", "postal_code"), "H2X 1Y4", "postal_code_province_mismatch"),
    ],
)
def test_each_field_gets_its_own_specific_error(
    definition: BundleDefinition, path: tuple[str, str], value: str, code: str
) -> None:
    raw = example("complete")
    raw[path[0]][path[1]] = value
    assert (".".join(path), code) in errors_of(definition, raw)


def test_licence_numbers_and_document_characters_are_normalised(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["resident"]["driver_licence_number"] = "t6512 34568 80412"
    raw["identity"]["document_last4"] = " pa7x "
    result = validate(definition, raw)
    assert result.data["resident"]["driver_licence_number"] == "T65123456880412"
    assert result.data["identity"]["document_last4"] == "PA7X"


def test_errors_are_bilingual_and_never_repeat_what_was_typed(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["resident"]["sin"] = "135 792 464"  # wrong check digit
    raw["identity"]["document_last4"] = "48211"
    raw["effective_date"] = "2020-01-01"
    raw["new_address"]["province"] = "QC"
    with pytest.raises(SubmissionInvalid) as caught:
        validate(definition, raw)
    errors = caught.value.errors
    assert {e.code for e in errors} >= {
        "sin_checksum",
        "document_last4_format",
        "effective_date_out_of_window",
    }
    for error in errors:
        assert error.message.en and error.message.fr and error.message.en != error.message.fr
    shown = json.dumps([e.model_dump() for e in errors]) + str(caught.value)
    for typed in ("135 792 464", "135792464", "48211", "Tremblay", "2020-01-01"):
        assert typed not in shown


# --- the plan: who receives what -------------------------------------------------------------------


def plan_of(definition: BundleDefinition, raw: dict[str, Any]) -> dict[str, Any]:
    result = validate(definition, raw)
    return {step.id: step for step in resolve_plan(definition, result.data, result.consents).steps}


def test_every_program_follows_the_identity_check_and_can_be_rolled_back(
    definition: BundleDefinition,
) -> None:
    steps = plan_of(definition, example("complete"))
    assert steps["identity_check"].pivot
    assert not steps["identity_check"].compensable
    for step_id, step in steps.items():
        if step_id != "identity_check":
            assert step.needs == ("identity_check",)
            assert step.compensable, step_id
            # A required program's refusal undoes the others, even after the identity check.
            assert step.failure_rolls_back == (not step.optional), step_id
    assert {s for s, step in steps.items() if step.optional} == {"elections_canada", "municipality"}


def test_each_program_receives_only_what_it_needs(definition: BundleDefinition) -> None:
    steps = plan_of(definition, example("complete"))
    identity = steps["identity_check"].payload
    assert identity == {
        "resident": {
            "date_of_birth": "1988-04-12",
            "health_number": "4532017888",
            "driver_licence_number": "T65123456880412",
        },
        "identity": {
            "document_type": "citizenship_certificate",
            "document_last4": "4821",
            "old_postal_code": "K2P 1L4",
        },
    }
    numbers = {"sin", "health_number", "driver_licence_number"}
    expected_numbers = {
        "cra": {"sin"},
        "service_canada": {"sin"},
        "elections_canada": set(),
        "driver_licence": {"driver_licence_number"},
        "health_card": {"health_number"},
        "municipality": set(),
    }
    for step_id, wanted in expected_numbers.items():
        payload = steps[step_id].payload
        assert numbers & set(payload["resident"]) == wanted, step_id
        # Every address step carries the old address: it is what a rollback puts back.
        assert {"old_address", "new_address", "effective_date"} <= set(payload), step_id
        assert "identity" not in payload, step_id
    assert "date_of_birth" not in steps["municipality"].payload["resident"]
    assert steps["municipality"].payload["contact"] == {
        "email": "amelie.tremblay@example.ca",
        "phone": "+16135550142",
    }


@pytest.mark.parametrize(
    ("municipality", "postal_code", "system"),
    [
        ("Ottawa", "K1N 5T5", "ottawa-revenue"),
        ("Kanata", "K2K 2X3", "ottawa-revenue"),
        ("  orléans ", "K1C 1A1", "ottawa-revenue"),
        ("Toronto", "M5V 2T6", "toronto-revenue"),
        ("Scarborough", "M1P 2L7", "toronto-revenue"),
    ],
)
def test_the_municipality_of_the_new_address_receives_the_change(
    definition: BundleDefinition, municipality: str, postal_code: str, system: str
) -> None:
    raw = example("complete")
    raw["new_address"].update(municipality=municipality, postal_code=postal_code)
    step = plan_of(definition, raw)["municipality"]
    assert step.system == system
    assert step.skip is None
    city = "Ottawa" if system == "ottawa-revenue" else "Toronto"
    assert city in step.organization.en
    assert city in step.organization.fr


def test_a_municipality_not_connected_is_skipped_with_guidance(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["new_address"].update(municipality="Hamilton", postal_code="L8P 4R5")
    step = plan_of(definition, raw)["municipality"]
    assert step.skip is SkipReason.NO_VARIANT
    assert step.payload == {}
    assert step.skip_message is not None
    assert "municipality" in step.skip_message.en
    assert "municipalité" in step.skip_message.fr


def test_a_program_without_consent_is_skipped_and_gets_nothing(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["consents"]["elections_canada"] = False
    step = plan_of(definition, raw)["elections_canada"]
    assert step.skip is SkipReason.NO_CONSENT
    assert step.payload == {}
    assert step.skip_message is not None


def test_effective_dates_hold_each_program_until_it_takes_the_change(definition: BundleDefinition) -> None:
    steps = plan_of(definition, example("complete"))  # effective 2026-11-30
    at = {step_id: step.not_before for step_id, step in steps.items()}
    day = datetime.combine(date(2026, 11, 30), time(0), TORONTO)
    # ServiceOntario and the register take the change from its day; CRA 6 months, the others a month ahead.
    assert at["driver_licence"] == at["health_card"] == at["elections_canada"] == day
    assert at["cra"] == datetime.combine(date(2026, 5, 30), time(0), TORONTO)
    assert (
        at["service_canada"] == at["municipality"] == datetime.combine(date(2026, 10, 30), time(0), TORONTO)
    )
    assert at["identity_check"] is None


def test_the_examples_are_left_untouched_by_validation(definition: BundleDefinition) -> None:
    for name in ("complete", "wrong-identity"):
        raw = example(name)
        before = copy.deepcopy(raw)
        validate(definition, raw)
        assert raw == before


# --- the definition, its adapters and the simulated systems agree ------------------------------------


def test_every_field_a_step_sends_is_taken_by_its_adapter(definition: BundleDefinition) -> None:
    """A step that sends more than its system takes breaks data minimisation: catch the drift."""
    result = validate(definition, example("complete"))
    for step in definition.steps:
        payload = project(result.data, step.fields)
        for adapter in {step.adapter, *(variant.adapter for variant in step.variants)}:
            adapter_type = ADAPTER_TYPES[adapter]
            assert issubclass(adapter_type, JsonRestAdapter), adapter
            mapped, unused = adapter_type.field_map.apply(payload)
            assert unused == [], (step.id, adapter)
            assert mapped, (step.id, adapter)


def test_each_simulated_system_takes_a_change_when_the_engine_sends_it(definition: BundleDefinition) -> None:
    """The sandbox refuses dates by the same months_ahead the definition waits for."""
    books = {spec.id: spec.behaviour() for spec in ADDRESS_SYSTEMS if spec.behaviour is not None}
    for step in definition.steps:
        for adapter in {step.adapter, *(variant.adapter for variant in step.variants)}:
            book = books[adapter]
            if step.effective_date is None:
                assert not isinstance(book, AddressBook), adapter
                continue
            assert isinstance(book, AddressBook), adapter
            assert book.rule.months_ahead == step.effective_date.months_ahead, adapter
