"""The adapter contract: what an integrator implements to connect one legacy system.

An adapter turns a step's projected fields into a call to its legacy system and classifies
every outcome into one of three errors, or a result. A system that answers later (a batch
file, a message queue) returns `SubmitResult(pending_reply=True)`; its answer comes back as an
`AsyncReply`, read by the adapter itself (`PolledReplies`) or from `legacy.<system>.replies`.

* `TransientError` — try again later (outage, timeout, 5xx, 429). tellonce retries with
  backoff, always with the same idempotency key. Its `ClosedError` says the system is closed
  (availability window, maintenance) until a known time: tellonce waits without counting it.
* `RejectedError` — the system refused for good; carries a reason a resident can read,
  in English and French.
* `NeedsAttentionError` — the system wants a person to look (e.g. a name mismatch);
  an operator decides to retry, amend, skip or fail.

Adapters must never put personal data in an error's `code` or `detail`: both end up in
logs and in Temporal's failure records.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field

from bundles.models import LocalizedText

if TYPE_CHECKING:
    import httpx

    from adapters.availability import Availability
    from infra.settings import Settings

Operation = Literal["submit", "compensate", "status"]


@dataclass(frozen=True)
class CallContext:
    """What an adapter knows about the call it is making.

    Attributes:
        idempotency_key: Stable for one bundle, step and operation across every retry,
            worker crash and replay. Send it to the legacy system so it can de-duplicate.
        bundle_ref: The bundle's workflow id (the submission id); no personal data.
        step_id: The step of the bundle this call serves.
        operation: `submit`, `compensate` or `status`.
        attempt: 1 for the first try, then 2, 3, ...
        deadline: When the caller stops waiting for this call; set client timeouts to it.
        log: A structlog logger already bound with bundle, step and attempt.
    """

    idempotency_key: str
    bundle_ref: str
    step_id: str
    operation: Operation
    attempt: int
    deadline: datetime
    log: structlog.typing.FilteringBoundLogger = field(
        default_factory=lambda: structlog.get_logger("tellonce.adapter")
    )

    def remaining(self, now: datetime) -> timedelta:
        """Time left before the deadline (never negative)."""
        return max(self.deadline - now, timedelta(0))


class StepRequest(BaseModel):
    """The data a step may send: its projection of the submission, nothing more."""

    model_config = ConfigDict(frozen=True)

    fields: dict[str, Any]


class SubmitResult(BaseModel):
    """A legacy system's acceptance of a request."""

    model_config = ConfigDict(frozen=True)

    reference: str = Field(min_length=1, description="The legacy system's reference (no personal data).")
    message: LocalizedText | None = None
    pending_reply: bool = Field(
        default=False,
        description=(
            "The system only acknowledged receipt: its answer arrives later as a reply correlated by "
            "the request's idempotency key, and the step waits for it in `waiting_reply`."
        ),
    )


class CompensationRequest(BaseModel):
    """Undo a request that a system accepted earlier."""

    model_config = ConfigDict(frozen=True)

    reference: str
    fields: dict[str, Any]


class CompensationResult(BaseModel):
    """A legacy system's confirmation that a request was undone."""

    model_config = ConfigDict(frozen=True)

    reference: str | None = None
    message: LocalizedText | None = None


class StatusResult(BaseModel):
    """What a legacy system says about a request it accepted."""

    model_config = ConfigDict(frozen=True)

    reference: str
    state: str
    message: LocalizedText | None = None


class AdapterError(Exception):
    """Base of the error taxonomy. `code` is short, stable and free of personal data."""

    def __init__(self, code: str, message: LocalizedText, *, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.message = message
        self.detail = detail


class TransientError(AdapterError):
    """Try again later; `retry_after` honours the system's own hint (e.g. 429 Retry-After)."""

    def __init__(
        self,
        code: str,
        message: LocalizedText | None = None,
        *,
        detail: str = "",
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(code, message or TEMPORARILY_UNAVAILABLE, detail=detail)
        self.retry_after = retry_after


class ClosedError(TransientError):
    """The system is closed (a daily availability window or planned maintenance) until `retry_after`.

    Not a failure: nothing was sent, so tellonce waits until the system opens without counting
    an attempt or burning the step's retries.
    """

    def __init__(self, code: str = "closed", *, reopens_in: timedelta, detail: str = "") -> None:
        super().__init__(code, SYSTEM_CLOSED, detail=detail, retry_after=reopens_in)


class RejectedError(AdapterError):
    """The system refused the request for good; `message` tells the resident why."""


class NeedsAttentionError(AdapterError):
    """The system wants a person to decide (e.g. a name that does not match its records)."""


TEMPORARILY_UNAVAILABLE = LocalizedText(
    en="The program's system is temporarily unavailable; we will try again automatically.",
    fr="Le système du programme est temporairement indisponible; nous réessaierons automatiquement.",
)


SYSTEM_CLOSED = LocalizedText(
    en="The program's system is closed at this hour; we will send your request as soon as it opens.",
    fr="Le système du programme est fermé à cette heure; nous enverrons votre demande dès son ouverture.",
)


class AsyncReply(BaseModel):
    """A legacy system's later answer to a request that was only acknowledged (`pending_reply`).

    `correlation_id` is the request's idempotency key; `reply_id` identifies this answer (e.g.
    `<reply file>:<line>`) so that reading the same reply twice applies it once.
    """

    model_config = ConfigDict(frozen=True)

    correlation_id: str
    reply_id: str
    outcome: Literal["accepted", "rejected", "needs_attention"]
    reference: str | None = Field(default=None, description="The system's reference; no personal data.")
    code: str | None = Field(default=None, description="The system's reason code when not accepted.")
    message: LocalizedText | None = None


class ReplyBatch(BaseModel):
    """Replies read from one unit of a legacy system's output (a reply file), not yet acknowledged.

    `problems` names lines that could not be read (line number and a code, never their content):
    such a line's request gets no reply and reaches its step's reply deadline, where an operator looks.
    """

    model_config = ConfigDict(frozen=True)

    receipt: str = Field(min_length=1, description="What `acknowledge` needs to mark the unit as read.")
    replies: tuple[AsyncReply, ...] = ()
    problems: tuple[str, ...] = ()
    complete: bool = Field(
        default=True,
        description=(
            "False when the unit looks unfinished (e.g. a reply file without its trailer, perhaps "
            "still being written): its readable replies are delivered, but it is not acknowledged, "
            "so the rest is read once it is whole."
        ),
    )


class PolledReplies(abc.ABC):
    """Mixin of adapters whose system answers later in output that tellonce must fetch (batch files).

    tellonce calls `fetch_replies` periodically, hands every reply to its bundle, and only then
    calls `acknowledge` for the batch: a crash in between means the batch is read again, and its
    replies (same `reply_id`) are applied once.
    """

    @abc.abstractmethod
    async def fetch_replies(self, ctx: CallContext) -> list[ReplyBatch]:
        """Read the reply units waiting at the system, oldest first, without consuming them."""

    @abc.abstractmethod
    async def acknowledge(self, ctx: CallContext, receipt: str) -> None:
        """Mark a reply unit as read (idempotent: acknowledging twice is harmless)."""


class Adapter(abc.ABC):
    """One legacy system. Subclasses set `system` and implement `submit`.

    `submit` and `compensate` must be idempotent on `ctx.idempotency_key`: tellonce may call
    them more than once for the same step (a retry after a timeout, a worker restart).
    """

    system: ClassVar[str]
    availability: Availability | None = None
    """When the system is open; None for always. Set per deployment from settings (`from_settings`)."""

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient | None = None) -> Self:
        """The adapter as a deployment configures it (endpoints, credentials, availability).

        Args:
            settings: The deployment's settings (`Settings.legacy_system(cls.system)` for its own).
            http_client: An httpx client to share, for adapters that speak HTTP; the caller closes it.
        """
        raise NotImplementedError(f"{cls.__name__} does not say how settings configure it")

    @abc.abstractmethod
    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        """Send the step's request to the legacy system."""

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        """Undo an accepted request. Systems whose actions cannot be undone keep this default."""
        raise RejectedError(
            "compensation_unsupported",
            LocalizedText(
                en="This program's action cannot be undone automatically.",
                fr="L'action de ce programme ne peut pas être annulée automatiquement.",
            ),
        )

    async def status(self, ctx: CallContext, reference: str) -> StatusResult | None:
        """Ask the legacy system about an accepted request; None when it cannot say."""
        return None

    async def aclose(self) -> None:
        """Release connections; called once when the worker stops."""
        return
