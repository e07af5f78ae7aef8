"""Contract test kit: checks every adapter and legacy system pair must pass before a bundle uses it.

Declare a `ContractSpec` next to the adapter and run `tellonce adapters check`, or run the checks
from your own tests against the legacy sandbox (or any double that speaks its admin API)::

    case = ContractCase(
        adapter=MyAdapter.from_settings(settings),
        admin=SandboxAdmin(sandbox_url),
        sample=StepRequest(fields={...}),   # projected fields the system accepts
        probe_field="child.surname",        # a path in the *system's* request the sample sets
        key_prefix=new_key_prefix(),        # unique per run: faults and ledgers are scoped to it
    )
    await run_contract(case)

Each check sets faults only for keys that start with `key_prefix`, so tests sharing one sandbox
do not disturb each other, and clears them when it ends. A failed check raises
`ContractViolationError` (an `AssertionError`) naming the rule, what was expected, what happened
and the likely fix.

Systems that answer later (`SubmitResult.pending_reply`) are checked on their reply: the case's
`await_reply` waits for it. Adapters that read replies themselves (`PolledReplies`) are polled by
default; message-queue adapters name a `ContractSpec.reply_waiter`
(`adapters.contracts.message_queue_replies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.mapping import MISSING, get_path, leaf_paths
from adapters.sdk import (
    Adapter,
    AdapterError,
    AsyncReply,
    CallContext,
    ClosedError,
    CompensationRequest,
    NeedsAttentionError,
    Operation,
    PolledReplies,
    RejectedError,
    StepRequest,
    SubmitResult,
    TransientError,
)
from bundles.models import LocalizedText
from infra.sandbox.client import SandboxAdmin

if TYPE_CHECKING:
    from infra.settings import Settings

ErrorT = TypeVar("ErrorT", bound=Exception)

REJECT_CODE = "contract_rejected"
REVIEW_CODE = "contract_review"
CHECK_TIME_LIMIT = timedelta(minutes=2)
"""A check that has not ended after this long fails (an adapter that hangs)."""
DEADLINE_SLACK = timedelta(seconds=1)
"""How far past its deadline a call may end (event loop and connection teardown)."""
SHORT_DEADLINE = timedelta(milliseconds=400)
"""The deadline of the calls that meet a slow system (which answers after `SLOW_ANSWER_MS`)."""
SLOW_ANSWER_MS = 2_000

ReplyWaiter = Callable[[str, timedelta], Awaitable[AsyncReply]]
"""Waits for the system's reply to the request with an idempotency key, at most a given time."""

TAXONOMY = (TransientError, RejectedError, NeedsAttentionError)
"""What an adapter may raise (`ClosedError` is a `TransientError`)."""

NOT_PERSONAL_ROOTS = frozenset({"references", "language", "certificate"})
"""Sample sections that hold no personal data: system references, a language, an order's options."""
MIN_PERSONAL_LENGTH = 5
"""Shorter sample values (`F`, `ON`) are too common in any text to tell a leak from chance."""

SEND_KEY = "send ctx.idempotency_key unchanged to the system (header, SOAP header, file column, message key)"
CATCH_CLIENT_ERRORS = "catch the client library's errors and raise a taxonomy error instead"
FIXES: dict[type[Exception], str] = {
    TransientError: "classify outages, timeouts, 5xx and 429 as TransientError "
    "(adapters.http.error_for_status does it for HTTP)",
    ClosedError: "raise ClosedError(reopens_in=...) when the system says it is closed "
    "(503 closed_for_maintenance with a Retry-After)",
    RejectedError: "classify the system's business refusal as RejectedError, with its code and "
    "bilingual message",
    NeedsAttentionError: "classify 'a person must review' answers as NeedsAttentionError, with the "
    "system's code",
}


class ContractViolationError(AssertionError):
    """An adapter broke the contract; the message says which rule and how."""


def violation(rule: str, expected: str, got: str, fix: str) -> ContractViolationError:
    """A violation whose message gives the rule, what was expected, what happened and the likely fix."""
    return ContractViolationError(f"[{rule}] expected {expected}; got {got}. Fix: {fix}")


def require(condition: bool, rule: str, expected: str, got: str, fix: str) -> None:
    """Raise a `violation` unless `condition` holds."""
    if not condition:
        raise violation(rule, expected, got, fix)


def expect(condition: bool, message: str) -> None:
    """Raise `ContractViolationError` with `message` unless `condition` holds."""
    if not condition:
        raise ContractViolationError(message)


@dataclass(frozen=True)
class ContractCase:
    """One adapter under test.

    Attributes:
        adapter: The adapter, pointed at the sandbox.
        admin: The sandbox's admin client.
        sample: Projected fields the system accepts (synthetic data only).
        probe_field: A dotted path in the system's own request format that `sample` sets; the
            rejection and review checks make the system refuse requests holding its value.
        key_prefix: Prefix of every idempotency key the checks use; unique per run. Keys look
            like tellonce's own: `<prefix><check>:<operation>`.
        dedupes: Whether the system de-duplicates on idempotency keys (False: the checks
            expect duplicates to be visible in the ledger instead).
        call_timeout: Deadline of an ordinary call.
        await_reply: For systems that answer later: waits for the reply to a key. Without one,
            `PolledReplies` adapters are polled (`fetch_replies`, never acknowledging).
        reply_timeout: How long a check waits for one reply.
        unreachable: Builds a copy of the adapter whose endpoint nothing listens on. Default:
            `type(adapter).from_settings(...)` with every endpoint on a closed local port.
    """

    adapter: Adapter
    admin: SandboxAdmin
    sample: StepRequest
    probe_field: str
    key_prefix: str
    dedupes: bool = True
    call_timeout: timedelta = timedelta(seconds=10)
    await_reply: ReplyWaiter | None = None
    reply_timeout: timedelta = timedelta(seconds=30)
    unreachable: Callable[[], Adapter] | None = None

    @property
    def system(self) -> str:
        """The system id of the adapter under test."""
        return self.adapter.system

    def key(self, name: str, operation: Operation = "submit") -> str:
        """An idempotency key of this run, shaped like tellonce's: `<prefix><name>:<operation>`."""
        return f"{self.key_prefix}{name}:{operation}"

    def context(
        self,
        key: str,
        *,
        operation: Operation = "submit",
        attempt: int = 1,
        timeout: timedelta | None = None,
    ) -> CallContext:
        """A call context for one call of a check."""
        return call_context(key, operation=operation, attempt=attempt, timeout=timeout or self.call_timeout)

    async def effects(self, key: str) -> list[dict[str, Any]]:
        """The ledger entries of exactly this key."""
        entries = await self.admin.ledger(self.system, key_prefix=key)
        return [entry for entry in entries if entry["idempotency_key"] == key]

    @contextlib.asynccontextmanager
    async def faults(self, **faults: Any) -> AsyncIterator[None]:
        """Set faults for this run's keys only, and clear them however the block ends."""
        await self.admin.set_faults(self.system, key_prefix=self.key_prefix, **faults)
        try:
            yield
        finally:
            await self.admin.clear_faults(self.system)


def call_context(
    key: str,
    *,
    operation: Operation = "submit",
    attempt: int = 1,
    timeout: timedelta = timedelta(seconds=10),
    bundle_ref: str = "contract-bundle",
    step_id: str = "contract",
) -> CallContext:
    """A call context as tellonce's step activities build one, for calling an adapter in tests.

    Args:
        key: The idempotency key.
        operation: `submit`, `compensate` or `status`.
        attempt: 1 for a first try.
        timeout: Time from now until the call's deadline.
        bundle_ref: The bundle's id (no personal data).
        step_id: The step the call serves.
    """
    return CallContext(
        idempotency_key=key,
        bundle_ref=bundle_ref,
        step_id=step_id,
        operation=operation,
        attempt=attempt,
        deadline=datetime.now(UTC) + timeout,
    )


def new_key_prefix() -> str:
    """A fresh key prefix for one run of the kit (no personal data, unique enough to share a sandbox)."""
    return f"contract-{secrets.token_hex(6)}:"


def describe(exc: BaseException) -> str:
    """An error as a check reports it: its kind and code, never its message (it may quote data)."""
    if isinstance(exc, AdapterError):
        return f"{type(exc).__name__}({exc.code!r})"
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


async def expect_error(kind: type[ErrorT], call: Awaitable[object], rule: str) -> ErrorT:
    """Await `call` and return the error of type `kind` it must raise.

    Args:
        kind: The taxonomy error the call must raise.
        call: The adapter call (or a settled submit).
        rule: The rule and situation, e.g. `unavailable_is_transient (503)`.
    """
    fix = FIXES.get(kind, f"raise {kind.__name__}")
    try:
        result = await call
    except kind as exc:
        return exc
    except ContractViolationError:
        raise
    except Exception as exc:
        if not isinstance(exc, AdapterError):
            fix = f"{CATCH_CLIENT_ERRORS}; {fix}"
        raise violation(rule, kind.__name__, describe(exc), fix) from exc
    raise violation(rule, kind.__name__, f"a result ({type(result).__name__})", fix)


# --- replies of systems that answer later --------------------------------------------------------


async def poll_replies(adapter: PolledReplies, key: str, within: timedelta) -> AsyncReply:
    """Poll `adapter.fetch_replies` (without acknowledging) until a reply to `key` appears.

    Raises:
        ContractViolationError: No reply to `key` in time, or `fetch_replies` raised an error
            outside the taxonomy.
    """
    deadline = time.monotonic() + within.total_seconds()
    while True:
        ctx = call_context(f"{key}-replies", operation="status")
        try:
            batches = await adapter.fetch_replies(ctx)
        except TransientError:
            batches = []
        except Exception as exc:
            raise violation(
                "fetch_replies",
                "replies or a taxonomy error",
                describe(exc),
                "report unreadable reply lines in ReplyBatch.problems; raise TransientError for outages",
            ) from exc
        for batch in batches:
            for reply in batch.replies:
                if reply.correlation_id == key:
                    return reply
        if time.monotonic() >= deadline:
            raise violation(
                "pending_reply",
                f"a reply to {key} within {within.total_seconds():g}s",
                "none in any reply batch",
                "the system's replies must carry the request's idempotency key as correlation id",
            )
        await asyncio.sleep(0.25)


async def reply_for(case: ContractCase, key: str) -> AsyncReply:
    """The system's later reply to the request with `key`."""
    if case.await_reply is not None:
        reply = await case.await_reply(key, case.reply_timeout)
    elif isinstance(case.adapter, PolledReplies):
        reply = await poll_replies(case.adapter, key, case.reply_timeout)
    else:
        raise violation(
            "pending_reply",
            "a way to wait for the system's reply",
            "a submit with pending_reply=True and no ContractCase.await_reply",
            "give the ContractSpec a reply_waiter (adapters.contracts.message_queue_replies for queues) "
            "or the ContractCase an await_reply",
        )
    expect(
        reply.correlation_id == key,
        f"[pending_reply] the waiter returned a reply to {reply.correlation_id!r} when asked for {key!r}",
    )
    return reply


REPLY_REJECTED = LocalizedText(en="The program refused the request.", fr="Le programme a refusé la demande.")
REPLY_REVIEW = LocalizedText(
    en="The program must review this request.", fr="Le programme doit examiner cette demande."
)


async def settle(case: ContractCase, key: str, result: SubmitResult) -> SubmitResult:
    """The final outcome of a submit: itself, or for a pending submit what the reply says.

    Raises:
        RejectedError: The reply refused the request (its code and message, if it has them).
        NeedsAttentionError: The reply asks a person to look.
    """
    if not result.pending_reply:
        return result
    reply = await reply_for(case, key)
    if reply.outcome == "rejected":
        raise RejectedError(reply.code or "rejected", reply.message or REPLY_REJECTED, detail="reply")
    if reply.outcome == "needs_attention":
        raise NeedsAttentionError(reply.code or "needs_review", reply.message or REPLY_REVIEW, detail="reply")
    require(
        bool(reply.reference),
        "pending_reply",
        "an accepted reply to carry the system's reference",
        f"none in the reply to {key}",
        "put the system's reference in the reply",
    )
    return SubmitResult(reference=reply.reference or "-", message=reply.message)


async def submit(
    case: ContractCase, key: str, *, attempt: int = 1, sample: StepRequest | None = None
) -> SubmitResult:
    """Submit the sample with a key: the adapter's own answer (maybe only a receipt)."""
    return await case.adapter.submit(case.context(key, attempt=attempt), sample or case.sample)


async def submit_settled(
    case: ContractCase, key: str, *, attempt: int = 1, sample: StepRequest | None = None
) -> SubmitResult:
    """Submit the sample with a key and wait for the final outcome (the reply, if it comes later)."""
    return await settle(case, key, await submit(case, key, attempt=attempt, sample=sample))


Outcome = SubmitResult | Exception


async def outcome_of(call: Awaitable[SubmitResult]) -> Outcome:
    """The call's result or the exception it raised (a contract violation still propagates)."""
    try:
        return await call
    except ContractViolationError:
        raise
    except Exception as exc:
        return exc


def shown(outcome: Outcome) -> str:
    """An outcome as a check reports it."""
    if isinstance(outcome, SubmitResult):
        return "a pending result" if outcome.pending_reply else "a result (accepted)"
    return describe(outcome)


def is_pending(outcome: Outcome) -> bool:
    """Whether the system only took the request (it answers later)."""
    return isinstance(outcome, SubmitResult) and outcome.pending_reply


async def answered_once(case: ContractCase, key: str, taken: SubmitResult, rule: str) -> None:
    """A request a queued system took while faulted is answered, once, after the fault is gone."""
    settled = await settle(case, key, taken)
    effects = await case.effects(key)
    require(
        len(effects) == 1 and effects[0]["reference"] == settled.reference,
        rule,
        "the queued request to be answered once the system recovers, with one effect",
        f"{len(effects)} effects",
        "send each request once and wait for its reply",
    )


# --- the checks ----------------------------------------------------------------------------------


async def check_idempotent_submit(case: ContractCase) -> None:
    """The same key twice: one effect and the same reference (or a visible duplicate)."""
    rule = "idempotent_submit"
    key = case.key("idempotent")
    first = await submit(case, key)
    second = await submit(case, key, attempt=2)
    settled = await settle(case, key, first)
    effects = await case.effects(key)
    if case.dedupes:
        # The ledger first: it shows what the system really received, e.g. keys of the adapter's own.
        if len(effects) != 1:
            seen = sorted(
                {
                    e["idempotency_key"]
                    for e in await case.admin.ledger(case.system, key_prefix=case.key_prefix)
                }
                - {key}
            )
            hint = f" (it recorded other keys instead: {seen[:3]})" if seen and not effects else ""
            raise violation(rule, "one effect for a key sent twice", f"{len(effects)}{hint}", SEND_KEY)
        if not first.pending_reply:
            require(
                first.reference == second.reference,
                rule,
                "the same reference for a key sent twice",
                f"{first.reference!r} then {second.reference!r}",
                SEND_KEY,
            )
            require(
                effects[0]["replays"] == 1,
                rule,
                "the repeated call answered from the first record",
                f"{effects[0]['replays']} replays",
                SEND_KEY,
            )
    else:
        require(
            len(effects) == 2 and effects[1]["duplicate_of"] == effects[0]["seq"],
            rule,
            "two records, the second flagged duplicate, from a system that does not de-duplicate",
            f"{len(effects)} records",
            SEND_KEY,
        )
    require(
        effects[0]["reference"] == settled.reference,
        rule,
        f"the system's reference {effects[0]['reference']!r}",
        repr(settled.reference),
        "return the reference the system gave, not one of your own",
    )
    if not first.pending_reply:
        status = await case.adapter.status(case.context(key, operation="status"), settled.reference)
        require(
            status is None or status.reference == settled.reference,
            "status",
            "status to describe the reference asked",
            repr(status.reference if status else None),
            "look the request up by the reference given",
        )


async def check_unavailable_is_transient(case: ContractCase) -> None:
    """A system that is down (503) gives `TransientError` and no effect (a queue may take it instead)."""
    rule = "unavailable_is_transient (503)"
    key = case.key("unavailable")
    async with case.faults(down=True):
        outcome = await outcome_of(submit(case, key))
    if isinstance(outcome, SubmitResult) and outcome.pending_reply:
        await answered_once(case, key, outcome, rule)
        return
    require(
        isinstance(outcome, TransientError), rule, "TransientError", shown(outcome), FIXES[TransientError]
    )
    require(not await case.effects(key), rule, "no effect", "an effect", "do not retry inside the adapter")


async def check_server_error_is_transient(case: ContractCase) -> None:
    """A 500 gives `TransientError`; the retry with the same key then succeeds once."""
    rule = "server_error_is_transient (500)"
    key = case.key("server-error")
    async with case.faults(fail_next=1):
        outcome = await outcome_of(submit(case, key))
        if isinstance(outcome, SubmitResult) and outcome.pending_reply:
            taken = outcome  # a queue took it; the system's own failure is its to retry
        else:
            require(
                isinstance(outcome, TransientError),
                rule,
                "TransientError",
                shown(outcome),
                FIXES[TransientError],
            )
            taken = await submit(case, key, attempt=2)
    await settle(case, key, taken)
    count = len(await case.effects(key))
    require(count == 1, rule, "one effect after a 500 and a retry with the same key", str(count), SEND_KEY)


async def check_rate_limit_is_transient(case: ContractCase) -> None:
    """A 429 gives `TransientError` carrying the system's `Retry-After`."""
    rule = "rate_limit_is_transient (429)"
    first_key, second_key = case.key("rate-1"), case.key("rate-2")
    async with case.faults(rate_limit_per_s=0.2):
        first = await submit(case, first_key)
        outcome = await outcome_of(submit(case, second_key))
    if isinstance(outcome, SubmitResult) and outcome.pending_reply:
        # A queue absorbs the burst: both requests must still be answered.
        await settle(case, first_key, first)
        await answered_once(case, second_key, outcome, rule)
        return
    if not isinstance(outcome, TransientError):
        raise violation(rule, "TransientError", shown(outcome), FIXES[TransientError])
    require(
        outcome.retry_after is not None and outcome.retry_after >= timedelta(seconds=1),
        rule,
        "TransientError.retry_after from the system's Retry-After (>= 1 s)",
        str(outcome.retry_after),
        "pass retry_after=adapters.http.retry_after(response)",
    )


async def probe_value(case: ContractCase) -> Any:
    """The value the system receives at `probe_field` for the sample."""
    key = case.key("probe")
    await submit_settled(case, key)
    effects = await case.effects(key)
    require(bool(effects), "probe", f"the sample to reach the system (key {key})", "no effect", SEND_KEY)
    value = get_path(effects[0]["fields"], case.probe_field)
    require(
        value is not MISSING and value is not None,
        "probe",
        f"the system's request to hold {case.probe_field!r}",
        f"only {sorted(leaf_paths(effects[0]['fields']))[:12]}",
        "set ContractSpec.probe_field to a path of the system's own request that the sample fills",
    )
    return value


async def check_rejection_is_bilingual(case: ContractCase) -> None:
    """A refusal (422 `{code, message}`) gives `RejectedError` with the system's code and both languages."""
    rule = "rejection_is_bilingual"
    value = await probe_value(case)
    message = {"en": "Refused by the contract check.", "fr": "Refusé par la vérification du contrat."}
    fault = {"field": case.probe_field, "equals": value, "code": REJECT_CODE, "message": message}
    key = case.key("rejected")
    async with case.faults(reject_when=fault):
        error = await expect_error(RejectedError, submit_settled(case, key), f"{rule} (422)")
    keep = "keep the system's own code and message: build LocalizedText from its en and fr"
    require(error.code == REJECT_CODE, rule, f"the system's code {REJECT_CODE!r}", repr(error.code), keep)
    require(error.message.model_dump() == message, rule, "the system's message", "another message", keep)
    require(not await case.effects(key), rule, "no effect", "an effect", "do not resend a refused request")


async def check_review_needs_attention(case: ContractCase) -> None:
    """A "review" answer (409) gives `NeedsAttentionError`: a person decides."""
    rule = "review_needs_attention"
    value = await probe_value(case)
    fault = {"field": case.probe_field, "equals": value, "code": REVIEW_CODE}
    async with case.faults(review_when=fault):
        error = await expect_error(
            NeedsAttentionError, submit_settled(case, case.key("review")), f"{rule} (409)"
        )
    require(
        error.code == REVIEW_CODE,
        rule,
        f"the system's code {REVIEW_CODE!r}",
        repr(error.code),
        "keep its code",
    )


async def check_timeout_is_transient(case: ContractCase) -> None:
    """Timeouts honoured: a lost answer ends by the call's deadline, and the retry finds the first effect."""
    rule = "timeout_is_transient"
    key = case.key("timeout")
    async with case.faults(latency_ms=SLOW_ANSWER_MS):
        started = time.monotonic()
        outcome = await outcome_of(
            case.adapter.submit(case.context(key, timeout=SHORT_DEADLINE), case.sample)
        )
        waited = time.monotonic() - started
    require(
        waited < (SHORT_DEADLINE + DEADLINE_SLACK).total_seconds(),
        rule,
        f"the call to end by its deadline ({SHORT_DEADLINE.total_seconds():g}s away)",
        f"it took {waited:.1f}s",
        "bound the whole exchange by ctx.remaining(now) (asyncio.timeout), never a fixed or no timeout",
    )
    if isinstance(outcome, SubmitResult):
        # A queue took it within the deadline: nothing was lost, its reply comes later.
        await answered_once(case, key, outcome, rule)
        return
    require(
        isinstance(outcome, TransientError), rule, "TransientError", shown(outcome), FIXES[TransientError]
    )
    retried = await submit_settled(case, key, attempt=2)
    effects = await case.effects(key)
    if case.dedupes:
        require(
            len(effects) == 1 and effects[0]["reference"] == retried.reference,
            rule,
            "the retry after a lost answer to get the first effect's reference",
            f"{len(effects)} effects",
            SEND_KEY,
        )
    else:
        require(
            len(effects) == 2 and effects[1]["duplicate_of"] is not None,
            rule,
            "the duplicate to be visible",
            f"{len(effects)} records",
            SEND_KEY,
        )


async def check_compensation_is_idempotent(case: ContractCase) -> None:
    """Compensating twice with one key undoes once; compensating an unknown reference is a no-op."""
    rule = "compensation_is_idempotent"
    accepted = await submit_settled(case, case.key("to-undo"))
    key = case.key("undo", "compensate")
    request = CompensationRequest(reference=accepted.reference, fields=case.sample.fields)
    first = await case.adapter.compensate(case.context(key, operation="compensate"), request)
    second = await case.adapter.compensate(case.context(key, operation="compensate", attempt=2), request)
    require(first == second, rule, "the same answer to a repeated compensation", "two answers", SEND_KEY)
    effects = await case.effects(key)
    require(
        len(effects) == 1 and effects[0]["replays"] == 1,
        rule,
        "one cancellation for a compensation sent twice with one key",
        f"{len(effects)} effects",
        SEND_KEY,
    )
    unknown = CompensationRequest(reference=f"{case.key_prefix}unknown", fields={})
    unknown_ctx = case.context(case.key("undo-unknown", "compensate"), operation="compensate")
    try:
        await case.adapter.compensate(unknown_ctx, unknown)
    except Exception as exc:
        raise violation(
            rule,
            "undoing a reference the system does not know to be a no-op",
            describe(exc),
            "treat it as done",
        ) from exc


# --- errors: classified, and free of personal data -----------------------------------------------


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_settings(settings: Settings, system: str) -> Settings:
    """`settings` with every endpoint `system` may use (URL, sandbox, SFTP, Kafka) on a closed port."""
    from infra.settings import LegacySystemSettings, Settings  # noqa: PLC0415 - infra.settings imports adapters

    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    own = settings.legacy_system(system).model_copy(update={"url": url})
    values = settings.model_dump()
    values.update(
        sandbox_url=url,
        sftp_host="127.0.0.1",
        sftp_port=port,
        kafka_bootstrap=f"127.0.0.1:{port}",
        legacy_systems={
            **settings.legacy_systems,
            system: LegacySystemSettings.model_validate(own.model_dump()),
        },
    )
    return Settings(**values)


def unreachable_copy(case: ContractCase) -> Adapter:
    """A copy of the case's adapter whose endpoint nothing listens on."""
    if case.unreachable is not None:
        return case.unreachable()
    from infra.settings import Settings  # noqa: PLC0415 - infra.settings imports adapters

    try:
        return type(case.adapter).from_settings(
            unreachable_settings(Settings(environment="test", legacy_systems={}), case.system)
        )
    except NotImplementedError as exc:
        raise violation(
            "errors_are_classified",
            "a copy of the adapter pointed at a closed port",
            "from_settings is not implemented",
            "implement Adapter.from_settings (or give ContractCase.unreachable)",
        ) from exc


PROVOKED_KINDS: dict[str, type[Exception]] = {
    "unreachable": TransientError,
    "maintenance": ClosedError,
    "down": TransientError,
    "server_error": TransientError,
    "rejected": RejectedError,
    "review": NeedsAttentionError,
    "timeout": TransientError,
}
"""What each provoked situation must end as."""
QUEUE_MAY_TAKE = frozenset({"maintenance", "down", "server_error", "timeout"})
"""Situations in which a system that answers later may take the request (pending) instead."""


async def provoke_errors(case: ContractCase) -> dict[str, Outcome]:
    """Make the adapter meet every failure the sandbox can inject, and collect what it raised.

    Returns:
        By situation (the keys of `PROVOKED_KINDS`): the result, the settled reply for business
        answers of systems that answer later, or the exception.
    """
    outcomes: dict[str, Outcome] = {}
    copy = unreachable_copy(case)
    try:
        ctx = case.context(case.key("unreachable"), timeout=timedelta(seconds=5))
        outcomes["unreachable"] = await outcome_of(copy.submit(ctx, case.sample))
    finally:
        await copy.aclose()
    value = await probe_value(case)
    situations: list[tuple[str, dict[str, Any]]] = [
        ("maintenance", {"maintenance_for_s": 600}),
        ("down", {"down": True}),
        ("server_error", {"fail_next": 1}),
        ("rejected", {"reject_when": {"field": case.probe_field, "equals": value, "code": REJECT_CODE}}),
        ("review", {"review_when": {"field": case.probe_field, "equals": value, "code": REVIEW_CODE}}),
        ("timeout", {"latency_ms": SLOW_ANSWER_MS}),
    ]
    for name, faults in situations:
        key = case.key(f"provoke-{name}")
        timeout = SHORT_DEADLINE if name == "timeout" else None
        async with case.faults(**faults):
            outcome = await outcome_of(case.adapter.submit(case.context(key, timeout=timeout), case.sample))
            if isinstance(outcome, SubmitResult) and outcome.pending_reply and name in {"rejected", "review"}:
                # A queued system's business answer is its reply, produced while the rule holds.
                outcome = await outcome_of(settle(case, key, outcome))
        outcomes[name] = outcome
    return outcomes


async def check_errors_are_classified(case: ContractCase) -> None:
    """Every failure the sandbox can inject ends as one taxonomy error, never a client library's own.

    A closed port and a lost answer give `TransientError` by the deadline; planned maintenance gives
    `ClosedError`; refusals and reviews keep their kind. A system that queues requests may take
    them (a pending result) while it is down, closed or slow.
    """
    problems: list[str] = []
    for situation, outcome in (await provoke_errors(case)).items():
        kind = PROVOKED_KINDS[situation]
        if isinstance(outcome, kind) or (is_pending(outcome) and situation in QUEUE_MAY_TAKE):
            continue
        fix = FIXES[kind] if isinstance(outcome, AdapterError | SubmitResult) else CATCH_CLIENT_ERRORS
        problems.append(f"{situation}: expected {kind.__name__}, got {shown(outcome)} (fix: {fix})")
    if problems:
        raise ContractViolationError(
            "[errors_are_classified] every failure must end as TransientError, ClosedError, RejectedError "
            "or NeedsAttentionError: " + "; ".join(problems)
        )


def personal_values(fields: Mapping[str, Any]) -> set[str]:
    """The sample's values that are personal data, lower-cased, plus digit-only forms of numbers.

    Sections without personal data (`NOT_PERSONAL_ROOTS`) and very short values are left out.
    """
    found: set[str] = set()
    for path in leaf_paths(fields):
        if path.split(".", 1)[0] in NOT_PERSONAL_ROOTS:
            continue
        value = get_path(fields, path)
        if not isinstance(value, str | int) or isinstance(value, bool):
            continue
        text = str(value).strip().lower()
        if len(text) >= MIN_PERSONAL_LENGTH:
            found.add(text)
        digits_only = re.sub(r"\D", "", text)
        if len(digits_only) >= MIN_PERSONAL_LENGTH:
            found.add(digits_only)
    return found


def error_texts(exc: BaseException) -> Iterator[tuple[str, str]]:
    """What of an error reaches logs and Temporal's failure records: code, detail, str, and its causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    depth = 0
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        where = "the error" if depth == 0 else f"its cause #{depth} ({type(current).__name__})"
        if isinstance(current, AdapterError):
            yield f"{where}'s code", current.code
            yield f"{where}'s detail", current.detail
        yield f"str() of {where}", str(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        depth += 1


def leaked_values(text: str, values: set[str], system: str = "") -> int:
    """How many of `values` appear in `text` (case-insensitive; numbers also without separators).

    The system's id is taken out first: it is configuration, even when it names a place.
    """
    lowered = text.lower().replace(system.lower(), " ") if system else text.lower()
    squeezed = re.sub(r"\D", "", lowered)
    return sum(1 for value in values if value in lowered or (value.isdigit() and value in squeezed))


async def check_no_personal_data_in_errors(case: ContractCase) -> None:
    """No error an adapter raises, nor its causes, holds any of the sample's personal values."""
    values = personal_values(case.sample.fields)
    leaks: list[str] = []
    for situation, outcome in (await provoke_errors(case)).items():
        if not isinstance(outcome, Exception):
            continue
        for where, text in error_texts(outcome):
            if count := leaked_values(text, values, case.system):
                # Where, never what: this message ends up in CI logs.
                leaks.append(f"{situation}: {where} holds {count} submitted value(s)")
    if leaks:
        raise violation(
            "no_personal_data_in_errors",
            "error codes, details and messages (and their causes) free of submitted values",
            "; ".join(leaks),
            "put only system ids, statuses and counts in code and detail, never a body or a field's "
            "value; `raise ... from None` when a cause quotes the input",
        )


async def check_projection_respected(case: ContractCase) -> None:
    """Only what the adapter maps from its projection reaches the system: extra fields never do."""
    rule = "projection_respected"
    canary = f"canary-{secrets.token_hex(6)}"
    fields = {**case.sample.fields, "canary": {"value": canary}, "canary_note": canary}
    key = case.key("projection")
    await submit_settled(case, key, sample=StepRequest(fields=fields))
    effects = await case.effects(key)
    require(bool(effects), rule, "the sample with extra fields to reach the system", "no effect", SEND_KEY)
    leaked = [entry["seq"] for entry in effects if canary in json.dumps(entry["fields"], ensure_ascii=False)]
    require(
        not leaked,
        rule,
        "fields outside the adapter's mapping never sent",
        f"the system received an extra field's value (ledger entries {leaked})",
        "build the request from a FieldMap of named paths; never forward the projection, or a section, whole",
    )


def is_compensable(adapter: Adapter | type[Adapter]) -> bool:
    """Whether an adapter (or adapter class) overrides `compensate`: its system can undo a request."""
    cls = adapter if isinstance(adapter, type) else type(adapter)
    return cls.compensate is not Adapter.compensate


Check = Callable[[ContractCase], Awaitable[None]]

CHECKS: dict[str, Check] = {
    "idempotent_submit": check_idempotent_submit,
    "unavailable_is_transient": check_unavailable_is_transient,
    "server_error_is_transient": check_server_error_is_transient,
    "rate_limit_is_transient": check_rate_limit_is_transient,
    "rejection_is_bilingual": check_rejection_is_bilingual,
    "review_needs_attention": check_review_needs_attention,
    "timeout_is_transient": check_timeout_is_transient,
    "errors_are_classified": check_errors_are_classified,
    "no_personal_data_in_errors": check_no_personal_data_in_errors,
    "projection_respected": check_projection_respected,
    "compensation_is_idempotent": check_compensation_is_idempotent,
}
"""Every check by name; `compensation_is_idempotent` applies only to compensable adapters."""


def applicable_checks(adapter: Adapter | type[Adapter]) -> list[str]:
    """The names of the checks that apply to an adapter (or adapter class)."""
    return [name for name in CHECKS if name != "compensation_is_idempotent" or is_compensable(adapter)]


async def run_contract(case: ContractCase) -> list[str]:
    """Run every applicable check in turn.

    Returns:
        The names of the checks that passed (all of them: the first failure raises).

    Raises:
        ContractViolationError: The first check the adapter fails.
    """
    passed: list[str] = []
    for name in applicable_checks(case.adapter):
        await CHECKS[name](case)
        passed.append(name)
    return passed


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: passed, or why not."""

    name: str
    passed: bool
    message: str = ""
    seconds: float = 0.0


async def run_check(case: ContractCase, name: str) -> CheckResult:
    """Run one check to its end, turning its failure (or an error the adapter let escape) into a result."""
    started = time.monotonic()
    message = ""
    try:
        async with asyncio.timeout(CHECK_TIME_LIMIT.total_seconds()):
            await CHECKS[name](case)
    except ContractViolationError as exc:
        message = str(exc)
    except TimeoutError:
        message = f"[{name}] did not end within {CHECK_TIME_LIMIT}: a call ignores its deadline"
    except Exception as exc:
        message = (
            f"[{name}] unexpected {describe(exc)}: the adapter let an error escape the taxonomy "
            "(catch the client library's errors), or the sandbox could not run the check"
        )
    finally:
        with contextlib.suppress(Exception):
            await case.admin.clear_faults(case.system)
    return CheckResult(name, passed=not message, message=message, seconds=time.monotonic() - started)


async def run_checks(case: ContractCase, names: list[str] | None = None) -> list[CheckResult]:
    """Run every applicable check (or those named), each to its end, and report all of them."""
    return [await run_check(case, name) for name in names or applicable_checks(case.adapter)]


# --- specs: how to check one adapter --------------------------------------------------------------

WaiterFactory = Callable[[Adapter, "Settings"], contextlib.AbstractAsyncContextManager[ReplyWaiter]]
"""Opens what waits for a system's replies (e.g. a Kafka consumer) for one run of the kit."""


@dataclass(frozen=True)
class ContractSpec:
    """What the kit needs to check one adapter, declared next to it as `CONTRACT = ContractSpec(...)`.

    Attributes:
        sample: Synthetic projected fields the system accepts (`adapters.samples` has some).
        probe_field: A dotted path in the system's own request format that the sample sets.
        dedupes: Whether the system de-duplicates on idempotency keys.
        reply_waiter: For systems that answer later on a channel the adapter does not read itself
            (a message queue): opens a waiter. `PolledReplies` adapters need none.
        reply_timeout: How long to wait for one reply.
    """

    sample: Mapping[str, Any]
    probe_field: str
    dedupes: bool = True
    reply_waiter: WaiterFactory | None = None
    reply_timeout: timedelta = timedelta(seconds=30)

    @contextlib.asynccontextmanager
    async def case(
        self,
        adapter_type: type[Adapter],
        settings: Settings,
        admin: SandboxAdmin,
        *,
        key_prefix: str | None = None,
        system: str | None = None,
    ) -> AsyncIterator[ContractCase]:
        """A case for `adapter_type` configured by `settings`; the adapter and waiter close on exit.

        Args:
            adapter_type: The adapter class, built with `from_settings`.
            settings: Settings pointing at the sandbox.
            admin: The sandbox's admin client.
            key_prefix: Prefix of the run's keys; default a fresh one.
            system: Run against this sandbox system instead of the adapter's own (to try an
                adapter before its system has a double in the sandbox).
        """
        built = adapter_type
        if system is not None and system != adapter_type.system:
            built = type(adapter_type.__name__, (adapter_type,), {"system": system})
        adapter = built.from_settings(settings)

        def unreachable() -> Adapter:
            # Keeps the run's settings (credentials, transport), only the endpoints change.
            return built.from_settings(unreachable_settings(settings, built.system))

        try:
            async with contextlib.AsyncExitStack() as stack:
                waiter = None
                if self.reply_waiter is not None:
                    waiter = await stack.enter_async_context(self.reply_waiter(adapter, settings))
                yield ContractCase(
                    adapter=adapter,
                    admin=admin,
                    sample=StepRequest(fields=dict(self.sample)),
                    probe_field=self.probe_field,
                    key_prefix=key_prefix or new_key_prefix(),
                    dedupes=self.dedupes,
                    await_reply=waiter,
                    reply_timeout=self.reply_timeout,
                    unreachable=unreachable,
                )
        finally:
            await adapter.aclose()
