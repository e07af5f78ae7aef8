"""What the resilience suite checks afterwards, read from the servers themselves.

* Temporal: each accepted submission's bundle, polled until it is final; every `BundleWorkflow`
  execution the namespace holds (visibility), to prove one bundle per distinct submission.
* The sandbox ledgers: every effect each legacy system had, by idempotency key
  (`<tracking id>:<step>:<operation>`), to prove nothing happened twice and that cancellations
  (compensations) happened exactly where a withdrawn or rolled-back bundle had something to undo.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.sandbox.client import SandboxAdmin
from workflows.bundle import BundleWorkflow
from workflows.models import FINAL_BUNDLE_STATES, BundleState, BundleStatus, StepState, StepStatus
from workflows.names import parse_idempotency_key

CLOSED_BADLY = {
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
    WorkflowExecutionStatus.CANCELED,
}


@dataclass
class Outcome:
    """Where one bundle stands: its status (None while unreadable) and how its execution closed."""

    status: BundleStatus | None = None
    execution: str = "unknown"

    @property
    def final(self) -> bool:
        """The bundle reached one of the contract's final states (or its execution closed badly)."""
        return self.execution in {s.name for s in CLOSED_BADLY} or (
            self.status is not None and self.status.state in FINAL_BUNDLE_STATES
        )


async def outcome_of(client: Client, tracking_id: str) -> Outcome:
    """Read one bundle: the workflow's result once closed, else its `status` query."""
    handle = client.get_workflow_handle_for(BundleWorkflow.run, tracking_id)
    description = await handle.describe()
    status = description.status
    if status is WorkflowExecutionStatus.COMPLETED:
        return Outcome(await handle.result(), "COMPLETED")
    if status in CLOSED_BADLY:
        return Outcome(None, status.name if status else "unknown")
    return Outcome(await handle.query(BundleWorkflow.status), "RUNNING")


async def wait_all_final(
    client: Client,
    tracking_ids: Iterable[str],
    *,
    timeout: float,
    each_round: Callable[[dict[str, Outcome]], Awaitable[None]] | None = None,
) -> dict[str, Outcome]:
    """Poll every bundle until each is final or `timeout` passes; the last outcome of each.

    Reads that fail (the server or the worker restarting) are retried at the next round.
    `each_round` sees the outcomes after every round (to report progress, or to act as an
    operator would on a bundle that waits for one).
    """
    outcomes = {tid: Outcome() for tid in tracking_ids}
    deadline = time.monotonic() + timeout
    while True:
        pending = [tid for tid, outcome in outcomes.items() if not outcome.final]
        for tid in pending:
            try:
                outcomes[tid] = await asyncio.wait_for(outcome_of(client, tid), timeout=10.0)
            except (RPCError, TimeoutError, RuntimeError) as exc:
                outcomes[tid].execution = f"unreadable: {type(exc).__name__}"
        if each_round is not None:
            await each_round(outcomes)
        if all(outcome.final for outcome in outcomes.values()) or time.monotonic() > deadline:
            return outcomes
        await asyncio.sleep(1.0)


async def bundle_executions(client: Client) -> list[tuple[str, str, str]]:
    """Every `BundleWorkflow` run the namespace lists: (workflow id, run id, status)."""
    return [
        (execution.id, execution.run_id, execution.status.name if execution.status else "?")
        async for execution in client.list_workflows("WorkflowType = 'BundleWorkflow'")
    ]


async def settled_bundle_executions(
    client: Client, expected: int, *, timeout: float = 30.0
) -> list[tuple[str, str, str]]:
    """Bundle executions once visibility has caught up: the count reached `expected` and held for
    two reads (it lags the workflows by up to seconds), or whatever it shows at the timeout."""
    deadline = time.monotonic() + timeout
    previous: list[tuple[str, str, str]] | None = None
    while True:
        try:
            listed = await bundle_executions(client)
        except RPCError:
            listed = previous or []
        closed = sum(1 for _id, _run, status in listed if status != "RUNNING")
        if previous is not None and len(listed) >= expected and closed == len(listed) and listed == previous:
            return listed
        if time.monotonic() > deadline:
            return listed
        previous = listed
        await asyncio.sleep(1.0)


# --------------------------------------------------------------------------- ledgers


@dataclass
class Effect:
    """One ledger entry, with its key parsed."""

    system: str
    operation: str
    key: str
    tracking_id: str | None
    step: str | None
    reference: str
    outcome: str
    duplicate_of: int | None
    replays: int


async def read_ledgers(sandbox: SandboxAdmin) -> tuple[dict[str, bool], list[Effect]]:
    """Every system's ledger: whether each system de-duplicates on keys, and every effect."""
    systems = await sandbox.systems()
    dedupes = {s["id"]: bool(s["honours_idempotency_keys"]) for s in systems}
    effects: list[Effect] = []
    for system in dedupes:
        for entry in await sandbox.ledger(system):
            parsed = parse_idempotency_key(entry["idempotency_key"])
            effects.append(
                Effect(
                    system=system,
                    operation=entry["operation"],
                    key=entry["idempotency_key"],
                    tracking_id=parsed[0] if parsed else None,
                    step=parsed[1] if parsed else None,
                    reference=entry["reference"],
                    outcome=entry["outcome"],
                    duplicate_of=entry.get("duplicate_of"),
                    replays=int(entry.get("replays", 0)),
                )
            )
    return dedupes, effects


def compensable_steps() -> dict[str, set[str]]:
    """Per bundle id, the steps whose definition has a compensation (those a rollback undoes)."""
    catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
    return {
        definition.id: {step.id for step in definition.steps if step.compensation is not None}
        for definition in catalogue.all()
    }


@dataclass
class LedgerFindings:
    """What the ledgers say, judged against the bundles' final statuses."""

    entries: int = 0
    submits: int = 0
    cancels: int = 0
    replays: int = 0
    """Requests sent again with a key already recorded, answered from the record (retries)."""
    duplicates: list[str] = field(default_factory=list)
    """Same key and operation recorded twice at a system that de-duplicates: must never happen."""
    visible_duplicates: list[str] = field(default_factory=list)
    """Same key recorded twice at a system that does not de-duplicate (documented at-least-once)."""
    strays: list[str] = field(default_factory=list)
    """Effects whose key names no bundle of this run."""
    compensations_expected: int = 0
    compensations_found: int = 0
    problems: list[str] = field(default_factory=list)


def judge_ledgers(
    effects: list[Effect],
    dedupes: dict[str, bool],
    statuses: dict[str, BundleStatus],
    compensable: dict[str, set[str]],
) -> LedgerFindings:
    """Check the ledgers against the bundles.

    * No (system, key, operation) twice where the system de-duplicates.
    * Every effect belongs to a bundle of this run and to its step's own system.
    * A DONE step has exactly one accepted request.
    * In a withdrawn or failed bundle, every compensable step with an accepted request ends
      COMPENSATED with exactly one cancellation of that request's reference; no other step of
      any bundle (so none of a completed bundle) is cancelled.
    """
    found = LedgerFindings(entries=len(effects), replays=sum(e.replays for e in effects))
    counts = Counter((e.system, e.key, e.operation) for e in effects)
    for (system, key, operation), times in sorted(counts.items()):
        if times > 1:
            line = f"{system}: {operation} {key} x{times}"
            (found.duplicates if dedupes.get(system, True) else found.visible_duplicates).append(line)
    accepted: dict[tuple[str, str], list[Effect]] = defaultdict(list)
    cancels: dict[tuple[str, str], list[Effect]] = defaultdict(list)
    for effect in effects:
        if effect.tracking_id not in statuses or effect.step is None:
            found.strays.append(f"{effect.system}: {effect.operation} {effect.key}")
        elif effect.operation == "submit":
            found.submits += 1
            if effect.outcome == "accepted":
                accepted[(effect.tracking_id, effect.step)].append(effect)
        else:
            found.cancels += 1
            cancels[(effect.tracking_id, effect.step)].append(effect)
    found.compensations_found = found.cancels
    for tracking_id, status in statuses.items():
        undoable = compensable.get(status.bundle_id, set())
        for step in status.steps:
            _judge_step(
                found,
                status,
                step,
                sent=accepted.get((tracking_id, step.id), []),
                undone=cancels.get((tracking_id, step.id), []),
                undoable=step.id in undoable,
            )
    return found


def _judge_step(
    found: LedgerFindings,
    status: BundleStatus,
    step: StepStatus,
    *,
    sent: list[Effect],
    undone: list[Effect],
    undoable: bool,
) -> None:
    """One step's effects against its final state (see `judge_ledgers`)."""
    where = f"{status.submission_id} {step.id} ({status.state.value}, step {step.state.value})"
    if any(e.system != step.system for e in sent + undone):
        found.problems.append(f"{where}: effects at a system other than {step.system}")
    if step.state is StepState.DONE and len({e.key for e in sent}) != 1:
        found.problems.append(f"{where}: done with {len(sent)} accepted requests")
    rolled_back = status.state in (BundleState.WITHDRAWN, BundleState.FAILED)
    if rolled_back and undoable and sent:
        found.compensations_expected += 1
        if step.state is not StepState.COMPENSATED:
            found.problems.append(f"{where}: a request took effect but the step was not undone")
        if [e.reference for e in undone] != [sent[0].reference]:
            found.problems.append(
                f"{where}: expected one cancellation of {sent[0].reference}, "
                f"found {[e.reference for e in undone]}"
            )
    elif undone:
        found.problems.append(f"{where}: cancelled although nothing here is to be undone")
    if step.state is StepState.COMPENSATED and not undone:
        found.problems.append(f"{where}: compensated with no cancellation at {step.system}")


def dump_status(status: BundleStatus | None) -> dict[str, Any] | None:
    """A bundle's status as plain data for failure messages (states, attempts, errors; no fields)."""
    if status is None:
        return None
    return {
        "state": status.state.value,
        "steps": {
            s.id: {
                "state": s.state.value,
                "attempts": s.attempts,
                "error": s.last_error.code if s.last_error else None,
                "waiting_for": s.waiting_for,
            }
            for s in status.steps
        },
    }
