"""The catalogue loader: the newborn-on definition, and a specific message for each broken definition."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import DEFAULT_DIRECTORY, Catalogue, DefinitionError, check_definition, load_definition
from bundles.models import BundleDefinition, Level
from bundles.submissions.newborn import NewbornSubmission
from bundles.submissions.registry import SUBMISSION_SCHEMAS

NEWBORN_FILE = DEFAULT_DIRECTORY / "newborn-on.yaml"
KNOWN = ", ".join(sorted(KNOWN_ADAPTERS))

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def newborn() -> BundleDefinition:
    return load_definition(NEWBORN_FILE, known_adapters=KNOWN_ADAPTERS)


def base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(NEWBORN_FILE.read_text(encoding="utf-8"))
    return copy.deepcopy(data)


def step_of(data: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(step for step in data["steps"] if step["id"] == step_id)


def write(directory: Path, data: Any, name: str = "newborn-on.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(path, known_adapters=KNOWN_ADAPTERS)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# --- the real catalogue ------------------------------------------------------------------


def test_the_packaged_catalogue_loads() -> None:
    catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
    assert "newborn-on" in catalogue
    assert [d.id for d in catalogue.all()] == sorted(d.id for d in catalogue.all())
    assert catalogue.schema_for("newborn-on") is NewbornSubmission
    assert catalogue.sources["newborn-on"] == NEWBORN_FILE
    with pytest.raises(KeyError):
        catalogue.get("no-such-bundle")


def test_newborn_on_is_the_ontario_five_in_one(newborn: BundleDefinition) -> None:
    assert (newborn.version, newborn.jurisdiction, newborn.submission_schema) == (1, "CA-ON", "newborn/v1")
    assert [(s.id, s.adapter, s.level) for s in newborn.steps] == [
        ("birth_registration", "on-registrar-births", Level.PROVINCIAL),
        ("birth_certificate", "on-certificates", Level.PROVINCIAL),
        ("social_insurance_number", "esdc-sin", Level.FEDERAL),
        ("canada_child_benefit", "cra-aba", Level.FEDERAL),
        ("education_savings_referral", "resp-referral", Level.FEDERAL),
    ]
    assert set(newborn.consent_purposes) == {
        "certificate_order",
        "sin_application",
        "ccb_aba",
        "resp_referral",
    }


def test_registration_is_the_pivot_and_needs_no_consent(newborn: BundleDefinition) -> None:
    registration = newborn.step("birth_registration")
    assert registration.pivot
    assert registration.consent is None
    assert [s.id for s in newborn.steps if s.pivot] == ["birth_registration"]
    assert {"birth_parent.marital_status", "birth_parent.health_number"} <= set(registration.fields)
    assert "birth_parent.sin" not in registration.fields


def test_the_certificate_is_ordered_with_registration_and_can_be_refunded(newborn: BundleDefinition) -> None:
    certificate = newborn.step("birth_certificate")
    assert certificate.optional
    assert certificate.needs == ()
    assert certificate.consent == "certificate_order"
    assert certificate.compensation is not None
    assert "refund" in certificate.compensation.description.en
    assert certificate.without_consent is not None
    assert "ServiceOntario" in certificate.without_consent.en


def test_sin_needs_registration_and_an_eligible_parent(newborn: BundleDefinition) -> None:
    sin = newborn.step("social_insurance_number")
    assert sin.needs == sin.references == ("birth_registration",)
    assert sin.consent == "sin_application"
    assert sin.eligibility is not None
    assert sin.eligibility.field == "birth_parent.status_in_canada"
    assert sin.eligibility.one_of == ("citizen", "permanent_resident")
    assert "Service Canada" in sin.eligibility.guidance.en
    assert sin.on_done is not None
    assert "10 business days" in sin.on_done.en


def test_ccb_receives_exactly_what_cra_takes_and_never_marital_status(newborn: BundleDefinition) -> None:
    ccb = newborn.step("canada_child_benefit")
    assert set(ccb.fields) == {
        "birth_parent.given_names",
        "birth_parent.surname",
        "birth_parent.date_of_birth",
        "birth_parent.place_of_birth",
        "birth_parent.sin",
        "birth_parent.mailing_address",
        "child.given_names",
        "child.surname",
        "child.date_of_birth",
        "child.place_of_birth",
        "child.sex",
    }
    assert not any("marital" in path for path in ccb.fields)
    assert ccb.references == ("birth_registration",)
    assert ccb.consent == "ccb_aba"
    assert ccb.without_consent is not None
    assert "RC66" in ccb.without_consent.en
    assert ccb.on_done is not None
    assert "not apply again" in ccb.on_done.en


def test_the_education_savings_referral_is_optional_and_minimal(newborn: BundleDefinition) -> None:
    resp = newborn.step("education_savings_referral")
    assert resp.optional
    assert resp.consent == "resp_referral"
    assert "resp_referral.promoter" in resp.fields
    assert not any(path.endswith(("sin", "health_number", "marital_status")) for path in resp.fields)
    assert "Employment and Social Development Canada" in resp.organization.en


def test_every_step_has_bilingual_texts_and_bounded_timing(newborn: BundleDefinition) -> None:
    for step in newborn.steps:
        assert step.retry.initial_interval == timedelta(seconds=1)
        assert step.retry.maximum_interval == timedelta(seconds=60)
        assert step.retry.maximum_attempts == 10
        assert timedelta(seconds=10) <= step.call_timeout <= timedelta(seconds=30)
        assert step.deadline >= timedelta(hours=1)
        assert step.on_done is not None
        if step.consent is not None:
            assert step.without_consent is not None
    french = " ".join(s.organization.fr for s in newborn.steps)
    for name in (
        "Bureau du registraire général de l'état civil",
        "Emploi et Développement social Canada",
        "Agence du revenu du Canada",
    ):
        assert name in french


def test_consent_notices_say_what_goes_to_whom(newborn: BundleDefinition) -> None:
    ccb = newborn.consent_purposes["ccb_aba"].notice
    assert "Canada Revenue Agency" in ccb.en
    assert "Social Insurance Number" in ccb.en
    assert "marital status is not sent" in ccb.en
    assert "état matrimonial n'est pas transmis" in ccb.fr


def test_the_packaged_definition_passes_the_cross_step_checks(newborn: BundleDefinition) -> None:
    assert check_definition(newborn, known_adapters=KNOWN_ADAPTERS) == []


# --- broken definitions: one specific message each ---------------------------------------


def test_yaml_syntax_error_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: newborn-on\nsteps: [\n  - id: x\n", encoding="utf-8")
    [problem] = problems_of(path)
    assert problem.startswith("broken.yaml: invalid YAML at line ")


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(NEWBORN_FILE.read_text(encoding="utf-8") + "\nversion: 2\n", encoding="utf-8")
    [problem] = problems_of(path)
    assert problem.startswith("dup.yaml: invalid YAML at line ")
    assert problem.endswith("duplicate key 'version'")


def test_a_top_level_list_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, ["id", "steps"]))
    assert problem.startswith("newborn-on.yaml: expected a mapping")


def test_yaml_1_1_booleans_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "newborn-on.yaml"
    path.write_text(
        NEWBORN_FILE.read_text(encoding="utf-8").replace('one_of: ["ON"]', "one_of: [ON]"), "utf-8"
    )
    assert load_definition(path, known_adapters=KNOWN_ADAPTERS).submission_rules[0].one_of == ("ON",)


def _set_attempts(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["retry"] = {"maximum_attempts": 1000}


def _drop_step_id(data: dict[str, Any]) -> None:
    del data["steps"][1]["id"]


def _duplicate_step(data: dict[str, Any]) -> None:
    data["steps"].append(copy.deepcopy(step_of(data, "canada_child_benefit")))


def _misspell_need(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["needs"] = ["registraton"]
    step_of(data, "canada_child_benefit")["references"] = []


def _cycle(data: dict[str, Any]) -> None:
    step_of(data, "birth_registration")["needs"] = ["canada_child_benefit"]


def _unknown_adapter(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["adapter"] = "cra-legacy"


def _unknown_field(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["fields"].append("birth_parent.marital_statu")


def _unknown_consent(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["consent"] = "ccb"


def _unknown_schema(data: dict[str, Any]) -> None:
    data["submission_schema"] = "newborn/v9"


def _reference_not_needed(data: dict[str, Any]) -> None:
    step_of(data, "education_savings_referral")["references"] = ["social_insurance_number"]


def _two_pivots(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["pivot"] = True


def _irreversible_before_pivot(data: dict[str, Any]) -> None:
    step_of(data, "canada_child_benefit")["needs"] = []
    step_of(data, "canada_child_benefit")["references"] = []


def _uncompensated_certificate(data: dict[str, Any]) -> None:
    del step_of(data, "birth_certificate")["compensation"]


def _unknown_eligibility_field(data: dict[str, Any]) -> None:
    step_of(data, "social_insurance_number")["eligibility"]["field"] = "birth_parent.citizenship"


def _unused_purpose(data: dict[str, Any]) -> None:
    data["consent_purposes"]["newsletter"] = copy.deepcopy(data["consent_purposes"]["resp_referral"])


def _optional_pivot(data: dict[str, Any]) -> None:
    step_of(data, "birth_registration")["optional"] = True


def _unknown_rule_field(data: dict[str, Any]) -> None:
    data["submission_rules"][0]["field"] = "child.birth_province"


def _typo_in_step_key(data: dict[str, Any]) -> None:
    step_of(data, "birth_certificate")["optionnal"] = True


CASES: list[tuple[str, Mutation, str]] = [
    (
        "pydantic error with location",
        _set_attempts,
        "newborn-on.yaml: step 'canada_child_benefit': retry.maximum_attempts: "
        "Input should be less than or equal to 100",
    ),
    ("step without an id", _drop_step_id, "newborn-on.yaml: step #2: id: Field required"),
    (
        "unknown key in a step",
        _typo_in_step_key,
        "newborn-on.yaml: step 'birth_certificate': optionnal: Extra inputs are not permitted",
    ),
    ("duplicate step id", _duplicate_step, "newborn-on.yaml: step 'canada_child_benefit': duplicate step id"),
    (
        "unknown need",
        _misspell_need,
        "newborn-on.yaml: step 'canada_child_benefit': needs unknown step 'registraton'",
    ),
    (
        "cycle",
        _cycle,
        "newborn-on.yaml: step 'birth_registration': needs form a cycle: "
        "birth_registration -> canada_child_benefit -> birth_registration",
    ),
    (
        "unknown adapter",
        _unknown_adapter,
        f"newborn-on.yaml: step 'canada_child_benefit': unknown adapter 'cra-legacy' (known: {KNOWN})",
    ),
    (
        "field not in schema",
        _unknown_field,
        "newborn-on.yaml: step 'canada_child_benefit': field 'birth_parent.marital_statu' "
        "is not in submission schema 'newborn/v1'",
    ),
    (
        "unknown consent purpose",
        _unknown_consent,
        "newborn-on.yaml: step 'canada_child_benefit': consent purpose 'ccb' "
        "is not declared in consent_purposes",
    ),
    (
        "unknown submission schema",
        _unknown_schema,
        "newborn-on.yaml: unknown submission schema 'newborn/v9' "
        f"(known: {', '.join(sorted(SUBMISSION_SCHEMAS))})",
    ),
    (
        "reference outside the needs",
        _reference_not_needed,
        "newborn-on.yaml: step 'education_savings_referral': references 'social_insurance_number', "
        "which is not among the steps it needs (directly or not)",
    ),
    (
        "two pivots",
        _two_pivots,
        "newborn-on.yaml: more than one pivot step ('birth_registration', 'canada_child_benefit'); "
        "a bundle has at most one",
    ),
    (
        "irreversible step before the pivot",
        _irreversible_before_pivot,
        "newborn-on.yaml: step 'canada_child_benefit': neither needs the pivot 'birth_registration' "
        "(directly or not) nor has a compensation; a step that may run before the pivot must be reversible",
    ),
    (
        "uncompensated step beside the pivot",
        _uncompensated_certificate,
        "newborn-on.yaml: step 'birth_certificate': neither needs the pivot 'birth_registration' "
        "(directly or not) nor has a compensation; a step that may run before the pivot must be reversible",
    ),
    (
        "eligibility field not in schema",
        _unknown_eligibility_field,
        "newborn-on.yaml: step 'social_insurance_number': eligibility field 'birth_parent.citizenship' "
        "is not in submission schema 'newborn/v1'",
    ),
    (
        "declared purpose that no step uses",
        _unused_purpose,
        "newborn-on.yaml: consent purpose 'newsletter' is declared but no step uses it",
    ),
    (
        "optional pivot",
        _optional_pivot,
        "newborn-on.yaml: step 'birth_registration': the pivot step cannot be optional",
    ),
    (
        "submission rule on an unknown field",
        _unknown_rule_field,
        "newborn-on.yaml: submission rule: field 'child.birth_province' "
        "is not in submission schema 'newborn/v1'",
    ),
]


# --- the newer definition features: variants, effective dates, date windows, time zones ------

GUIDANCE = {"en": "Contact the program directly.", "fr": "Communiquez directement avec le programme."}


def _variants(*variants: tuple[str, str, list[str]], no_variant: bool = True) -> Mutation:
    """The RESP referral goes to a promoter's own intake, chosen by the promoter's name."""

    def mutate(data: dict[str, Any]) -> None:
        step = step_of(data, "education_savings_referral")
        step["variants"] = [
            {
                "when": {"field": field, "one_of": values},
                "adapter": adapter,
                "organization": {"en": f"Promoter {adapter}", "fr": f"Promoteur {adapter}"},
            }
            for adapter, field, values in variants
        ]
        if no_variant:
            step["no_variant"] = GUIDANCE

    return mutate


def _no_variant_without_variants(data: dict[str, Any]) -> None:
    step_of(data, "education_savings_referral")["no_variant"] = GUIDANCE


def _effective_date(field: str, *, in_fields: bool) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        step = step_of(data, "canada_child_benefit")
        step["effective_date"] = {"field": field, "months_ahead": 0}
        if in_fields:
            step["fields"].append(field)

    return mutate


def _date_rule(field: str, window: dict[str, int]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["submission_rules"].append(
            {"field": field, "date_within": window, "code": "too_old", "message": GUIDANCE}
        )

    return mutate


def _timezone(name: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["timezone"] = name

    return mutate


RESP = "newborn-on.yaml: step 'education_savings_referral'"
PROMOTER = "resp_referral.promoter"

CASES += [
    (
        "variant with an unknown adapter",
        _variants(("resp-referral", PROMOTER, ["Fonds A"]), ("resp-fonds-b", PROMOTER, ["Fonds B"])),
        f"{RESP}: variant #2 (resp-fonds-b): unknown adapter 'resp-fonds-b' (known: {KNOWN})",
    ),
    (
        "variant on a field the schema lacks",
        _variants(("resp-referral", "resp_referral.promoter_name", ["Fonds A"])),
        f"{RESP}: variant #1 (resp-referral): field 'resp_referral.promoter_name' "
        "is not in submission schema 'newborn/v1'",
    ),
    (
        "variants that claim the same value",
        _variants(
            ("resp-referral", PROMOTER, ["Fonds A", "Fonds B"]),
            ("on-certificates", PROMOTER, ["fonds b"]),
        ),
        f"{RESP}: variant #2 (on-certificates): value 'fonds b' of 'resp_referral.promoter' is already "
        "chosen by variant #1 (resp-referral); the first match would always win",
    ),
    (
        "variant value with spaces around it",
        _variants(("resp-referral", PROMOTER, ["Fonds A "])),
        f"{RESP}: variant #1 (resp-referral): value 'Fonds A ' has spaces around it",
    ),
    (
        "variants without no_variant guidance",
        _variants(("resp-referral", PROMOTER, ["Fonds A"]), no_variant=False),
        f"{RESP}: has variants but no 'no_variant' guidance for a resident whom no variant covers",
    ),
    (
        "no_variant guidance without variants",
        _no_variant_without_variants,
        f"{RESP}: no_variant guidance is given but the step has no variants",
    ),
    (
        "effective date on a field the schema lacks",
        _effective_date("child.effective_date", in_fields=False),
        "newborn-on.yaml: step 'canada_child_benefit': effective_date field 'child.effective_date' is not "
        "in submission schema 'newborn/v1'",
    ),
    (
        "effective date the step does not receive",
        _effective_date("other_parent.date_of_birth", in_fields=False),
        "newborn-on.yaml: step 'canada_child_benefit': effective_date field 'other_parent.date_of_birth' "
        "is not among the step's fields, so its system would not learn when the change takes effect",
    ),
    (
        "date window on a field the schema lacks",
        _date_rule("child.birth_date", {"months_behind": 12}),
        "newborn-on.yaml: submission rule: field 'child.birth_date' is not in submission schema 'newborn/v1'",
    ),
    (
        "date window that limits nothing",
        _date_rule("child.date_of_birth", {}),
        "newborn-on.yaml: submission rule 'too_old': date_within sets neither months_behind nor "
        "months_ahead, so it limits nothing",
    ),
    (
        "unknown time zone",
        _timezone("America/Ottawa"),
        "newborn-on.yaml: timezone 'America/Ottawa' is not an IANA time zone name such as 'America/Toronto'",
    ),
    (
        "a path where a time zone should be",
        _timezone("../../etc/passwd"),
        "newborn-on.yaml: timezone '../../etc/passwd' is not an IANA time zone name such as "
        "'America/Toronto'",
    ),
]


def test_sound_variants_effective_dates_and_windows_pass(tmp_path: Path) -> None:
    data = base()
    _variants(
        ("resp-referral", PROMOTER, ["Fonds A", "Fonds B"]),
        ("on-certificates", PROMOTER, ["Fonds C"]),
        ("resp-referral", "language", ["fr"]),
    )(data)
    _effective_date("child.date_of_birth", in_fields=False)(data)  # CRA receives it already
    _date_rule("child.date_of_birth", {"months_behind": 12})(data)
    data["timezone"] = "America/Winnipeg"
    data["roll_back_on_failure"] = "always"
    definition = load_definition(write(tmp_path, data), known_adapters=KNOWN_ADAPTERS)
    resp = definition.step("education_savings_referral")
    assert [v.adapter for v in resp.variants] == ["resp-referral", "on-certificates", "resp-referral"]
    assert definition.timezone == "America/Winnipeg"


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES])
def test_each_broken_definition_gives_its_specific_message(
    tmp_path: Path, mutate: Mutation, expected: str
) -> None:
    data = base()
    mutate(data)
    assert problems_of(write(tmp_path, data)) == [expected]


def test_all_problems_of_a_file_are_reported_together(tmp_path: Path) -> None:
    data = base()
    _misspell_need(data)
    _unknown_adapter(data)
    _unknown_field(data)
    _unknown_eligibility_field(data)
    problems = problems_of(write(tmp_path, data))
    assert len(problems) == 4
    assert all(p.startswith("newborn-on.yaml: step '") for p in problems)


def test_a_longer_cycle_is_named_once_in_order(tmp_path: Path) -> None:
    data = base()
    step_of(data, "birth_registration")["needs"] = ["education_savings_referral"]
    step_of(data, "education_savings_referral")["needs"] = ["social_insurance_number"]
    step_of(data, "education_savings_referral")["references"] = ["social_insurance_number"]
    problems = problems_of(write(tmp_path, data))
    cycles = [p for p in problems if "cycle" in p]
    assert cycles == [
        "newborn-on.yaml: step 'birth_registration': needs form a cycle: birth_registration -> "
        "education_savings_referral -> social_insurance_number -> birth_registration"
    ]


def test_duplicate_bundle_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, base(), "a-newborn.yaml")
    write(tmp_path, base(), "b-newborn.yaml")
    with pytest.raises(DefinitionError) as caught:
        Catalogue.load(tmp_path, known_adapters=KNOWN_ADAPTERS)
    assert caught.value.problems == [
        "b-newborn.yaml: bundle id 'newborn-on' is already defined in a-newborn.yaml"
    ]


def test_the_catalogue_reports_the_problems_of_every_file(tmp_path: Path) -> None:
    good = base()
    bad = base()
    bad["id"] = "newborn-on-copy"
    _unknown_adapter(bad)
    write(tmp_path, good, "newborn-on.yaml")
    write(tmp_path, bad, "copy.yml")
    (tmp_path / "notes.txt").write_text("not a definition", encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        Catalogue.load(tmp_path, known_adapters=KNOWN_ADAPTERS)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("copy.yml: step 'canada_child_benefit': unknown adapter")


def test_a_missing_directory_or_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="no such directory"):
        Catalogue.load(tmp_path / "absent", known_adapters=KNOWN_ADAPTERS)
    [problem] = problems_of(tmp_path / "absent.yaml")
    assert problem.startswith("absent.yaml: cannot read the file")


def test_an_empty_directory_is_an_empty_catalogue(tmp_path: Path) -> None:
    assert Catalogue.load(tmp_path, known_adapters=KNOWN_ADAPTERS).all() == []
