"""`tellonce ops <action> --all-stuck`: a bulk run is previewed, confirmed, then pinned to the preview.

The API is an httpx mock that records what the CLI sends: what matters here is the CLI's side of
the exchange (the API's pinning of targets is tested against Temporal in tests/ops).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import infra.cli
from infra.cli import app as cli_app

T1, T2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
TARGETS = [
    {
        "tracking_id": t,
        "step_id": "sin",
        "system": "sin",
        "state": "retrying",
        "action": "retry",
        "would": "again",
    }
    for t in (T1, T2)
]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        report: dict[str, Any] = {"action": body["action"], "dry_run": body["dry_run"], "targets": TARGETS}
        if not body["dry_run"]:
            done = [
                t for t in TARGETS if {"tracking_id": t["tracking_id"], "step_id": "sin"} in body["targets"]
            ]
            report |= {"targets": done, "outcomes": [], "accepted": len(done), "refused": 0}
        return httpx.Response(200, json=report)

    monkeypatch.setattr(
        infra.cli,
        "http_client",
        lambda url: httpx.Client(base_url=url, transport=httpx.MockTransport(answer)),
    )
    return bodies


def bulk_retry(*extra: str, answer: str | None = None) -> Any:
    env = {"TELLONCE_TOKEN": "a-token", "TELLONCE_API_URL": "http://tellonce.test", "COLUMNS": "200"}
    args = ["ops", "retry", "--all-stuck", "--system", "sin", "--reason", "SIN back", *extra]
    return CliRunner().invoke(cli_app, args, env=env, input=answer)


def test_a_bulk_run_shows_its_targets_and_runs_only_them_once_confirmed(sent: list[dict[str, Any]]) -> None:
    result = bulk_retry(answer="y\n")
    assert result.exit_code == 0, result.output
    assert T1 in result.output and "retry these 2 target(s)?" in result.output
    assert "retry: 2 accepted, 0 refused" in result.output
    preview, run = sent
    assert preview["dry_run"] is True and "targets" not in preview
    assert run["dry_run"] is False
    assert run["targets"] == [{"tracking_id": T1, "step_id": "sin"}, {"tracking_id": T2, "step_id": "sin"}]


def test_a_bulk_run_not_confirmed_sends_nothing(sent: list[dict[str, Any]]) -> None:
    result = bulk_retry(answer="n\n")
    assert result.exit_code == 1
    assert "nothing was changed" in result.output
    assert [body["dry_run"] for body in sent] == [True]


def test_yes_skips_the_question_but_still_pins_the_preview(sent: list[dict[str, Any]]) -> None:
    result = bulk_retry("--yes")
    assert result.exit_code == 0, result.output
    assert "target(s)?" not in result.output
    assert [body["dry_run"] for body in sent] == [True, False]
    assert len(sent[1]["targets"]) == 2
    refused = bulk_retry("--json")  # nobody to ask: a scripted run must say --yes
    assert refused.exit_code == 2
    assert [body["dry_run"] for body in sent] == [True, False, True]
