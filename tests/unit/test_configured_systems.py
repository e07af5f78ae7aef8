"""Legacy systems added by configuration: loading, clear errors, the adapter they become, their double."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from adapters import configured
from adapters.configured import (
    SYSTEMS_DIRECTORY,
    ConfiguredRestAdapter,
    configured_adapter_types,
    load_system,
    load_systems,
)
from adapters.contract_kit import is_compensable
from adapters.registry import ADAPTER_TYPES, KNOWN_ADAPTERS, build_adapters
from adapters.sdk import CallContext, CompensationRequest, RejectedError, StepRequest
from bundles.catalogue import DefinitionError
from infra.cli import app
from infra.sandbox.configured import configured_specs
from infra.sandbox.systems import SystemState
from infra.settings import LegacySystemSettings, Settings

BASE = "http://legacy.test"
TEXT = {"en": "Received.", "fr": "Reçu."}


def system(**changes: Any) -> dict[str, Any]:
    return {
        "id": "town-library",
        "name": {"en": "Town library", "fr": "Bibliothèque municipale"},
        "protocol": "rest-json",
        "field_map": [
            {"source": "child.given_names", "target": "card.holder"},
            {"source": "child.date_of_birth", "target": "card.born", "transform": "compact_date"},
            {"source": "language", "target": "lang", "transform": "language_letter"},
        ],
    } | changes


def write(directory: Path, data: Any, name: str = "town-library.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_system(path)
    return caught.value.problems


def context(operation: str = "submit") -> CallContext:
    return CallContext(
        idempotency_key=f"bundle-1:welcome_baby:{operation}",
        bundle_ref="bundle-1",
        step_id="welcome_baby",
        operation=operation,  # type: ignore[arg-type]  # one of the Operation literals
        attempt=1,
        deadline=datetime.now(UTC) + timedelta(seconds=10),
    )


class Recorder:
    """An httpx transport that records requests and answers like the standard REST protocol."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json={"reference": "OTT-HBHC-1", "message": TEXT})
        return httpx.Response(201, json={"reference": "OTT-HBHC-1", "state": "referred", "message": TEXT})


# --- the packaged system ------------------------------------------------------------------------


def test_the_ottawa_welcome_call_is_registered_like_any_adapter() -> None:
    [ottawa] = [s for s in load_systems() if s.id == "ottawa-welcome-baby"]
    assert (SYSTEMS_DIRECTORY / "ottawa-welcome-baby.yaml").is_file()
    assert ottawa.reversible and ottawa.sandbox is not None
    cls = ADAPTER_TYPES["ottawa-welcome-baby"]
    assert "ottawa-welcome-baby" in KNOWN_ADAPTERS
    assert issubclass(cls, ConfiguredRestAdapter) and cls.system == "ottawa-welcome-baby"
    assert is_compensable(cls)
    settings = Settings(
        sandbox_url=BASE,
        legacy_systems={"ottawa-welcome-baby": LegacySystemSettings(url="http://ottawa.test/api")},
    )
    adapters = build_adapters(settings)
    adapter = adapters["ottawa-welcome-baby"]
    assert isinstance(adapter, cls)
    assert adapter.requests_url() == "http://ottawa.test/api/systems/ottawa-welcome-baby/requests"


async def test_the_ottawa_adapter_sends_only_its_mapped_fields_with_the_key() -> None:
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        adapter = ADAPTER_TYPES["ottawa-welcome-baby"].from_settings(Settings(sandbox_url=BASE), client)
        fields = {
            "language": "fr",
            "birth_parent": {"given_names": "Marie", "phone": "613-555-0100", "email": "m@example.test"},
            "child": {"date_of_birth": "2026-01-31", "surname": "Tremblay"},
        }
        result = await adapter.submit(context(), StepRequest(fields=fields))
        undone = await adapter.compensate(
            context("compensate"), CompensationRequest(reference=result.reference, fields={})
        )
    assert (result.reference, undone.reference) == ("OTT-HBHC-1", "OTT-HBHC-1")
    sent, cancel = recorder.requests
    assert sent.url == f"{BASE}/systems/ottawa-welcome-baby/requests"
    assert sent.headers["Idempotency-Key"] == "bundle-1:welcome_baby:submit"
    # The surname is not in the system's map: it does not leave.
    assert json.loads(sent.content) == {
        "fields": {
            "preferred_language": "F",
            "parent": {"first_name": "Marie", "phone": "613-555-0100", "email": "m@example.test"},
            "baby": {"birth_date": "2026-01-31"},
        }
    }
    assert cancel.url == f"{BASE}/systems/ottawa-welcome-baby/requests/OTT-HBHC-1/cancel"
    assert cancel.headers["Idempotency-Key"] == "bundle-1:welcome_baby:compensate"
    assert cancel.content == b""


async def test_transforms_apply_and_an_irreversible_system_cannot_compensate(tmp_path: Path) -> None:
    [library] = load_systems(write(tmp_path, system()).parent)
    cls = configured_adapter_types([library])["town-library"]
    assert not is_compensable(cls)
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        adapter = cls(BASE, client)
        await adapter.submit(
            context(),
            StepRequest(
                fields={"language": "en", "child": {"given_names": "Léo", "date_of_birth": "2026-02-01"}}
            ),
        )
        with pytest.raises(RejectedError) as caught:
            await adapter.compensate(context("compensate"), CompensationRequest(reference="X", fields={}))
    assert caught.value.code == "compensation_unsupported"
    assert json.loads(recorder.requests[0].content)["fields"] == {
        "card": {"holder": "Léo", "born": "20260201"},
        "lang": "E",
    }
    assert len(recorder.requests) == 1


# --- errors -----------------------------------------------------------------------------------


ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown transform",
        system(field_map=[{"source": "child.date_of_birth", "target": "born", "transform": "iso_date"}]),
        "town-library.yaml: field_map #1 (child.date_of_birth): unknown transform 'iso_date' "
        "(known: compact_date, compact_postal_code, digits, language_letter, upper)",
    ),
    (
        "another protocol",
        system(protocol="soap"),
        "town-library.yaml: protocol: Input should be 'rest-json'",
    ),
    (
        "two values on one target",
        system(
            field_map=[
                {"source": "child.given_names", "target": "card.holder"},
                {"source": "child.surname", "target": "card"},
            ]
        ),
        "town-library.yaml: field_map #2 (child.surname): target 'card' collides with 'card.holder' "
        "(from child.given_names)",
    ),
    (
        "no field map",
        system(field_map=[]),
        "town-library.yaml: field_map: Tuple should have at least 1 item after validation, not 0",
    ),
    (
        "a misspelt key",
        system(reversable=True),
        "town-library.yaml: reversable: Extra inputs are not permitted",
    ),
    (
        "a sandbox reference prefix with personal-looking text",
        system(sandbox={"reference_prefix": "ref of {name}", "accepted": TEXT}),
        "town-library.yaml: sandbox.reference_prefix: String should match pattern "
        "'^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$'",
    ),
    (
        "a file named after another id",
        system(id="town-pool"),
        "town-library.yaml: the file of system 'town-pool' must be named town-pool.yaml",
    ),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in ERRORS], ids=[c[0] for c in ERRORS])
def test_each_broken_system_file_gives_its_specific_message(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    assert problems_of(write(tmp_path, data)) == [expected]


def test_invalid_yaml_and_a_list_are_reported_with_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "town-library.yaml"
    broken.write_text("id: town-library\nfield_map: [\n", encoding="utf-8")
    [problem] = problems_of(broken)
    assert problem.startswith("town-library.yaml: invalid YAML at line ")
    [problem] = problems_of(write(tmp_path, ["id"], "town-pool.yaml"))
    assert problem.startswith("town-pool.yaml: expected a mapping of system settings")


def test_every_broken_file_of_a_directory_is_reported(tmp_path: Path) -> None:
    write(tmp_path, system(protocol="mq"))
    write(
        tmp_path,
        system(id="town-pool", field_map=[{"source": "x", "target": "y", "transform": "rot13"}]),
        "town-pool.yaml",
    )
    with pytest.raises(DefinitionError) as caught:
        load_systems(tmp_path)
    assert [p.split(":")[0] for p in caught.value.problems] == ["town-library.yaml", "town-pool.yaml"]
    assert load_systems(tmp_path / "absent") == ()


def test_a_system_file_cannot_take_the_id_of_an_adapter_in_code(tmp_path: Path) -> None:
    [cra] = load_systems(write(tmp_path, system(id="cra-aba"), "cra-aba.yaml").parent)
    with pytest.raises(DefinitionError) as caught:
        configured_adapter_types([cra], taken=ADAPTER_TYPES)
    assert caught.value.problems == [
        "cra-aba.yaml: system id 'cra-aba' is already the id of an adapter of tellonce"
    ]


# --- the sandbox double -----------------------------------------------------------------------


def test_the_sandbox_simulates_systems_that_declare_a_double(tmp_path: Path) -> None:
    double = {
        "reference_prefix": "TOWN-LIB",
        "accepted_state": "issued",
        "accepted": TEXT,
        "honours_keys": False,
    }
    write(tmp_path, system(sandbox=double, reversible=True))
    write(tmp_path, system(id="town-pool"), "town-pool.yaml")
    [spec] = configured_specs(tmp_path)
    assert (spec.id, spec.reversible, spec.honours_keys, spec.accepted_state) == (
        "town-library",
        True,
        False,
        "issued",
    )
    state = SystemState(spec)
    answer = state.submit("bundle-1:library:submit", {"card": {"holder": "Léo"}})
    assert answer.status == 201
    assert answer.body["reference"].startswith("TOWN-LIB-")
    assert answer.body["state"] == "issued"
    assert [e.fields for e in state.ledger] == [{"card": {"holder": "Léo"}}]


def test_the_packaged_sandbox_simulates_the_ottawa_welcome_call() -> None:
    specs = {spec.id: spec for spec in configured_specs()}
    ottawa = specs["ottawa-welcome-baby"]
    assert ottawa.reversible and ottawa.honours_keys
    assert ottawa.new_reference(datetime.now(UTC)).startswith("OTT-HBHC-")


def test_bundles_validate_reports_a_broken_system_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, system(field_map=[{"source": "child.surname", "target": "name", "transform": "rot13"}]))
    monkeypatch.setattr(configured, "SYSTEMS_DIRECTORY", tmp_path)
    # The registry reads the system files when it is imported: make the command import it afresh.
    monkeypatch.delitem(sys.modules, "adapters.registry")
    result = CliRunner().invoke(app, ["bundles", "validate", str(SYSTEMS_DIRECTORY.parent / "definitions")])
    assert result.exit_code == 1
    assert "town-library.yaml: field_map #1 (child.surname): unknown transform 'rot13'" in result.output
    assert "1 problem(s) in the configured systems" in result.output
