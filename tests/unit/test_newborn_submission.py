"""The `newborn/v1` schema and `validate_submission`, driven by the example files."""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.fees import CERTIFICATE_FEES_CENTS, certificate_fee_cents
from bundles.messages import NOTICES, message_for
from bundles.models import BundleDefinition
from bundles.submissions import (
    SUBMISSION_SCHEMAS,
    FieldError,
    SubmissionInvalid,
    ValidatedSubmission,
    field_paths,
    validate_submission,
)
from bundles.submissions.newborn import NewbornSubmission
from bundles.validators import toronto_today

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "newborn-on"
# The examples' child was born on 2026-11-10; pin "today" so the 12-month rule stays put.
TODAY = date(2026, 11, 23)


@pytest.fixture(scope="module")
def definition() -> BundleDefinition:
    return Catalogue.load(known_adapters=KNOWN_ADAPTERS).get("newborn-on")


def example(name: str) -> dict[str, Any]:
    content = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    assert content["bundle_id"] == "newborn-on"
    submission: dict[str, Any] = content["submission"]
    return submission


def errors_of(
    definition: BundleDefinition, raw: dict[str, Any], *, today: date = TODAY
) -> set[tuple[str, str]]:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(definition, raw, today=today)
    return {(error.path, error.code) for error in caught.value.errors}


# --- the example files -------------------------------------------------------------------


def test_complete_example_is_accepted_and_normalised(definition: BundleDefinition) -> None:
    result = validate_submission(definition, example("complete"), today=TODAY)
    assert isinstance(result, ValidatedSubmission)
    assert result.submission_schema == "newborn/v1"
    assert result.consents == {
        "certificate_order": True,
        "sin_application": True,
        "ccb_aba": True,
        "resp_referral": True,
    }
    parent = result.data["birth_parent"]
    assert parent["sin"] == "123456782"
    assert parent["health_number"] == "0987654324AB"
    assert parent["phone"] == "+16135550123"
    assert parent["mailing_address"]["postal_code"] == "K1A 0B1"
    assert result.data["child"]["date_of_birth"] == "2026-11-10"
    assert result.data["child"]["time_of_birth"] == "04:32:00"
    assert result.data["child"]["given_names"] == "Zoë-Chloé"
    assert "consents" not in result.data
    assert result.notices == []


def test_no_consents_example_is_accepted_without_sin_or_certificate(definition: BundleDefinition) -> None:
    result = validate_submission(definition, example("no-consents"), today=TODAY)
    assert not any(result.consents.values())
    assert "sin" not in result.data["birth_parent"]
    assert "certificate" not in result.data
    assert result.data["language"] == "fr"


def test_temporary_resident_example_is_accepted_with_a_notice(definition: BundleDefinition) -> None:
    result = validate_submission(definition, example("not-eligible-for-sin"), today=TODAY)
    assert result.data["birth_parent"]["status_in_canada"] == "temporary_resident"
    assert result.notices == [NOTICES["temporary_sin"]]


def test_bad_data_example_reports_every_problem_at_its_field(definition: BundleDefinition) -> None:
    assert errors_of(definition, example("bad-data")) == {
        ("child.given_names", "name_characters"),
        ("child.sex", "literal_error"),
        ("child.date_of_birth", "date_in_future"),
        ("child.place_of_birth.province", "birth_outside_jurisdiction"),
        ("birth_parent.sin", "sin_checksum"),
        ("birth_parent.health_number", "health_number_format"),
        ("birth_parent.mailing_address.postal_code", "postal_code_province_mismatch"),
        ("birth_parent.email", "email_format"),
        ("birth_parent.phone", "phone_format"),
        ("consents.lottery", "unknown_consent_purpose"),
    }


def test_errors_carry_bilingual_messages_and_never_the_submitted_values(definition: BundleDefinition) -> None:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(definition, example("bad-data"), today=TODAY)
    by_path = {error.path: error for error in caught.value.errors}
    assert by_path["birth_parent.sin"].message == message_for("sin_checksum")
    assert by_path["child.place_of_birth.province"].message == definition.submission_rules[0].message
    everything = str(caught.value) + json.dumps([e.model_dump() for e in caught.value.errors])
    for secret in ("123 456 789", "123456789", "12345AB", "marie-eve.example.ca", "555-0147", "Zoë2"):
        assert secret not in everything


def test_the_schema_alone_hides_input_in_its_error_text() -> None:
    raw = example("complete")
    raw["birth_parent"]["sin"] = "123 456 789"
    with pytest.raises(ValidationError) as caught:
        NewbornSubmission.model_validate(raw, context={"today": TODAY})
    assert "123 456 789" not in str(caught.value)


# --- dates -------------------------------------------------------------------------------


def test_more_than_thirty_days_after_birth_is_accepted_but_late(definition: BundleDefinition) -> None:
    result = validate_submission(definition, example("complete"), today=date(2026, 12, 11))
    assert result.notices == [NOTICES["late_registration"]]


def test_more_than_twelve_months_after_birth_must_go_by_mail(definition: BundleDefinition) -> None:
    errors = errors_of(definition, example("complete"), today=date(2027, 11, 11))
    assert errors == {("child.date_of_birth", "birth_too_old_for_online")}
    assert "mail" in message_for("birth_too_old_for_online").en
    assert "poste" in message_for("birth_too_old_for_online").fr


def test_without_a_pinned_date_today_is_torontos(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["child"]["date_of_birth"] = toronto_today().isoformat()
    assert (
        validate_submission(definition, raw).data["child"]["date_of_birth"] == raw["child"]["date_of_birth"]
    )
    raw["child"]["date_of_birth"] = (toronto_today() + timedelta(days=1)).isoformat()
    assert ("child.date_of_birth", "date_in_future") in errors_of(definition, raw, today=toronto_today())


# --- cross-field rules -------------------------------------------------------------------


def test_ccb_consent_requires_the_birth_parents_sin(definition: BundleDefinition) -> None:
    raw = example("complete")
    del raw["birth_parent"]["sin"]
    assert errors_of(definition, raw) == {("birth_parent.sin", "sin_required_for_ccb")}
    raw["consents"]["ccb_aba"] = False
    validate_submission(definition, raw, today=TODAY)


def test_certificate_and_resp_consents_require_their_details(definition: BundleDefinition) -> None:
    raw = example("complete")
    del raw["certificate"]
    del raw["resp_referral"]
    assert errors_of(definition, raw) == {
        ("certificate", "certificate_required"),
        ("resp_referral", "resp_referral_required"),
    }


def test_parents_must_be_born_before_the_child(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["birth_parent"]["date_of_birth"] = "2026-11-10"
    raw["other_parent"]["date_of_birth"] = "2026-11-11"
    assert errors_of(definition, raw) == {
        ("birth_parent.date_of_birth", "parent_born_after_child"),
        ("other_parent.date_of_birth", "parent_born_after_child"),
    }


@pytest.mark.parametrize(
    ("plurality", "birth_order", "expected"),
    [
        (2, None, {("child.birth_order", "birth_order_required")}),
        (2, 3, {("child.birth_order", "birth_order_out_of_range")}),
        (1, 2, {("child.birth_order", "birth_order_out_of_range")}),
        (9, 1, {("child.plurality", "less_than_equal")}),
        (0, None, {("child.plurality", "greater_than_equal")}),
    ],
)
def test_birth_order_fits_the_plurality(
    definition: BundleDefinition, plurality: int, birth_order: int | None, expected: set[tuple[str, str]]
) -> None:
    raw = example("complete")
    raw["child"]["plurality"] = plurality
    if birth_order is not None:
        raw["child"]["birth_order"] = birth_order
    assert errors_of(definition, raw) == expected


def test_twins_with_a_birth_order_are_accepted(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["child"].update(plurality=2, birth_order=2)
    assert validate_submission(definition, raw, today=TODAY).data["child"]["birth_order"] == 2


def test_a_birth_outside_ontario_is_refused_by_the_bundle_rule(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["child"]["place_of_birth"]["province"] = "mb"
    assert errors_of(definition, raw) == {("child.place_of_birth.province", "birth_outside_jurisdiction")}
    # The schema itself serves any province: the rule belongs to the newborn-on bundle.
    NewbornSubmission.model_validate(raw, context={"today": TODAY})


# --- structure ---------------------------------------------------------------------------


def test_unknown_and_missing_fields_are_reported_by_path(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["birth_parent"]["mailing_address"]["country"] = "CA"
    del raw["child"]["surname"]
    raw["certificate"]["copies"] = 6
    raw["consents"]["ccb_aba"] = "maybe"
    assert errors_of(definition, raw) == {
        ("birth_parent.mailing_address.country", "extra_forbidden"),
        ("child.surname", "missing"),
        ("certificate.copies", "less_than_equal"),
        ("consents.ccb_aba", "bool_parsing"),
    }


def test_a_non_object_submission_is_one_error_at_the_form(definition: BundleDefinition) -> None:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(definition, [], today=TODAY)  # type: ignore[arg-type]  # what a bad client sends
    assert [(e.path, e.code) for e in caught.value.errors] == [("", "model_type")]


def test_a_single_name_is_recorded_as_the_surname(definition: BundleDefinition) -> None:
    raw = example("no-consents")
    del raw["child"]["given_names"]
    del raw["birth_parent"]["given_names"]
    result = validate_submission(definition, raw, today=TODAY)
    assert "given_names" not in result.data["child"]


def test_the_validated_model_is_frozen() -> None:
    model = NewbornSubmission.model_validate(example("complete"), context={"today": TODAY})
    with pytest.raises(ValidationError):
        model.language = "fr"  # type: ignore[misc]  # the point of the test


def test_field_errors_serialise_for_the_api() -> None:
    error = FieldError(path="birth_parent.sin", code="sin_checksum", message=message_for("sin_checksum"))
    assert error.model_dump()["message"]["fr"].startswith("Entrez un numéro")


def test_field_paths_include_nested_fields_and_their_sections() -> None:
    paths = field_paths(NewbornSubmission)
    assert {
        "language",
        "consents",
        "birth_parent",
        "birth_parent.mailing_address",
        "birth_parent.mailing_address.postal_code",
        "child.place_of_birth.province",
        "other_parent.place_of_birth.province_or_country",
        "certificate.copies",
        "resp_referral.promoter",
    } <= paths
    assert "consents.ccb_aba" not in paths
    assert SUBMISSION_SCHEMAS["newborn/v1"] is NewbornSubmission


def test_the_json_schema_is_available_for_forms() -> None:
    schema = NewbornSubmission.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"language", "child", "birth_parent"}
    address = schema["$defs"]["MailingAddress"]["properties"]
    assert "ON" in address["province"]["enum"]


def test_an_unknown_schema_is_a_lookup_error(definition: BundleDefinition) -> None:
    other = definition.model_copy(update={"submission_schema": "newborn/v9"})
    with pytest.raises(LookupError):
        validate_submission(other, example("complete"), today=TODAY)


def test_the_examples_are_left_untouched_by_validation(definition: BundleDefinition) -> None:
    raw = example("complete")
    before = copy.deepcopy(raw)
    validate_submission(definition, raw, today=TODAY)
    assert raw == before


# --- fees --------------------------------------------------------------------------------


def test_certificate_fees_are_per_copy_in_cents() -> None:
    assert CERTIFICATE_FEES_CENTS == {"short": 2500, "long": 3500}
    assert certificate_fee_cents("long", 2) == 7000
    assert certificate_fee_cents("short", 1) == 2500
    with pytest.raises(ValueError, match="at least one copy"):
        certificate_fee_cents("short", 0)


def test_keys_the_sender_chose_never_come_back_in_error_paths(definition: BundleDefinition) -> None:
    raw = example("complete")
    raw["child"]["Marie-Ève Bélanger"] = "x"  # a name used as a key
    raw["birth_parent"]["123456782"] = "x"  # a SIN used as a key
    raw["consents"]["046 454 286"] = True
    assert errors_of(definition, raw) == {
        ("child.?", "extra_forbidden"),
        ("birth_parent.?", "extra_forbidden"),
        ("consents.?", "unknown_consent_purpose"),
    }
