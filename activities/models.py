"""Inputs and outputs of the step activities."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bundles.models import LocalizedText


class StepCall(BaseModel):
    """One call to one legacy system for one bundle step."""

    model_config = ConfigDict(extra="ignore")

    bundle_ref: str
    bundle_id: str
    step_id: str
    system: str
    idempotency_key: str
    attempt: int
    timeout: timedelta
    fields: dict[str, Any]
    reference: str | None = None
    control_pass: int | None = Field(
        default=None,
        description=(
            "The generation of the system's control state that released this held call: the "
            "call goes even if this worker's copy of that state is older."
        ),
    )


class StepCallResult(BaseModel):
    """A legacy system's answer to a successful call."""

    model_config = ConfigDict(extra="ignore")

    reference: str | None
    message: LocalizedText | None = None
    pending_reply: bool = False


class ErrorDetails(BaseModel):
    """Carried as the details of every `ApplicationError` a step activity raises."""

    model_config = ConfigDict(extra="ignore")

    code: str
    message: LocalizedText
    retry_after: timedelta | None = None
    explanation: str | None = Field(
        default=None, description="With `SystemHeld`: why calls to the system are held, in plain words."
    )
    held_reason: str | None = Field(
        default=None, description="With `SystemHeld`: `system_paused` or `breaker_open`."
    )


STEP_TRANSIENT = "StepTransient"
STEP_CLOSED = "StepClosed"
"""The system is closed (availability window, maintenance) until `ErrorDetails.retry_after`: nothing sent."""
STEP_HELD = "SystemHeld"
"""The system is paused or its circuit breaker is open: nothing sent, the call waits for its release."""
STEP_REJECTED = "StepRejected"
STEP_NEEDS_ATTENTION = "StepNeedsAttention"
UNKNOWN_SYSTEM = "UnknownSystem"
