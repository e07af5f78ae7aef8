"""Derived bundles (`extends:`): resolved at load time into ordinary definitions, with clear errors."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import DEFAULT_DIRECTORY, Catalogue, DefinitionError, load_definition
from bundles.models import Level
from bundles.plan import definition_digest, resolve_plan

NEWBORN_FILE = DEFAULT_DIRECTORY / "newborn-on.yaml"
OTTAWA_FILE = DEFAULT_DIRECTORY / "newborn-on-ottawa.yaml"
TEXT = {"en": "Some text.", "fr": "Un texte."}


def derived(**changes: Any) -> dict[str, Any]:
    return {
        "extends": "newborn-on",
        "id": "newborn-on-town",
        "version": 1,
        "jurisdiction": "CA-ON-TOWN",
    } | changes


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """A definitions directory holding the packaged `newborn-on`."""
    shutil.copy(NEWBORN_FILE, tmp_path / NEWBORN_FILE.name)
    return tmp_path


def write(directory: Path, data: dict[str, Any], name: str = "newborn-on-town.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(path, known_adapters=KNOWN_ADAPTERS)
    return caught.value.problems


# --- the packaged Ottawa bundle ---------------------------------------------------------------


def test_ottawa_is_newborn_on_plus_a_welcome_call() -> None:
    base = load_definition(NEWBORN_FILE, known_adapters=KNOWN_ADAPTERS)
    ottawa = load_definition(OTTAWA_FILE, known_adapters=KNOWN_ADAPTERS)

    assert (ottawa.id, ottawa.version, ottawa.jurisdiction) == ("newborn-on-ottawa", 1, "CA-ON-OTTAWA")
    assert "Ottawa" in ottawa.title.en and "Ottawa" in ottawa.title.fr
    assert ottawa.steps[:-1] == base.steps
    welcome = ottawa.steps[-1]
    assert (welcome.id, welcome.adapter, welcome.level) == (
        "welcome_baby",
        "ottawa-welcome-baby",
        Level.MUNICIPAL,
    )
    assert welcome.optional and welcome.needs == ("birth_registration",)
    assert set(welcome.fields) == {
        "language",
        "birth_parent.given_names",
        "birth_parent.phone",
        "birth_parent.email",
        "child.date_of_birth",
    }
    assert welcome.consent == "ottawa_welcome_call"
    assert ottawa.consent_purposes == {
        **base.consent_purposes,
        "ottawa_welcome_call": ottawa.consent_purposes["ottawa_welcome_call"],
    }
    # Inherited as they are: what the Ottawa file does not say.
    assert (ottawa.life_event, ottawa.submission_schema, ottawa.submission_rules, ottawa.timezone) == (
        base.life_event,
        base.submission_schema,
        base.submission_rules,
        base.timezone,
    )
    # The digest covers the resolved definition, so a change to the base changes Ottawa's too.
    assert definition_digest(ottawa) != definition_digest(base)


def test_the_packaged_catalogue_serves_both_newborn_bundles() -> None:
    catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
    assert {"newborn-on", "newborn-on-ottawa"} <= set(catalogue.definitions)
    assert catalogue.sources["newborn-on-ottawa"] == OTTAWA_FILE
    assert catalogue.schema_for("newborn-on-ottawa") is catalogue.schema_for("newborn-on")


def test_the_plan_of_a_derived_bundle_is_an_ordinary_plan() -> None:
    ottawa = load_definition(OTTAWA_FILE, known_adapters=KNOWN_ADAPTERS)
    submission = {
        "language": "fr",
        "child": {"given_names": "Élodie", "date_of_birth": "2026-01-31", "sex": "F"},
        "birth_parent": {"given_names": "Marie", "phone": "613-555-0100", "sin": "046 454 286"},
    }
    plan = resolve_plan(ottawa, submission, {"ottawa_welcome_call": True})
    welcome = plan.step("welcome_baby")
    assert (welcome.system, welcome.skip, welcome.before_pivot) == ("ottawa-welcome-baby", None, False)
    assert welcome.payload == {
        "language": "fr",
        "child": {"date_of_birth": "2026-01-31"},
        "birth_parent": {"given_names": "Marie", "phone": "613-555-0100"},
    }
    assert resolve_plan(ottawa, submission, {}).step("welcome_baby").payload == {}


# --- remove, replace, add -----------------------------------------------------------------------


def test_remove_replace_and_add(directory: Path) -> None:
    path = write(
        directory,
        derived(
            remove_steps=["education_savings_referral"],
            replace_steps=[
                {"id": "canada_child_benefit", "deadline": "PT96H", "retry": {"maximum_attempts": 4}},
                {"id": "birth_certificate", "fields": ["language", "certificate.form", "certificate.copies"]},
            ],
            add_submission_rules=[
                {
                    "field": "birth_parent.mailing_address.province",
                    "one_of": ["ON"],
                    "code": "not_resident",
                    "message": TEXT,
                }
            ],
        ),
    )
    base = load_definition(NEWBORN_FILE, known_adapters=KNOWN_ADAPTERS)
    town = load_definition(path, known_adapters=KNOWN_ADAPTERS)

    assert [s.id for s in town.steps] == [s.id for s in base.steps if s.id != "education_savings_referral"]
    # The RESP purpose went with the only step that used it.
    assert set(town.consent_purposes) == set(base.consent_purposes) - {"resp_referral"}
    ccb = town.step("canada_child_benefit")
    assert ccb.deadline == timedelta(hours=96)
    # A section merges key by key: only the attempts changed.
    assert ccb.retry == base.step("canada_child_benefit").retry.model_copy(update={"maximum_attempts": 4})
    assert ccb.fields == base.step("canada_child_benefit").fields
    assert town.step("birth_certificate").fields == ("language", "certificate.form", "certificate.copies")
    assert [r.code for r in town.submission_rules] == ["birth_outside_jurisdiction", "not_resident"]


def test_derived_bundles_chain_in_any_file_order(directory: Path) -> None:
    write(directory, derived(id="a-base-last", extends="newborn-on-town", version=3), "0-first.yaml")
    write(directory, derived(remove_steps=["education_savings_referral"]), "z-last.yaml")
    catalogue = Catalogue.load(directory, known_adapters=KNOWN_ADAPTERS)
    grandchild = catalogue.get("a-base-last")
    assert grandchild.version == 3
    assert "education_savings_referral" not in {s.id for s in grandchild.steps}


def test_a_removed_step_can_come_back_as_a_new_definition(directory: Path) -> None:
    base = load_definition(NEWBORN_FILE, known_adapters=KNOWN_ADAPTERS)
    resp = base.step("education_savings_referral").model_dump(mode="json", exclude_defaults=True)
    resp["deadline"] = "PT240H"
    path = write(directory, derived(remove_steps=["education_savings_referral"], add_steps=[resp]))
    town = load_definition(path, known_adapters=KNOWN_ADAPTERS)
    assert town.step("education_savings_referral").deadline == timedelta(hours=240)
    assert "resp_referral" in town.consent_purposes


# --- errors -----------------------------------------------------------------------------------

ERRORS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "removing a step others need",
        derived(remove_steps=["birth_registration"]),
        [
            "newborn-on-town.yaml: remove_steps: step 'birth_registration' is still needed or referenced by "
            "'social_insurance_number', 'canada_child_benefit', "
            "'education_savings_referral'; remove them too "
            "or replace their needs and references"
        ],
    ),
    (
        "removing an unknown step",
        derived(remove_steps=["resp"]),
        [
            "newborn-on-town.yaml: remove_steps: 'resp' is not a step of 'newborn-on' (its steps: "
            "birth_registration, birth_certificate, social_insurance_number, canada_child_benefit, "
            "education_savings_referral)"
        ],
    ),
    (
        "replacing an unknown step",
        derived(replace_steps=[{"id": "sin", "deadline": "PT1H"}]),
        [
            "newborn-on-town.yaml: replace_steps: step 'sin' is not a step of 'newborn-on' (its steps: "
            "birth_registration, birth_certificate, social_insurance_number, canada_child_benefit, "
            "education_savings_referral)"
        ],
    ),
    (
        "replacing a removed step",
        derived(
            remove_steps=["education_savings_referral"],
            replace_steps=[{"id": "education_savings_referral", "optional": False}],
        ),
        ["newborn-on-town.yaml: replace_steps: step 'education_savings_referral' is also in remove_steps"],
    ),
    (
        "replacing nothing",
        derived(replace_steps=[{"id": "canada_child_benefit"}]),
        [
            "newborn-on-town.yaml: replace_steps: step 'canada_child_benefit' "
            "changes nothing: list the keys to change after its id"
        ],
    ),
    (
        "replacing with a misspelt key",
        derived(replace_steps=[{"id": "canada_child_benefit", "dealine": "PT96H"}]),
        [
            "newborn-on-town.yaml: replace_steps: step 'canada_child_benefit': "
            "dealine: Extra inputs are not permitted"
        ],
    ),
    (
        "adding a step that exists",
        derived(
            add_steps=[
                {
                    "id": "canada_child_benefit",
                    "program": TEXT,
                    "organization": TEXT,
                    "level": "federal",
                    "adapter": "cra-aba",
                    "fields": ["language"],
                    "needs": ["birth_registration"],
                }
            ]
        ),
        [
            "newborn-on-town.yaml: add_steps: step 'canada_child_benefit' is "
            "already a step of 'newborn-on'; change it with replace_steps"
        ],
    ),
    (
        "an added step with an unknown adapter, checked like any step",
        derived(
            add_steps=[
                {
                    "id": "library_card",
                    "program": TEXT,
                    "organization": TEXT,
                    "level": "municipal",
                    "adapter": "town-library",
                    "fields": ["language"],
                    "needs": ["birth_registration"],
                }
            ]
        ),
        [
            "newborn-on-town.yaml: step 'library_card': unknown adapter 'town-library' "
            f"(known: {', '.join(sorted(KNOWN_ADAPTERS))})"
        ],
    ),
    (
        "an added step's model error names it",
        derived(
            add_steps=[
                {
                    "id": "library_card",
                    "program": TEXT,
                    "organization": TEXT,
                    "level": "regional",
                    "adapter": "cra-aba",
                    "fields": ["language"],
                }
            ]
        ),
        [
            "newborn-on-town.yaml: add_steps: step 'library_card': level: "
            "Input should be 'federal', 'provincial' or 'municipal'"
        ],
    ),
    (
        "a purpose declared twice",
        derived(add_consent_purposes={"ccb_aba": {"label": TEXT, "notice": TEXT}}),
        ["newborn-on-town.yaml: add_consent_purposes: 'ccb_aba' is already declared by 'newborn-on'"],
    ),
    (
        "an unknown base",
        derived(extends="newborn-qc"),
        [
            "newborn-on-town.yaml: extends unknown bundle 'newborn-qc': no definition "
            "in the same directory has that id (known: newborn-on)"
        ],
    ),
    (
        "extending itself",
        derived(extends="newborn-on-town"),
        ["newborn-on-town.yaml: bundle 'newborn-on-town' extends itself"],
    ),
    (
        "a key a derived definition cannot set",
        derived(steps=[]),
        ["newborn-on-town.yaml: steps: Extra inputs are not permitted"],
    ),
    (
        "removing every step",
        derived(
            remove_steps=[
                "birth_registration",
                "birth_certificate",
                "social_insurance_number",
                "canada_child_benefit",
                "education_savings_referral",
            ]
        ),
        ["newborn-on-town.yaml: steps: Tuple should have at least 1 item after validation, not 0"],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in ERRORS], ids=[c[0] for c in ERRORS])
def test_each_broken_derived_definition_gives_its_specific_message(
    directory: Path, data: dict[str, Any], expected: list[str]
) -> None:
    assert problems_of(write(directory, data)) == expected


def test_a_cycle_of_bases_is_named(directory: Path) -> None:
    write(directory, derived(id="town-a", extends="town-b"), "town-a.yaml")
    write(directory, derived(id="town-b", extends="town-a"), "town-b.yaml")
    with pytest.raises(DefinitionError) as caught:
        Catalogue.load(directory, known_adapters=KNOWN_ADAPTERS)
    assert caught.value.problems == [
        "town-a.yaml: extends 'town-b' (town-b.yaml), which is invalid",
        "town-b.yaml: extends form a cycle: town-a -> town-b -> town-a",
    ]


def test_a_broken_base_is_reported_with_its_own_file(directory: Path) -> None:
    data = yaml.safe_load(NEWBORN_FILE.read_text(encoding="utf-8"))
    data["steps"][2]["adapter"] = "esdc-legacy"
    write(directory, data, NEWBORN_FILE.name)
    path = write(directory, derived())
    problems = problems_of(path)
    assert problems[0] == "newborn-on-town.yaml: extends 'newborn-on' (newborn-on.yaml), which is invalid"
    assert problems[1].startswith(
        "newborn-on.yaml: step 'social_insurance_number': unknown adapter 'esdc-legacy'"
    )
    # Loading the whole directory, the base's problems are listed once, with the base.
    with pytest.raises(DefinitionError) as caught:
        Catalogue.load(directory, known_adapters=KNOWN_ADAPTERS)
    assert [p.split(":")[0] for p in caught.value.problems] == ["newborn-on-town.yaml", "newborn-on.yaml"]


def test_a_base_defined_twice_is_ambiguous(directory: Path) -> None:
    shutil.copy(NEWBORN_FILE, directory / "copy-of-newborn.yaml")
    assert problems_of(write(directory, derived())) == [
        "newborn-on-town.yaml: extends 'newborn-on', which more than one file defines "
        "(copy-of-newborn.yaml, newborn-on.yaml)"
    ]


# --- a third municipality for the address change, by configuration only ------------------------


def test_hamilton_joins_the_address_change_by_configuration() -> None:
    catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
    province, hamilton = catalogue.get("address-change-on"), catalogue.get("address-change-on-hamilton")
    assert "hamilton-revenue" in KNOWN_ADAPTERS
    assert [s.id for s in hamilton.steps] == [s.id for s in province.steps]
    assert [s for s in hamilton.steps if s.id != "municipality"] == [
        s for s in province.steps if s.id != "municipality"
    ]
    municipality, theirs = hamilton.step("municipality"), province.step("municipality")
    # Only who receives it changed: what it receives, its consent and its undo are the province's.
    assert (municipality.fields, municipality.consent, municipality.compensation) == (
        theirs.fields,
        theirs.consent,
        theirs.compensation,
    )
    assert hamilton.roll_back_on_failure == province.roll_back_on_failure == "always"
    assert "hamilton-revenue" not in {v.adapter for v in theirs.variants}

    def planned(municipality_name: str) -> tuple[str, str | None]:
        submission = {"new_address": {"municipality": municipality_name}, "language": "en"}
        step = resolve_plan(hamilton, submission, {"municipal_address": True}).step("municipality")
        return step.system, step.skip

    assert planned("Stoney Creek") == ("hamilton-revenue", None)
    assert planned("HAMILTON") == ("hamilton-revenue", None)
    assert planned("Ottawa")[1] == "no_variant"
    assert hamilton.step("municipality").no_variant is not None
