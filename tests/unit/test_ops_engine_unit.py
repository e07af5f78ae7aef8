"""The ops engine's pure parts: the visibility query it runs and how it checks amended data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.ops.engine import OpsEngine, known_systems, start_system_control
from infra.ops.models import StuckFilter, StuckReason
from infra.settings import Settings
from workflows.models import BundleStatus, BundleTimelineView, StepState, StepStatus, StepTimelineView

NOW = datetime(2026, 12, 6, 14, 2, tzinfo=UTC)


def engine() -> OpsEngine:
    return OpsEngine(client=None, settings=Settings(environment="test", task_queue_prefix="acme"))  # type: ignore[arg-type]  # no server needed


def test_stuck_query_scopes_to_the_deployment_and_quotes_values() -> None:
    query = engine().stuck_query(
        StuckFilter(
            bundle_id="newborn-on",
            system="esdc-sin",
            reason=StuckReason.REPLY_OVERDUE,
            jurisdiction="CA-ON' OR 'x'='x",
            older_than=timedelta(hours=2),
        ),
        now=NOW,
    )
    assert query == (
        "TellonceStuck = true AND ExecutionStatus = 'Running' AND TaskQueue = 'acme.bundles' "
        "AND TellonceBundleId = 'newborn-on' AND TellonceJurisdiction = 'CA-ON\\' OR \\'x\\'=\\'x' "
        "AND TellonceStuckSystems = 'esdc-sin' AND TellonceStuckReasons = 'reply_overdue' "
        "AND TellonceStuckSince <= '2026-12-06T12:02:00Z'"
    )


def view(payload: dict[str, Any]) -> BundleTimelineView:
    step = StepStatus(
        id="birth_certificate",
        program={"en": "c", "fr": "c"},
        organization={"en": "o", "fr": "o"},
        level="provincial",
        system="on-certificates",
        state=StepState.NEEDS_ATTENTION,
    )
    status = BundleStatus(
        submission_id="t-1",
        bundle_id="newborn-on",
        definition_version=1,
        jurisdiction="CA-ON",
        state="needs_attention",
        received_at=NOW,
        updated_at=NOW,
        steps=[step],
    )
    return BundleTimelineView(status=status, steps=[StepTimelineView(status=step, payload=payload)])


PAYLOAD = {"child": {"given_names": "Zoé", "surname": "Tremblay"}}


def test_amend_errors_name_the_amended_field_with_the_submission_rules() -> None:
    errors = engine()._amend_errors(view(PAYLOAD), "birth_certificate", {"child": {"surname": "Tr3mbl@y"}})
    assert [e.path for e in errors] == ["child.surname"]
    assert errors[0].message.en and errors[0].message.fr


def test_amend_refuses_fields_the_step_does_not_receive() -> None:
    errors = engine()._amend_errors(view(PAYLOAD), "birth_certificate", {"parent": {"sin": "046454286"}})
    assert [(e.path, e.code) for e in errors] == [("parent.sin", "not_received")]


def test_a_valid_amendment_has_no_errors() -> None:
    assert (
        engine()._amend_errors(view(PAYLOAD), "birth_certificate", {"child": {"surname": "Bélanger"}}) == []
    )


async def test_an_unknown_system_is_refused_by_the_engine_before_temporal_is_asked() -> None:
    # The client is None: reaching Temporal would raise AttributeError, not LookupError.
    ops = engine()
    with pytest.raises(LookupError, match="no legacy system no-such-system"):
        await ops.pause("no-such-system", "ops-lead", "planned")
    with pytest.raises(LookupError):
        await ops.resume("no-such-system", "ops-lead", "back")
    with pytest.raises(LookupError):
        await ops.system_state("no-such-system")
    with pytest.raises(LookupError):
        await start_system_control(None, ops.settings, "no-such-system")  # type: ignore[arg-type]  # never reached
    assert "esdc-sin" in known_systems(ops.settings)
