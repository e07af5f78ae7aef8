"""Retry transient failures in place, with capped exponential backoff, for as long as it takes.

A record whose effect cannot be made durable yet (Temporal unavailable, a timeout, the broker
refusing a DLQ write) is neither committed nor dead-lettered: its batch waits here, and the
partition resumes in order once the dependency is back. Only the exception's type and status
are logged: a message may quote data.

One failure is never retried, whatever the caller says: Temporal refusing the request itself
(`INVALID_ARGUMENT`, e.g. a payload or memo over its size limit, an invalid id). The same
request would be refused forever and block its partition, so it is raised for the caller to
dead-letter (`rejected_by_temporal`). Statuses that depend on the deployment rather than on the
record stay transient: `FAILED_PRECONDITION` is also a namespace that is not active during a
failover, `PERMISSION_DENIED`/`UNAUTHENTICATED` an expired credential; dead-lettering every
record until an operator notices would be worse than waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from temporalio.service import RPCError, RPCStatusCode

log = structlog.get_logger("tellonce.streams")

T = TypeVar("T")

FIRST_DELAY = 0.2
MAX_DELAY = 30.0
ATTEMPT_TIMEOUT = 30.0
"""Seconds one attempt may take; a start that times out is retried and found by its id."""


REJECTED_STATUSES = frozenset({RPCStatusCode.INVALID_ARGUMENT})
"""Temporal statuses that mean "this request will never be accepted", never retried."""


def _never(_: BaseException) -> bool:
    return False


def rejected_by_temporal(exc: BaseException) -> bool:
    """True when Temporal refused the request itself: retrying the same request cannot help."""
    return isinstance(exc, RPCError) and exc.status in REJECTED_STATUSES


def error_fields(exc: BaseException) -> dict[str, Any]:
    """Loggable facts about an error: its type, and a gRPC status when it has one."""
    fields: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, RPCError):
        fields["status"] = exc.status.name
    return fields


async def until_done(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    permanent: Callable[[BaseException], bool] = _never,
    where: dict[str, Any] | None = None,
) -> T:
    """Run `attempt` until it succeeds or fails permanently.

    Args:
        attempt: One try; called again after each transient failure.
        what: What is being tried, for the log (`start_bundle`, `dlq_publish`, ...).
        permanent: True for an exception that retrying cannot fix; it is raised at once, as is
            one `rejected_by_temporal` accepts.
        where: Fields that locate the record in logs (topic, partition, offset).

    Raises:
        Exception: The first exception `permanent` or `rejected_by_temporal` accepts.
    """
    delay = FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        try:
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` wraps the attempt in a
            # task of its own, one more task and loop pass for every record of every batch.
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if permanent(exc) or rejected_by_temporal(exc):
                raise
            log.warning(
                "streams.retrying", what=what, attempt=tries, delay_s=round(delay, 2), **error_fields(exc),
                **(where or {}),
            )  # fmt: skip
        # Jitter keeps a batch's concurrent retries from hammering a recovering server together.
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - not for security
        delay = min(delay * 2, MAX_DELAY)
