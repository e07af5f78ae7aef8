"""The step activities alone (ActivityEnvironment): closed systems are not called, errors are classified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.models import (
    STEP_CLOSED,
    STEP_REJECTED,
    STEP_TRANSIENT,
    ErrorDetails,
    StepCall,
    StepCallResult,
)
from activities.steps import BundleActivities
from adapters.availability import Availability, MaintenanceWindow
from adapters.sdk import (
    SYSTEM_CLOSED,
    Adapter,
    AdapterError,
    CallContext,
    ClosedError,
    CompensationRequest,
    CompensationResult,
    RejectedError,
    StepRequest,
    SubmitResult,
    TransientError,
)
from bundles.models import LocalizedText

SURNAME = "Bélanger-Tremblay"  # personal data: must never reach a log or an error


class RecordingAdapter(Adapter):
    """Records the operations it is asked for; raises `error` when one is set."""

    system = "recording"

    def __init__(self, availability: Availability | None = None, error: AdapterError | None = None) -> None:
        self.availability = availability
        self.error = error
        self.calls: list[str] = []

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        self.calls.append("submit")
        if self.error is not None:
            raise self.error
        return SubmitResult(reference="REC-1")

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        self.calls.append("compensate")
        return CompensationResult(reference=request.reference)


def step_call() -> StepCall:
    return StepCall(
        bundle_ref="sub-1",
        bundle_id="newborn-on",
        step_id="ccb",
        system="recording",
        idempotency_key="sub-1:ccb:submit",
        attempt=1,
        timeout=timedelta(seconds=10),
        fields={"parent": {"surname": SURNAME}},
        reference="REC-1",
    )


def closed_for(duration: timedelta) -> Availability:
    now = datetime.now(UTC)
    return Availability(
        maintenance=(MaintenanceWindow(start=now - timedelta(minutes=1), end=now + duration),)
    )


def details_of(error: ApplicationError) -> ErrorDetails:
    return ErrorDetails.model_validate(error.details[0])


@pytest.mark.parametrize("operation", ["invoke_step", "compensate_step"])
async def test_a_closed_system_is_not_called_and_the_step_waits_for_its_reopening(operation: str) -> None:
    adapter = RecordingAdapter(availability=closed_for(timedelta(hours=2)))
    activities = BundleActivities({"recording": adapter})
    run = activities.invoke_step if operation == "invoke_step" else activities.compensate_step

    with capture_logs() as logs, pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(run, step_call())

    assert adapter.calls == []
    assert raised.value.type == STEP_CLOSED
    assert raised.value.non_retryable
    details = details_of(raised.value)
    assert details.code == "closed"
    assert details.message == SYSTEM_CLOSED
    assert details.retry_after is not None
    assert timedelta(hours=2) - timedelta(minutes=1) < details.retry_after <= timedelta(hours=2)
    closed = [entry for entry in logs if entry["event"] == "step.system_closed"]
    assert len(closed) == 1
    assert closed[0]["source"] == "calendar"
    assert datetime.fromisoformat(closed[0]["reopens_at"]) > datetime.now(UTC) + timedelta(minutes=119)
    assert SURNAME not in repr(logs)
    assert SURNAME not in str(raised.value)


async def test_an_open_calendar_lets_the_call_through() -> None:
    now = datetime.now(UTC)
    over = Availability(
        maintenance=(MaintenanceWindow(start=now - timedelta(hours=2), end=now - timedelta(hours=1)),)
    )
    adapter = RecordingAdapter(availability=over)
    result = await ActivityEnvironment().run(
        BundleActivities({"recording": adapter}).invoke_step, step_call()
    )
    assert result == StepCallResult(reference="REC-1")
    assert adapter.calls == ["submit"]


async def test_a_system_saying_it_is_closed_is_a_closed_step() -> None:
    adapter = RecordingAdapter(error=ClosedError("closed_for_maintenance", reopens_in=timedelta(minutes=45)))
    with capture_logs() as logs, pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(BundleActivities({"recording": adapter}).invoke_step, step_call())
    assert adapter.calls == ["submit"]
    assert raised.value.type == STEP_CLOSED
    assert raised.value.non_retryable
    assert details_of(raised.value) == ErrorDetails(
        code="closed_for_maintenance", message=SYSTEM_CLOSED, retry_after=timedelta(minutes=45)
    )
    closed = [entry for entry in logs if entry["event"] == "step.system_closed"]
    assert [(e["source"], e["reopens_in_s"]) for e in closed] == [("system", 2700.0)]


async def test_other_transient_errors_stay_transient_with_their_hint() -> None:
    adapter = RecordingAdapter(error=TransientError("rate_limited", retry_after=timedelta(seconds=90)))
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(BundleActivities({"recording": adapter}).invoke_step, step_call())
    assert raised.value.type == STEP_TRANSIENT
    assert details_of(raised.value).retry_after == timedelta(seconds=90)


async def test_rejections_are_unchanged() -> None:
    refusal = RejectedError("not_eligible", LocalizedText(en="Not eligible.", fr="Non admissible."))
    adapter = RecordingAdapter(error=refusal)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(BundleActivities({"recording": adapter}).invoke_step, step_call())
    assert raised.value.type == STEP_REJECTED
    assert details_of(raised.value).code == "not_eligible"
