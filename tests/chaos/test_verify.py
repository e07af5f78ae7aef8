"""The resilience suite's judge of the ledgers can fail: each breach it exists to catch is caught.

No servers: ledgers and final statuses are made up here, one breach at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bundles.models import LocalizedText
from tests.chaos.verify import Effect, LedgerFindings, judge_ledgers
from workflows.models import BundleState, BundleStatus, StepState, StepStatus

pytestmark = pytest.mark.chaos

NOW = datetime(2026, 12, 1, tzinfo=UTC)
TID = "11111111-1111-4111-8111-111111111111"
DEDUPES = {"on-identity": True, "cra-address": True, "resp-referral": False}
COMPENSABLE = {"address-change-on": {"cra"}}


def step(step_id: str, system: str, state: StepState) -> StepStatus:
    text = LocalizedText(en=step_id, fr=step_id)
    return StepStatus(
        id=step_id, program=text, organization=text, level="federal", system=system, state=state
    )


def bundle(state: BundleState, cra: StepState) -> dict[str, BundleStatus]:
    status = BundleStatus(
        submission_id=TID,
        bundle_id="address-change-on",
        definition_version=1,
        jurisdiction="CA-ON",
        state=state,
        received_at=NOW,
        updated_at=NOW,
        steps=[step("identity_check", "on-identity", StepState.DONE), step("cra", "cra-address", cra)],
    )
    return {TID: status}


def effect(
    system: str, step_id: str, operation: str = "submit", reference: str = "R1", tid: str = TID
) -> Effect:
    key_operation = "submit" if operation == "submit" else "compensate"
    return Effect(
        system=system,
        operation=operation,
        key=f"{tid}:{step_id}:{key_operation}",
        tracking_id=tid,
        step=step_id,
        reference=reference,
        outcome="accepted" if operation == "submit" else "restored",
        duplicate_of=None,
        replays=0,
    )


def judge(effects: list[Effect], statuses: dict[str, BundleStatus]) -> LedgerFindings:
    return judge_ledgers(effects, DEDUPES, statuses, COMPENSABLE)


def test_a_clean_completed_bundle_passes() -> None:
    found = judge(
        [effect("on-identity", "identity_check", reference="ID1"), effect("cra-address", "cra")],
        bundle(BundleState.COMPLETED, StepState.DONE),
    )
    assert found.problems == [] and found.duplicates == [] and found.strays == []
    assert (found.compensations_expected, found.compensations_found) == (0, 0)


def test_a_withdrawn_bundle_undone_once_passes() -> None:
    found = judge(
        [
            effect("on-identity", "identity_check", reference="ID1"),
            effect("cra-address", "cra"),
            effect("cra-address", "cra", operation="cancel"),
        ],
        bundle(BundleState.WITHDRAWN, StepState.COMPENSATED),
    )
    assert found.problems == []
    assert (found.compensations_expected, found.compensations_found) == (1, 1)


def test_the_same_request_twice_is_a_duplicate_where_the_system_dedupes() -> None:
    twice = [effect("cra-address", "cra"), effect("cra-address", "cra")]
    found = judge(
        [effect("on-identity", "identity_check"), *twice], bundle(BundleState.COMPLETED, StepState.DONE)
    )
    assert found.duplicates == [f"cra-address: submit {TID}:cra:submit x2"]


def test_a_duplicate_at_a_system_without_deduplication_is_reported_apart() -> None:
    found = judge(
        [effect("resp-referral", "cra"), effect("resp-referral", "cra")],
        bundle(BundleState.COMPLETED, StepState.DONE),
    )
    assert found.duplicates == []
    assert len(found.visible_duplicates) == 1


def test_a_completed_bundle_must_not_be_cancelled() -> None:
    found = judge(
        [
            effect("on-identity", "identity_check"),
            effect("cra-address", "cra"),
            effect("cra-address", "cra", operation="cancel"),
        ],
        bundle(BundleState.COMPLETED, StepState.DONE),
    )
    assert any("nothing here is to be undone" in p for p in found.problems)


def test_a_withdrawn_bundle_must_undo_what_took_effect() -> None:
    found = judge(
        [effect("on-identity", "identity_check"), effect("cra-address", "cra")],
        bundle(BundleState.WITHDRAWN, StepState.DONE),
    )
    assert any("not undone" in p for p in found.problems)
    assert any("expected one cancellation of R1" in p for p in found.problems)
    assert (found.compensations_expected, found.compensations_found) == (1, 0)


def test_a_cancellation_must_name_the_request_that_took_effect() -> None:
    found = judge(
        [
            effect("on-identity", "identity_check"),
            effect("cra-address", "cra"),
            effect("cra-address", "cra", operation="cancel", reference="R2"),
        ],
        bundle(BundleState.FAILED, StepState.COMPENSATED),
    )
    assert any("expected one cancellation of R1, found ['R2']" in p for p in found.problems)


def test_a_done_step_needs_its_request_in_the_ledger() -> None:
    found = judge([effect("on-identity", "identity_check")], bundle(BundleState.COMPLETED, StepState.DONE))
    assert any("done with 0 accepted requests" in p for p in found.problems)


def test_effects_of_unknown_bundles_and_at_the_wrong_system_are_caught() -> None:
    other = "22222222-2222-4222-8222-222222222222"
    found = judge(
        [
            effect("on-identity", "identity_check"),
            effect("on-identity", "cra"),
            effect("cra-address", "cra", tid=other),
        ],
        bundle(BundleState.COMPLETED, StepState.DONE),
    )
    assert found.strays == [f"cra-address: submit {other}:cra:submit"]
    assert any("effects at a system other than cra-address" in p for p in found.problems)
