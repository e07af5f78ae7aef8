"""The log redaction processor: personal data never reaches a rendered line, operators' ids do."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
import random
import typing
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel
from stdnum import luhn
from stdnum.ca import sin as stdnum_sin
from structlog.processors import JSONRenderer, format_exc_info

import adapters
from adapters.http import error_for_status
from adapters.mapping import FieldMap
from adapters.sdk import AdapterError, RejectedError, TransientError
from bundles.models import LocalizedText
from bundles.submissions.address_change import AddressChangeSubmission
from bundles.submissions.newborn import NewbornSubmission
from infra.redaction import (
    MAX_DEPTH,
    PERSONAL_FIELDS,
    REDACTION_FAILED,
    WHOLE_KEY_ONLY,
    personal_field_kind,
    redact_personal_data,
    redact_text,
    redact_value,
)
from workflows.names import idempotency_key

ROOT = Path(__file__).resolve().parents[2]

SIN = "046454286"
"""The SIN of Service Canada's own examples: Luhn-valid, though never issued (it starts with 0)."""
ISSUABLE_SIN = "123456782"
HEALTH_NUMBER = "123456789" + luhn.calc_check_digit("123456789")
"""``1234567897``: 10 digits, Luhn over all 10, as Ontario's health numbers are."""
HEALTH_NUMBER_GROUPED = f"{HEALTH_NUMBER[:4]}-{HEALTH_NUMBER[4:7]}-{HEALTH_NUMBER[7:]}"
OTHER_HEALTH_NUMBER = "098765432" + luhn.calc_check_digit("098765432")


def render(event: dict[str, Any]) -> str:
    """What a JSON line of this event shows: exception rendered, then redacted, then rendered."""
    event_dict = format_exc_info(None, "error", dict(event))
    return str(JSONRenderer()(None, "error", redact_personal_data(None, "error", event_dict)))


def digits_in(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def test_sample_numbers_are_what_they_claim() -> None:
    assert luhn.is_valid(SIN)
    assert not stdnum_sin.is_valid(SIN)  # why the redaction checks Luhn, not issuability
    assert stdnum_sin.is_valid(ISSUABLE_SIN)
    assert HEALTH_NUMBER == "1234567897"
    assert luhn.is_valid(OTHER_HEALTH_NUMBER)


# --- Shapes in text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    ["046 454 286", "046-454-286", "046454286", "123 456 782", "123456782", "912 345 675", "135-792-463"],
)
def test_a_sin_in_text_is_redacted_however_grouped(written: str) -> None:
    redacted = redact_text(f"ESDC refused SIN {written}: not on file (sin={written})")
    assert redacted == "ESDC refused SIN [redacted:sin]: not on file (sin=[redacted:sin])"


@pytest.mark.parametrize(
    "written",
    ["1234567897", "1234 567 897", "1234-567-897", "1234567897AB", "1234-567-897-AB", "0987-654-324-AB"],
)
def test_an_ontario_health_number_is_redacted_with_its_version_code(written: str) -> None:
    assert redact_text(f"OHIP has no card {written}.") == "OHIP has no card [redacted:health_number]."


def test_numbers_that_fail_luhn_are_left_alone() -> None:
    # 9 or 10 digits alone are not enough: offsets and counts have them too.
    text = "offset 123456789 of 1234567890 records"
    assert not luhn.is_valid("123456789")
    assert not luhn.is_valid("1234567890")
    assert redact_text(text) == text


@pytest.mark.parametrize("written", ["12345-003-1234567", "12345 003 123456789012", "00011-815-0012345"])
def test_a_bank_account_triple_is_redacted(written: str) -> None:
    assert redact_text(f"deposit to {written} failed") == "deposit to [redacted:bank_account] failed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("child born 2026-11-10 at home", "child born [redacted:date_of_birth] at home"),
        ("Date of birth: 1992-03-14", "Date of birth: [redacted:date_of_birth]"),
        ("birth_date=19920314", "birth_date=[redacted:date_of_birth]"),
        ("DOB 14/03/1992", "DOB [redacted:date_of_birth]"),
        ("date de naissance : 1992/03/14", "date de naissance : [redacted:date_of_birth]"),
        ("née le 1992-03-14", "née le [redacted:date_of_birth]"),
        (
            "Resident(date_of_birth=datetime.date(1992, 3, 14), language='en')",
            "Resident(date_of_birth=datetime.[redacted:date_of_birth]), language='en')",
        ),
    ],
)
def test_a_date_next_to_a_birth_word_is_redacted(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "the move takes effect 2026-12-01",
        "ne pas envoyer avant 2026-12-01",
        "birth_order=2 on 2026-12-01",  # a number between the word and the date ends the context
    ],
)
def test_other_dates_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize("written", ["K1A 0B1", "k1a0b1", "M5V-2T6"])
def test_a_postal_code_is_redacted(written: str) -> None:
    assert redact_text(f"mail to {written}, please") == "mail to [redacted:postal_code], please"


def test_an_email_address_is_redacted_but_not_a_user_at_a_host_and_port() -> None:
    text = "notify marie-eve.belanger@example.ca via tellonce@127.0.0.1:2222"
    assert redact_text(text) == "notify [redacted:email] via tellonce@127.0.0.1:2222"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"surname": "Tremblay", "step": "esdc-sin"}', '{"surname": "[redacted:name]", "step": "esdc-sin"}'),
        (
            "{'given_names': 'Zoë Chloé', 'sex': 'F'}",
            "{'given_names': '[redacted:name]', 'sex': '[redacted:personal]'}",
        ),
        ("surname: Tremblay", "surname: [redacted:name]"),
        ("GET /lookup?lastName=Tremblay&page=2", "GET /lookup?lastName=[redacted:name]&page=2"),
        (
            "<v:informant><v:surname>Tremblay</v:surname><v:code>X1</v:code></v:informant>",
            "<v:informant><v:surname>[redacted:name]</v:surname><v:code>X1</v:code></v:informant>",
        ),
        ('password="hunter2" user=ops', 'password="[redacted:secret]" user=ops'),
        ("sin=None, surname=null", "sin=None, surname=null"),
        ("address='127.0.0.1:7233'", "address='127.0.0.1:7233'"),
    ],
)
def test_pairs_whose_key_is_personal_lose_their_value(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no file for surname O'Neil-Bélanger born 1990", "no file for surname [redacted:name] born 1990"),
        ("Given names 'Zoë Chloé' rejected", "Given names '[redacted:name]' rejected"),
        (
            "aucun dossier pour le nom de famille Gagnon",
            "aucun dossier pour le nom de famille [redacted:name]",
        ),
        ("the surname field is required", "the surname field is required"),
        ("Name Mismatch at step_name Registrar", "Name Mismatch at step_name Registrar"),
    ],
)
def test_a_name_in_prose_is_found_after_the_words_that_announce_it(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_a_name_nothing_announces_cannot_be_found() -> None:
    # The limit of searching text: a bare name is a word like any other. Log names as fields.
    assert redact_text("Bélanger called about Zoë") == "Bélanger called about Zoë"


def test_colons_without_a_space_are_ids_not_pairs() -> None:
    # Workflow ids and idempotency keys join step ids with colons; one step is "esdc-sin".
    key = idempotency_key("newborn-on-3f2a9c", "esdc-sin", "submit")
    assert redact_text(key) == key
    assert redact_text(f"reply-collector:esdc-sin:{key}") == f"reply-collector:esdc-sin:{key}"


# --- Field names ---------------------------------------------------------------------------


def _spellings(name: str) -> list[str]:
    words = name.split("_")
    camel = words[0] + "".join(word.title() for word in words[1:])
    spellings = [name, camel, name.upper().replace("_", "-"), f"{camel[0].upper()}{camel[1:]}"]
    if name not in WHOLE_KEY_ONLY:
        spellings += [f"parent_{name}", f"applicant.{name}", f"child-{name.replace('_', '-')}"]
    return spellings


@pytest.mark.parametrize(
    ("kind", "name"), [(kind, name) for kind, names in PERSONAL_FIELDS.items() for name in names]
)
def test_every_listed_field_name_is_recognised_however_spelled(kind: str, name: str) -> None:
    for spelling in _spellings(name):
        assert personal_field_kind(spelling) == kind, spelling
        assert (
            redact_personal_data(None, "info", {"event": "e", spelling: "x1"})[spelling]
            == f"[redacted:{kind}]"
        )


@pytest.mark.parametrize(
    "key",
    [
        "event", "timestamp", "level", "logger", "exception", "stack", "step", "step_name", "system",
        "bundle", "bundle_id", "workflow_id", "run_id", "idempotency_key", "key_id", "kid", "port",
        "host", "code", "reason", "reference", "registration_number", "since", "status", "consents",
        "sin_application", "facility_name", "promoter_name", "municipality", "province", "language",
        "effective_date", "document_type", "task_queue", "offset", "partition", "topic", "file_name",
        "has_sin", "sin_required", "name_count",
    ],
)  # fmt: skip
def test_operational_field_names_are_not_personal(key: str) -> None:
    if key in {"has_sin"}:
        # A flag named after a SIN is redacted only if it held more than a yes or no.
        assert personal_field_kind(key) == "sin"
        assert redact_value({key: True}) == {key: True}
        return
    assert personal_field_kind(key) is None


def _schema_leaves(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [
            arg
            for arg in (*typing.get_args(annotation), annotation)
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        if nested:
            yield from _schema_leaves(nested[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


NOT_PERSONAL_SCHEMA_FIELDS = {
    "language",
    "consents",
    "child.plurality",
    "child.birth_order",
    "certificate.form",
    "certificate.copies",
    "resp_referral.promoter",
    "identity.document_type",
    "effective_date",
}
"""What the submission schemas hold that is not about a person: choices, counts and a company."""


@pytest.mark.parametrize("schema", [NewbornSubmission, AddressChangeSubmission])
def test_every_personal_field_of_the_submission_schemas_is_listed(schema: type[BaseModel]) -> None:
    # A field is covered when its name or a section above it is personal (a section is
    # redacted whole). A new schema field fails here until it is listed or declared harmless.
    uncovered = {
        path
        for path in _schema_leaves(schema)
        if not any(personal_field_kind(part) for part in path.split("."))
    }
    assert uncovered <= NOT_PERSONAL_SCHEMA_FIELDS


def _adapter_renames() -> set[tuple[str, str]]:
    renames: set[tuple[str, str]] = set()
    for module_info in pkgutil.iter_modules(adapters.__path__):
        module = importlib.import_module(f"adapters.{module_info.name}")
        for value in vars(module).values():
            for candidate in [value, *(vars(value).values() if isinstance(value, type) else ())]:
                if isinstance(candidate, FieldMap):
                    renames.update((rename.source, rename.target) for rename in candidate.renames)
    return renames


def test_legacy_systems_names_for_personal_fields_are_listed_too() -> None:
    renames = _adapter_renames()
    assert len(renames) > 50
    for source, target in renames:
        kind = personal_field_kind(source.rsplit(".", 1)[-1])
        if kind is not None:
            assert personal_field_kind(target.rsplit(".", 1)[-1]) == kind, (source, target)
    for layout in (ROOT / "adapters" / "layouts").glob("*.yaml"):
        for spec in yaml.safe_load(layout.read_text())["detail"]["fields"]:
            kind = personal_field_kind(str(spec.get("source", "")).rsplit(".", 1)[-1])
            # Codes such as a parent's status are left to their full name (`status_in_canada`).
            if kind not in {None, "personal"}:
                assert personal_field_kind(spec["name"]) == kind, spec["name"]


EXAMPLE_PERSONAL_VALUES = {
    "newborn-on/complete.json": [
        "123 456 782", "0987-654-324-AB", "Zoë-Chloé", "O'Neil-Bélanger", "Marie-Ève", "Bélanger",
        "Liam", "O'Neil", "2026-11-10", "04:32", "1992-03-14", "1990-07-02", "Gatineau", "Dublin",
        "100 Example Street", "K1A 0B1", "marie-eve.belanger@example.ca", "(613) 555-0123", "common_law",
        "permanent_resident",
    ],
    "address-change-on/complete.json": [
        "Amélie", "Tremblay", "1988-04-12", "135 792 463", "4532-017-888", "T6512-34568-80412", "4821",
        "K2P 1L4", "250 Example Crescent", "77 Sample Lane", "K1N 5T5", "amelie.tremblay@example.ca",
        "613-555-0142",
    ],
}  # fmt: skip
"""What each example says about its residents, as written in the example."""
HARMLESS_EXAMPLE_VALUES = {
    "newborn-on/complete.json": '"copies": 2',
    "address-change-on/complete.json": '"effective_date": "2026-11-30"',
}


@pytest.mark.parametrize("example", sorted(EXAMPLE_PERSONAL_VALUES))
def test_a_whole_submission_logged_as_a_field_keeps_only_its_harmless_parts(example: str) -> None:
    submission = json.loads((ROOT / "examples" / example).read_text())["submission"]
    for value in EXAMPLE_PERSONAL_VALUES[example]:
        assert value in json.dumps(submission, ensure_ascii=False)
    line = render({"event": "submission.received", "submission": submission})
    for value in EXAMPLE_PERSONAL_VALUES[example]:
        assert value not in line
        assert json.dumps(value)[1:-1] not in line  # as JSONRenderer escapes accents
    assert '"language": "en"' in line
    assert HARMLESS_EXAMPLE_VALUES[example] in line


# --- Structures --------------------------------------------------------------------------------


def test_nested_structures_are_walked_and_personal_sections_replaced_whole() -> None:
    event = {
        "event": "request.sent",
        "system": "cra-aba",
        "request": {
            "parent": {"sin": SIN, "first_name": "Marie-Ève", "status": "sent"},
            "mailing_address": {"street": "100 Example Street", "postal_code": "K1A 0B1"},
            "children": [{"given_names": "Zoë", "birth_order": 1}, ("note", f"SIN {SIN}")],
            "numbers": {SIN, HEALTH_NUMBER},
        },
    }
    redacted = redact_personal_data(None, "info", event)
    numbers = redacted["request"].pop("numbers")
    assert sorted(numbers) == ["[redacted:health_number]", "[redacted:sin]"]
    assert redacted == {
        "event": "request.sent",
        "system": "cra-aba",
        "request": {
            "parent": {"sin": "[redacted:sin]", "first_name": "[redacted:name]", "status": "sent"},
            "mailing_address": "[redacted:address]",
            "children": [
                {"given_names": "[redacted:name]", "birth_order": 1},
                ("note", "SIN [redacted:sin]"),
            ],
        },
    }


def test_keys_that_are_themselves_identifiers_are_redacted() -> None:
    assert redact_value({SIN: "matched", "ok": 1}) == {"[redacted:sin]": "matched", "ok": 1}


class _Parent(BaseModel):
    surname: str
    sin: str
    status: str


@dataclasses.dataclass
class _Card:
    health_number: str
    issued_by: str


def test_models_and_dataclasses_are_walked_as_fields_not_shown_as_reprs() -> None:
    event = {
        "event": "e",
        "parent": _Parent(surname="Bélanger", sin=SIN, status="citizen"),
        "card": _Card(health_number=HEALTH_NUMBER, issued_by="ON"),
    }
    redacted = redact_personal_data(None, "info", event)
    assert redacted["parent"] == {"surname": "[redacted:name]", "sin": "[redacted:sin]", "status": "citizen"}
    assert redacted["card"] == {"health_number": "[redacted:health_number]", "issued_by": "ON"}


def test_other_objects_are_shown_as_their_searched_repr() -> None:
    redacted = redact_value(
        {"error": ValueError(f"bad SIN {SIN}"), "raw": SIN.encode(), "id": uuid.UUID(int=7)}
    )
    assert redacted == {
        "error": "ValueError('bad SIN [redacted:sin]')",
        "raw": "b'[redacted:sin]'",
        "id": "UUID('00000000-0000-0000-0000-000000000007')",
    }


# --- Exceptions ------------------------------------------------------------------------------


def _raise_from_adapter() -> None:
    try:
        int(f"SIN {SIN} / OHIP {HEALTH_NUMBER}")
    except ValueError as cause:
        raise RejectedError(
            "identity_mismatch",
            LocalizedText(
                en=f"SIN {SIN[:3]} {SIN[3:6]} {SIN[6:]} does not match {HEALTH_NUMBER}AB",
                fr=f"Le NAS {SIN} ne correspond pas à {HEALTH_NUMBER}",
            ),
            detail=f"system said: sin={SIN}, health_number={HEALTH_NUMBER_GROUPED}",
        ) from cause


def test_an_adapter_exception_embedding_a_sin_and_health_number_is_redacted_with_its_traceback() -> None:
    with pytest.raises(AdapterError) as raised:
        _raise_from_adapter()
    error = raised.value
    line = render({"event": "step.failed", "step": "cra-aba", "message": error.message, "exc_info": error})
    exception = json.loads(line)["exception"]
    # The whole chain was rendered (cause, context line, both exception types) and then searched.
    assert "Traceback (most recent call last)" in exception
    cause = "'SIN [redacted:sin] / OHIP [redacted:health_number]'"
    assert f"ValueError: invalid literal for int() with base 10: {cause}" in exception
    assert "adapters.sdk.RejectedError: identity_mismatch: system said: sin=[redacted:sin]" in exception
    assert "health_number=[redacted:health_number]" in exception
    assert SIN not in digits_in(line)
    assert HEALTH_NUMBER not in digits_in(line)
    assert json.loads(line)["message"] == {
        "en": "SIN [redacted:sin] does not match [redacted:health_number]",
        "fr": "Le NAS [redacted:sin] ne correspond pas à [redacted:health_number]",
    }


def test_a_legacy_systems_own_refusal_message_is_redacted_when_logged() -> None:
    response = httpx.Response(
        422,
        json={
            "code": "sin_unknown",
            "message": {"en": f"No file for SIN {SIN}", "fr": f"Aucun dossier pour le NAS {SIN}"},
        },
        request=httpx.Request("POST", "http://127.0.0.1:8080/systems/cra-aba/requests"),
    )
    error = error_for_status(response, "cra-aba")
    assert isinstance(error, RejectedError)
    line = render({"event": "step.rejected", "code": error.code, "message": error.message, "exc_info": error})
    assert SIN not in line
    assert "No file for SIN [redacted:sin]" in line
    assert '"code": "sin_unknown"' in line


def test_a_stack_and_an_exception_given_as_text_are_searched_too() -> None:
    event = {
        "event": "e",
        "stack": f'  File "x.py", line 3\n    check("{SIN}")',
        "exception": f"KeyError: '{HEALTH_NUMBER}'",
    }
    redacted = redact_personal_data(None, "error", event)
    assert redacted["stack"].endswith('check("[redacted:sin]")')
    assert redacted["exception"] == "KeyError: '[redacted:health_number]'"


def test_an_exception_not_yet_rendered_is_rendered_before_it_is_searched() -> None:
    # A chain missing format_exc_info must not let the renderer show the exception raw.
    try:
        raise TransientError("timeout", detail=f"no answer about {SIN}")
    except TransientError as error:
        redacted = redact_personal_data(None, "error", {"event": "e", "exc_info": error})
    assert "exc_info" not in redacted
    assert "timeout: no answer about [redacted:sin]" in redacted["exception"]


# --- What must survive -----------------------------------------------------------------------


def test_operational_values_survive_untouched() -> None:
    tracking = uuid.UUID("9b2f4c1e-5d6a-4b7c-8e9f-0a1b2c3d4e5f")
    workflow_id = f"newborn-on-{tracking}"
    event = {
        "event": "step.retrying",
        "timestamp": "2026-05-09T07:35:25.123456Z",
        "level": "info",
        "bundle": str(tracking),
        "workflow_id": workflow_id,
        "idempotency_key": idempotency_key(workflow_id, "esdc-sin", "submit", 2),
        "digest": hashlib.sha256(b"newborn-on").hexdigest(),
        "address": "127.0.0.1:7233",
        "url": "http://127.0.0.1:23800/api/v1/bundles",
        "host": "127.0.0.1",
        "port": 7233,
        "offset": 123456782,  # an int is never a SIN, even a Luhn-valid one
        "elapsed_ms": 1234.5,
        "attempt": 3,
        "step": "esdc-sin",
        "code": "sin_checksum",
        "consents": {"sin_application": True, "ohip_address": False},
        "reopens_at": "2026-05-11T13:00:00+00:00",
        "what": "sandbox listening on 127.0.0.1:2222 (SFTP) and :8080",
    }
    assert redact_personal_data(None, "info", event) == event


def test_random_uuids_and_digests_are_never_taken_for_personal_data() -> None:
    rng = random.Random(20260509)
    for _ in range(3000):
        value = uuid.UUID(int=rng.getrandbits(128), version=4)
        digest = hashlib.sha256(value.bytes).hexdigest()
        for text in (str(value), str(value).upper(), value.hex, digest, f"k:{digest[:32]}:{value}"):
            assert redact_text(text) == text


# --- Never raising ---------------------------------------------------------------------------


class _BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError(f"cannot list {SIN}")

    def __len__(self) -> int:
        return 1


def test_a_failure_replaces_the_event_with_a_marker_that_carries_nothing() -> None:
    event = {
        "event": f"lookup of {SIN}",
        "level": "warning",
        "timestamp": "2026-05-09T07:35:25.123456Z",
        "logger": f"tellonce.{SIN}",
        "broken": _BrokenMapping(),
    }
    assert redact_personal_data(None, "warning", event) == {
        "event": REDACTION_FAILED,
        "error_type": "RuntimeError",
        "level": "warning",
        "timestamp": "2026-05-09T07:35:25.123456Z",
    }


class _Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError(SIN)


def test_a_value_that_cannot_show_itself_is_shown_as_nothing() -> None:
    redacted = redact_personal_data(None, "info", {"event": "e", "odd": _Unshowable()})
    assert redacted == {"event": "e", "odd": "[redacted:unrepresentable]"}


def test_a_cycle_or_deep_nesting_ends_in_a_marker() -> None:
    cycle: list[Any] = ["top"]
    cycle.append(cycle)
    redacted = redact_personal_data(None, "info", {"event": "e", "cycle": cycle})
    depth, inner = 0, redacted["cycle"]
    while isinstance(inner, list) and depth <= MAX_DEPTH:
        depth, inner = depth + 1, inner[1]
    assert inner == "[redacted:nested]"
    assert depth == MAX_DEPTH


def test_exc_info_true_without_an_exception_is_dropped() -> None:
    assert redact_personal_data(None, "error", {"event": "e", "exc_info": True}) == {"event": "e"}
