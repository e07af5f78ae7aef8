"""What Intake hands Temporal when it starts a bundle: the settings operators rely on reach the workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from temporalio.client import Client

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.intake import Intake
from infra.settings import Settings
from workflows.models import BundleInput

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "newborn-on" / "complete.json"


class RecordingClient:
    """Stands in for the Temporal client: keeps what `start_workflow` was given."""

    def __init__(self) -> None:
        self.started: list[tuple[Any, dict[str, Any]]] = []

    async def start_workflow(self, workflow: Any, arg: Any, **kwargs: Any) -> None:
        self.started.append((arg, kwargs))


async def test_the_stuck_threshold_of_the_settings_reaches_each_bundle() -> None:
    settings = Settings(
        ops_stuck_after_attempts=3,
        legacy_systems={"esdc-sin": {"stuck_after_attempts": 7}},
    )
    client = RecordingClient()
    intake = Intake(cast("Client", client), Catalogue.load(known_adapters=KNOWN_ADAPTERS), settings)
    raw = json.loads(EXAMPLE.read_text())
    await intake.submit("newborn-on", raw.get("submission", raw), channel="api")

    [(bundle, _)] = client.started
    assert isinstance(bundle, BundleInput)
    assert bundle.stuck_after_attempts == 3
    assert bundle.stuck_after_attempts_by_system == {"esdc-sin": 7}
