"""The `tellonce` CLI without a running stack: the catalogue commands, and the API commands
against an in-process fake of the HTTP API."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from infra import cli
from tests.conftest import free_port

DEFINITIONS = Path(__file__).resolve().parents[2] / "bundles" / "definitions"
NEWBORN_STEPS = (
    "birth_registration",
    "birth_certificate",
    "social_insurance_number",
    "canada_child_benefit",
    "education_savings_referral",
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test remembers access codes in its own directory, never in the checkout's."""
    directory = tmp_path / "data"
    monkeypatch.setenv("TELLONCE_DATA_DIR", str(directory))
    monkeypatch.delenv("TELLONCE_API_URL", raising=False)
    return directory


class FakeApi:
    """Answers the CLI's HTTP calls in process with `handler`, and records the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(500)

    def client(self, base_url: str) -> httpx.Client:
        return httpx.Client(base_url=base_url, transport=httpx.MockTransport(self._answer))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(cli, "http_client", fake.client)
    monkeypatch.setattr(cli, "FOLLOW_INTERVAL", 0.0)
    return fake


RECEIPT = {
    "tracking_id": "TRK-1",
    "status_url": "/api/v1/submissions/TRK-1",
    "access_code": "CODE-1",
}


def status_of(state: str, *, references: bool) -> dict[str, Any]:
    return {
        "tracking_id": "TRK-1",
        "bundle_id": "newborn-on",
        "state": state,
        "steps": [
            {
                "id": step,
                "program": {"en": f"Program {step}", "fr": f"Programme {step}"},
                "organization": {"en": "Org", "fr": "Org"},
                "level": "federal",
                "state": "done" if references else "running",
                "attempts": 1,
                "reference": f"REF-{n}" if references else None,
                "message": None,
                "waiting_for": None,
            }
            for n, step in enumerate(NEWBORN_STEPS)
        ],
    }


def write_json(path: Path, content: Any) -> Path:
    path.write_text(json.dumps(content))
    return path


# --- catalogue ------------------------------------------------------------------------------


def test_bundles_list_names_every_bundle() -> None:
    result = runner.invoke(cli.app, ["bundles", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert "newborn-on" in [bundle["id"] for bundle in json.loads(result.stdout)]

    table = runner.invoke(cli.app, ["bundles", "list"])
    assert table.exit_code == 0, table.output
    assert "newborn-on" in table.stdout


def test_bundles_show_lists_the_steps_with_their_rules() -> None:
    result = runner.invoke(cli.app, ["bundles", "show", "newborn-on"])
    assert result.exit_code == 0, result.output
    for heading in ("needs", "consent", "optional", "pivot", "adapter", "fields"):
        assert heading in result.stdout

    as_json = json.loads(runner.invoke(cli.app, ["bundles", "show", "newborn-on", "--json"]).stdout)
    assert tuple(step["id"] for step in as_json["steps"]) == NEWBORN_STEPS


def test_bundles_show_an_unknown_bundle_exits_1() -> None:
    result = runner.invoke(cli.app, ["bundles", "show", "no-such-bundle"])
    assert result.exit_code == 1
    assert "no bundle 'no-such-bundle'" in result.stderr


def test_validate_the_real_catalogue_is_valid() -> None:
    result = runner.invoke(cli.app, ["bundles", "validate", str(DEFINITIONS)])
    assert result.exit_code == 0, result.output
    assert "valid:" in result.stdout
    assert "newborn-on" in result.stdout


def test_validate_lists_each_problem_of_an_invalid_definition(tmp_path: Path) -> None:
    definition = yaml.safe_load((DEFINITIONS / "newborn-on.yaml").read_text())
    definition["steps"][1]["needs"] = ["birth_registraton"]
    definition["steps"][2]["adapter"] = "no_such_adapter"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(definition, allow_unicode=True))

    for target in (broken, tmp_path):  # a file, and a directory holding it
        result = runner.invoke(cli.app, ["bundles", "validate", str(target)])
        assert result.exit_code == 1, result.output
        assert "needs unknown step 'birth_registraton'" in result.stderr
        assert "unknown adapter 'no_such_adapter'" in result.stderr


def test_validate_an_empty_directory_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["bundles", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no bundle definitions" in result.stderr


# --- submit and status ----------------------------------------------------------------------


def test_an_unreachable_api_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    file = write_json(tmp_path / "s.json", {"bundle_id": "newborn-on", "submission": {}})
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(cli.app, ["submit", str(file), "--api", url])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"cannot reach the tellonce API at {url} — is `tellonce dev` running?"
    assert "Traceback" not in result.output


def test_submit_posts_the_submission_and_remembers_the_access_code(
    tmp_path: Path, data_dir: Path, fake_api: FakeApi
) -> None:
    fake_api.handler = lambda _: httpx.Response(202, json=RECEIPT)
    submission = {"child": {"given_names": "Ada"}}
    file = write_json(tmp_path / "s.json", {"bundle_id": "newborn-on", "submission": submission})

    result = runner.invoke(
        cli.app, ["submit", str(file), "--api", "http://api.test", "--idempotency-key", "K-1"]
    )

    assert result.exit_code == 0, result.output
    assert "TRK-1" in result.stdout
    assert "CODE-1" in result.stdout
    (request,) = fake_api.requests
    assert request.url == "http://api.test/api/v1/bundles/newborn-on/submissions"
    assert json.loads(request.content) == submission
    assert request.headers["Idempotency-Key"] == "K-1"
    codes = data_dir / "cli" / "access-codes.json"
    assert json.loads(codes.read_text()) == {"TRK-1": "CODE-1"}
    assert stat.S_IMODE(codes.stat().st_mode) == 0o600

    # `status` finds the remembered code on its own.
    fake_api.handler = lambda _: httpx.Response(200, json=status_of("completed", references=True))
    shown = runner.invoke(cli.app, ["status", "TRK-1", "--api", "http://api.test", "--json"])
    assert shown.exit_code == 0, shown.output
    assert fake_api.requests[-1].headers["X-Access-Code"] == "CODE-1"
    assert json.loads(shown.stdout)["state"] == "completed"


def test_a_bare_submission_needs_bundle(tmp_path: Path, fake_api: FakeApi) -> None:
    fake_api.handler = lambda _: httpx.Response(202, json=RECEIPT)
    file = write_json(tmp_path / "bare.json", {"child": {}})

    refused = runner.invoke(cli.app, ["submit", str(file), "--api", "http://api.test"])
    assert refused.exit_code == 1
    assert "--bundle" in refused.stderr
    assert fake_api.requests == []

    accepted = runner.invoke(cli.app, ["submit", str(file), "--bundle", "newborn-on", "--json"])
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout) == RECEIPT
    assert fake_api.requests[0].url.path == "/api/v1/bundles/newborn-on/submissions"
    assert json.loads(fake_api.requests[0].content) == {"child": {}}


def test_a_bundle_option_contradicting_the_file_is_refused(tmp_path: Path) -> None:
    file = write_json(tmp_path / "s.json", {"bundle_id": "newborn-on", "submission": {}})
    result = runner.invoke(cli.app, ["submit", str(file), "--bundle", "address-change-on"])
    assert result.exit_code == 1
    assert "'newborn-on'" in result.stderr


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "s.json"
    file.write_text("{not json")
    result = runner.invoke(cli.app, ["submit", str(file)])
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


@pytest.mark.parametrize(("lang", "expected"), [("en", "Enter a date"), ("fr", "Entrez une date")])
def test_field_errors_are_listed_with_their_path(
    tmp_path: Path, fake_api: FakeApi, lang: str, expected: str
) -> None:
    problem = {
        "type": "about:blank",
        "title": "Invalid submission",
        "status": 422,
        "detail": "2 fields need attention",
        "errors": [
            {
                "path": "child.date_of_birth",
                "code": "date",
                "message": {"en": "Enter a date", "fr": "Entrez une date"},
            },
            {"path": "parents.0.sin", "code": "sin", "message": {"en": "Check the SIN", "fr": "Vérifiez"}},
        ],
    }
    fake_api.handler = lambda _: httpx.Response(
        422, content=json.dumps(problem), headers={"content-type": "application/problem+json"}
    )
    file = write_json(tmp_path / "s.json", {"bundle_id": "newborn-on", "submission": {}})
    result = runner.invoke(cli.app, ["submit", str(file), "--lang", lang])
    assert result.exit_code == 1
    assert f"child.date_of_birth: {expected}" in result.stderr
    assert "parents.0.sin:" in result.stderr
    assert "Invalid submission" in result.stderr


@pytest.mark.parametrize(
    ("final", "code"), [("completed", 0), ("completed_with_exceptions", 0), ("failed", 1)]
)
def test_follow_polls_until_final_then_prints_references(
    tmp_path: Path, fake_api: FakeApi, final: str, code: int
) -> None:
    polls = iter([status_of("in_progress", references=False), status_of(final, references=True)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=RECEIPT)
        assert request.headers["X-Access-Code"] == "CODE-1"
        return httpx.Response(200, json=next(polls))

    fake_api.handler = handler
    file = write_json(tmp_path / "s.json", {"bundle_id": "newborn-on", "submission": {}})
    result = runner.invoke(cli.app, ["submit", str(file), "--follow"])
    assert result.exit_code == code, result.output
    for n in range(len(NEWBORN_STEPS)):
        assert f"REF-{n}" in result.stdout
    assert f"bundle {final}" in result.stdout


def test_status_without_a_known_access_code_says_how(fake_api: FakeApi) -> None:
    result = runner.invoke(cli.app, ["status", "TRK-unknown"])
    assert result.exit_code == 1
    assert "--access-code" in result.stderr
    assert fake_api.requests == []


def test_status_of_an_unknown_submission_exits_1(fake_api: FakeApi) -> None:
    fake_api.handler = lambda _: httpx.Response(404, json={"title": "Not found", "status": 404})
    result = runner.invoke(cli.app, ["status", "TRK-9", "--access-code", "nope"])
    assert result.exit_code == 1
    assert "no submission TRK-9" in result.stderr
