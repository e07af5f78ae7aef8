"""Contract test kit: checks every adapter and legacy system pair must pass before a bundle uses it.

Run the checks from your own tests against the legacy sandbox (or any double that speaks its
admin API)::

    case = ContractCase(
        adapter=MyAdapter(sandbox_url),
        admin=SandboxAdmin(sandbox_url),
        sample=StepRequest(fields={...}),   # projected fields the system accepts
        probe_field="child.surname",        # a path in the *system's* request the sample sets
        key_prefix=f"contract-{uuid4()}:",  # unique per run: faults and ledgers are scoped to it
    )
    await run_contract(case)

Each check sets faults only for keys that start with `key_prefix`, so tests sharing one sandbox
do not disturb each other, and clears them when it ends. A failed check raises
`ContractViolationError` (an `AssertionError`) saying what the adapter did wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from adapters.mapping import MISSING, get_path
from adapters.sdk import (
    Adapter,
    CallContext,
    CompensationRequest,
    NeedsAttentionError,
    Operation,
    RejectedError,
    StepRequest,
    SubmitResult,
    TransientError,
)
from infra.sandbox.client import SandboxAdmin

ErrorT = TypeVar("ErrorT", bound=Exception)

REJECT_CODE = "contract_rejected"
REVIEW_CODE = "contract_review"


class ContractViolationError(AssertionError):
    """An adapter broke the contract; the message says which rule and how."""


@dataclass(frozen=True)
class ContractCase:
    """One adapter under test.

    Attributes:
        adapter: The adapter, pointed at the sandbox.
        admin: The sandbox's admin client.
        sample: Projected fields the system accepts (synthetic data only).
        probe_field: A dotted path in the system's own request format that `sample` sets; the
            rejection and review checks make the system refuse requests holding its value.
        key_prefix: Prefix of every idempotency key the checks use; unique per test run.
        dedupes: Whether the system de-duplicates on idempotency keys (False: the checks
            expect duplicates to be visible in the ledger instead).
        call_timeout: Deadline of an ordinary call.
    """

    adapter: Adapter
    admin: SandboxAdmin
    sample: StepRequest
    probe_field: str
    key_prefix: str
    dedupes: bool = True
    call_timeout: timedelta = timedelta(seconds=10)

    @property
    def system(self) -> str:
        """The system id of the adapter under test."""
        return self.adapter.system

    def key(self, name: str) -> str:
        """An idempotency key of this run."""
        return f"{self.key_prefix}{name}"

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


def expect(condition: bool, message: str) -> None:
    """Raise `ContractViolationError` with `message` unless `condition` holds."""
    if not condition:
        raise ContractViolationError(message)


async def expect_error(kind: type[ErrorT], call: Awaitable[object], what: str) -> ErrorT:
    """Await `call` and return the error of type `kind` it must raise."""
    try:
        result = await call
    except kind as exc:
        return exc
    except Exception as exc:
        raise ContractViolationError(f"{what}: expected {kind.__name__}, got {type(exc).__name__}") from exc
    raise ContractViolationError(f"{what}: expected {kind.__name__}, got a result {type(result).__name__}")


async def submit(case: ContractCase, key: str, *, attempt: int = 1) -> SubmitResult:
    """Submit the sample with a key."""
    return await case.adapter.submit(case.context(key, attempt=attempt), case.sample)


async def check_idempotent_submit(case: ContractCase) -> None:
    """The same key twice: one effect and the same reference (or a visible duplicate)."""
    key = case.key("idempotent")
    first = await submit(case, key)
    second = await submit(case, key, attempt=2)
    effects = await case.effects(key)
    if case.dedupes:
        expect(first.reference == second.reference, "a repeated key must return the same reference")
        expect(len(effects) == 1, f"a repeated key must have one effect, the ledger has {len(effects)}")
        expect(effects[0]["replays"] == 1, "the repeated call must be answered from the first record")
    else:
        expect(len(effects) == 2, "a system without key de-duplication records each call")
        expect(effects[1]["duplicate_of"] == effects[0]["seq"], "the second record must be flagged duplicate")
    expect(effects[0]["reference"] == first.reference, "the result must carry the system's reference")
    status = await case.adapter.status(case.context(key, operation="status"), first.reference)
    expect(status is None or status.reference == first.reference, "status must describe the reference asked")


async def check_unavailable_is_transient(case: ContractCase) -> None:
    """A system that is down (503) gives `TransientError` and no effect."""
    key = case.key("unavailable")
    async with case.faults(down=True):
        await expect_error(TransientError, submit(case, key), "503")
    expect(not await case.effects(key), "a refused call must have no effect")


async def check_server_error_is_transient(case: ContractCase) -> None:
    """A 500 gives `TransientError`; the retry with the same key then succeeds once."""
    key = case.key("server-error")
    async with case.faults(fail_next=1):
        await expect_error(TransientError, submit(case, key), "500")
        await submit(case, key, attempt=2)
    expect(len(await case.effects(key)) == 1, "the retry after a 500 must have exactly one effect")


async def check_rate_limit_is_transient(case: ContractCase) -> None:
    """A 429 gives `TransientError` carrying the system's `Retry-After`."""
    async with case.faults(rate_limit_per_s=0.2):
        await submit(case, case.key("rate-1"))
        error = await expect_error(TransientError, submit(case, case.key("rate-2")), "429")
    expect(
        error.retry_after is not None and error.retry_after >= timedelta(seconds=1),
        "429 must keep Retry-After",
    )


async def probe_value(case: ContractCase) -> Any:
    """The value the system receives at `probe_field` for the sample."""
    key = case.key("probe")
    await submit(case, key)
    value = get_path((await case.effects(key))[0]["fields"], case.probe_field)
    expect(value is not MISSING and value is not None, f"the sample must set {case.probe_field!r}")
    return value


async def check_rejection_is_bilingual(case: ContractCase) -> None:
    """A 422 `{code, message}` gives `RejectedError` with the system's code and both languages."""
    value = await probe_value(case)
    message = {"en": "Refused by the contract check.", "fr": "Refusé par la vérification du contrat."}
    rule = {"field": case.probe_field, "equals": value, "code": REJECT_CODE, "message": message}
    key = case.key("rejected")
    async with case.faults(reject_when=rule):
        error = await expect_error(RejectedError, submit(case, key), "422")
    expect(error.code == REJECT_CODE, f"the system's code must be kept, got {error.code!r}")
    expect(error.message.model_dump() == message, "the system's message must be kept in English and French")
    expect(not await case.effects(key), "a rejected call must have no effect")


async def check_review_needs_attention(case: ContractCase) -> None:
    """A 409 gives `NeedsAttentionError`: a person decides."""
    value = await probe_value(case)
    rule = {"field": case.probe_field, "equals": value, "code": REVIEW_CODE}
    async with case.faults(review_when=rule):
        error = await expect_error(NeedsAttentionError, submit(case, case.key("review")), "409")
    expect(error.code == REVIEW_CODE, f"the system's code must be kept, got {error.code!r}")


async def check_timeout_is_transient(case: ContractCase) -> None:
    """A lost answer: the call times out by its deadline, and the retry finds the first effect."""
    key = case.key("timeout")
    deadline = timedelta(milliseconds=400)
    async with case.faults(latency_ms=2_000):
        started = datetime.now(UTC)
        await expect_error(
            TransientError, case.adapter.submit(case.context(key, timeout=deadline), case.sample), "timeout"
        )
        waited = datetime.now(UTC) - started
    expect(waited < deadline + timedelta(seconds=1), f"the call must stop at its deadline, it took {waited}")
    retried = await submit(case, key, attempt=2)
    effects = await case.effects(key)
    if case.dedupes:
        expect(len(effects) == 1, "the retry after a lost answer must not make a second effect")
        expect(effects[0]["reference"] == retried.reference, "the retry must return the first reference")
    else:
        expect(len(effects) == 2 and effects[1]["duplicate_of"] is not None, "the duplicate must be visible")


async def check_compensation_is_idempotent(case: ContractCase) -> None:
    """Compensating twice with one key undoes once; compensating an unknown reference is a no-op."""
    accepted = await submit(case, case.key("to-undo"))
    key = case.key("undo")
    request = CompensationRequest(reference=accepted.reference, fields=case.sample.fields)
    first = await case.adapter.compensate(case.context(key, operation="compensate"), request)
    second = await case.adapter.compensate(case.context(key, operation="compensate", attempt=2), request)
    expect(first == second, "a repeated compensation must get the same answer")
    effects = await case.effects(key)
    expect(len(effects) == 1 and effects[0]["replays"] == 1, "a repeated compensation must have one effect")
    unknown = CompensationRequest(reference=f"{case.key_prefix}unknown", fields={})
    await case.adapter.compensate(case.context(case.key("undo-unknown"), operation="compensate"), unknown)


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
