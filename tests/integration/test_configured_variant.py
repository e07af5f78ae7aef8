"""A bundle and a legacy system added by configuration only, end to end on real servers.

`newborn-on-ottawa` extends `newborn-on` with Ottawa Public Health's welcome call, whose system
is declared in `bundles/systems/ottawa-welcome-baby.yaml`. The Temporal dev server, the sandbox
process (which simulates the configured system from the same file) and workers built by
`build_adapters` run it like any other bundle.

Only the birth registration and the welcome call are consented to here: the other newborn
systems are covered by `test_newborn_end_to_end.py`, and this test stays about configuration.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.notices import deliver_notice
from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.submissions.validation import validate_submission
from tests.integration.test_newborn_end_to_end import example, notice_for, stack_for, steps
from tests.workflow.support import assert_replays

pytestmark = pytest.mark.integration

BUNDLE = "newborn-on-ottawa"
SYSTEM = "ottawa-welcome-baby"


def ottawa_submission() -> dict[str, Any]:
    """The examples' family, consenting to the welcome call and to nothing else optional."""
    submission = example("no-consents")
    submission["consents"]["ottawa_welcome_call"] = True
    return submission


async def test_the_ottawa_bundle_runs_its_configured_step(
    dev_env: WorkflowEnvironment, sandbox_url: str, kafka_port: int
) -> None:
    catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
    ottawa, newborn = catalogue.get(BUNDLE), catalogue.get("newborn-on")
    # The province's bundle is untouched by Ottawa's: same steps, no welcome call.
    assert ottawa.steps[: len(newborn.steps)] == newborn.steps
    assert "welcome_baby" not in {step.id for step in newborn.steps}

    submission = ottawa_submission()
    async with stack_for(dev_env, sandbox_url, kafka_port) as stack:
        response = await stack.api.post(f"/api/v1/bundles/{BUNDLE}/submissions", json=submission)
        assert response.status_code == 202, response.text
        accepted: dict[str, Any] = response.json()
        tracking_id = accepted["tracking_id"]
        await deliver_notice(stack.client, notice_for(submission, tracking_id), settings=stack.settings)
        status = await stack.final(accepted)

        assert status["state"] == "completed", json.dumps(status, indent=1)
        by_id = steps(status)
        welcome = by_id["welcome_baby"]
        assert welcome["state"] == "done"
        assert welcome["reference"].startswith("OTT-HBHC-")
        assert welcome["level"] == "municipal"
        assert by_id["birth_registration"]["state"] == "done"
        assert {by_id[s]["state"] for s in ("social_insurance_number", "canada_child_benefit")} == {"skipped"}

        [entry] = await stack.sandbox.ledger(SYSTEM, key_prefix=f"{tracking_id}:")
        assert entry["idempotency_key"].startswith(f"{tracking_id}:welcome_baby:")
        assert entry["reference"] == welcome["reference"]
        # Exactly the step's projection, in the city's own format, and nothing else of the form.
        data = validate_submission(ottawa, submission).data
        parent = data["birth_parent"]
        assert entry["fields"] == {
            "preferred_language": "F",
            "parent": {
                "first_name": parent["given_names"],
                "phone": parent["phone"],
                "email": parent["email"],
            },
            "baby": {"birth_date": data["child"]["date_of_birth"]},
        }
        sent = json.dumps(entry["fields"], ensure_ascii=False)
        for value in (parent["surname"], parent["health_number"], data["child"]["given_names"]):
            assert value not in sent
        await assert_replays(stack.client.get_workflow_handle(tracking_id))
