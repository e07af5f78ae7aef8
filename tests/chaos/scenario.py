"""The resilience scenario: bundles of both types in flight while processes die and systems fail.

`ChaosRun.run` drives one run against a `ChaosStack` and returns a `RunReport` of what was sent,
what was done to the stack (and when), and what the servers say afterwards. The test decides
what must hold; the report is printed as a table and written as JSON either way.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.validators import toronto_today
from infra.intake import Intake
from infra.sandbox.client import SandboxAdmin
from infra.temporal import connect
from tests.chaos.stack import ChaosStack
from tests.chaos.verify import (
    LedgerFindings,
    Outcome,
    compensable_steps,
    dump_status,
    judge_ledgers,
    read_ledgers,
    settled_bundle_executions,
    wait_all_final,
)
from tests.chaos.workload import (
    ADDRESS_CHANGE,
    MOVING_RESIDENTS,
    NEWBORN,
    REFUSED_RESIDENT,
    RESIDENTS,
    Channel,
    Fate,
    Partner,
    Submission,
    address_body,
    newborn_body,
    submit_http,
    withdraw_http,
)
from workflows.bundle import BundleWorkflow
from workflows.models import FINAL_STEP_STATES, BundleState, DecisionAction, StepDecision, StepState
from workflows.names import reply_collector_id

DOWN_SYSTEM = "on-registrar-births"
"""Taken down for a while: the newborn bundles' pivot (SOAP). Retries must absorb the outage."""
BATCH_SYSTEM = "esdc-sin"
"""The newborn bundles' batch-file system: its replies come through one collector workflow."""
SLOW_SYSTEM = "on-health"
"""Slowed to seconds per call: OHIP's address book. Its calls are in flight when the worker dies."""


@dataclass(frozen=True)
class Plan:
    """How big and how long one run is."""

    name: str
    newborns: tuple[int, ...]
    """Newborn bundles per wave (wave 1 before the faults, the next ones during them)."""
    moves: tuple[int, ...]
    """Address changes per wave."""
    withdrawals: int
    """Per bundle type and wave: bundles the resident withdraws mid-flight."""
    rollbacks: int
    """Per wave: moves of the resident whose health card OHIP refuses (the bundle rolls back)."""
    outage_s: float
    """How long DOWN_SYSTEM stays down."""
    latency_ms: int
    """SLOW_SYSTEM's delay per call."""
    worker_kills: int
    """SIGKILLs of the worker in all: the first while SLOW_SYSTEM's calls are in flight, then one
    after each wave from the third on."""
    streams_kills: int
    """SIGKILLs of the streams process in all: the first while Kafka submissions wait for it."""
    spare_collector: bool
    """Kill the worker only between two batch-reply collections. A collection lost with its worker
    used to stall every batch reply for 5 minutes (`test_reply_collector_crash.py`, fixed by a
    heartbeat); both runs now kill it whenever, and this stays to isolate a regression."""
    temporal_signal: signal.Signals
    temporal_down_s: float
    """How long the Temporal server stays down each time (residents and streams retry meanwhile)."""
    final_timeout_s: float
    """How long bundles may take to be final once the faults are over."""


SHORT = Plan(
    name="short",
    newborns=(5, 3),
    moves=(5, 3),
    withdrawals=1,
    rollbacks=1,
    outage_s=10.0,
    latency_ms=2000,
    worker_kills=1,
    streams_kills=1,
    spare_collector=False,
    temporal_signal=signal.SIGKILL,
    temporal_down_s=2.0,
    final_timeout_s=90.0,
)
FULL = Plan(
    name="full",
    newborns=(16, 12, 12, 12),
    moves=(16, 12, 12, 12),
    withdrawals=2,
    rollbacks=1,
    outage_s=180.0,
    latency_ms=3000,
    worker_kills=3,
    streams_kills=3,
    spare_collector=False,
    temporal_signal=signal.SIGKILL,
    temporal_down_s=20.0,
    final_timeout_s=600.0,
)


@dataclass
class RunReport:
    """Everything counted in one run."""

    plan: str
    submitted: int = 0
    accepted: int = 0
    distinct_bundles: int = 0
    bundle_executions: int = 0
    states: dict[str, int] = field(default_factory=dict)
    http_requests: int = 0
    http_statuses: dict[str, int] = field(default_factory=dict)
    http_retried_same_tracking_id: bool = True
    kafka_submission_records: int = 0
    kafka_notice_records: int = 0
    withdrawals: dict[str, int] = field(default_factory=dict)
    withdrawal_answers: list[int] = field(default_factory=list)
    slowest_withdrawal_s: float = 0.0
    faults: list[tuple[float, str]] = field(default_factory=list)
    ledger_entries: int = 0
    ledger_submits: int = 0
    ledger_cancels: int = 0
    ledger_replays: int = 0
    step_retries: int = 0
    outage_s: float = 0.0
    retry_budget_s: float = 0.0
    parked_by_outage: int = 0
    operator_retries: int = 0
    duplicates: list[str] = field(default_factory=list)
    visible_duplicates: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    compensations_expected: int = 0
    compensations_found: int = 0
    ledger_problems: list[str] = field(default_factory=list)
    fate_problems: list[str] = field(default_factory=list)
    not_final: dict[str, Any] = field(default_factory=dict)
    dead_letters: int = 0
    bundles: list[dict[str, Any]] = field(default_factory=list)
    """Per submission: type, channel, story, tracking id, final state and each step's state (JSON only)."""
    known_bug: str | None = None
    """Set when the run stalled on a known, already reported bug rather than on something new."""
    stack_start_s: float = 0.0
    wall_s: float = 0.0

    def table(self) -> str:
        """The counts as a small table for the terminal."""
        rows = [
            ("plan", self.plan),
            ("submitted (distinct)", self.submitted),
            ("accepted (202 / Kafka ack)", self.accepted),
            ("distinct bundles", self.distinct_bundles),
            ("bundle executions in Temporal", self.bundle_executions),
            *((f"  {state}", self.states.get(state, 0)) for state in STATE_ORDER),
            *((f"  {state}", n) for state, n in sorted(self.states.items()) if state not in STATE_ORDER),
            ("HTTP requests (statuses)", f"{self.http_requests} {dict(sorted(self.http_statuses.items()))}"),
            ("HTTP retries kept their tracking id", self.http_retried_same_tracking_id),
            ("Kafka records: submissions / notices",
             f"{self.kafka_submission_records} / {self.kafka_notice_records}"),
            ("withdrawals (last answer: count)", dict(sorted(self.withdrawals.items()))),
            ("withdrawal answers, retries included", self.withdrawal_answers),
            ("slowest withdrawal (s)", self.slowest_withdrawal_s),
            ("ledger entries (submits / cancels)",
             f"{self.ledger_entries} ({self.ledger_submits} / {self.ledger_cancels})"),
            ("requests answered from a ledger record", self.ledger_replays),
            ("step attempts beyond the first", self.step_retries),
            (f"{DOWN_SYSTEM} outage / retry budget (s)", f"{self.outage_s:.0f} / {self.retry_budget_s:.0f}"),
            ("steps parked by the outage / operator retries",
             f"{self.parked_by_outage} / {self.operator_retries}"),
            ("duplicates at de-duplicating systems", len(self.duplicates)),
            ("duplicates visible at resp-referral", len(self.visible_duplicates)),
            ("effects of unknown bundles", len(self.strays)),
            ("compensations expected / found", f"{self.compensations_expected} / {self.compensations_found}"),
            ("ledger problems", len(self.ledger_problems)),
            ("bundles not in their expected state", len(self.fate_problems)),
            ("submissions dead-lettered", self.dead_letters),
            ("stack start (s)", f"{self.stack_start_s:.1f}"),
            ("wall time (s)", f"{self.wall_s:.1f}"),
        ]  # fmt: skip
        width = max(len(str(name)) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines.append("faults injected (seconds after the stack was up):")
        lines.extend(f"  {at:7.1f}  {what}" for at, what in self.faults)
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        """The report as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2, default=str))


def say(text: str) -> None:
    """Tell the person running the suite (shown with `pytest -s`, and in a failure's output)."""
    print(text, flush=True)  # noqa: T201 - the suite's report is for the person running it


STATE_ORDER = tuple(state.value for state in BundleState)
"""Every bundle state of the contract, shown even when no bundle is in it."""


class Timeline:
    """What was done to the stack, and when (seconds since the stack was up)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def note(self, what: str) -> None:
        """Record one fault or recovery, and say it (visible with `pytest -s`)."""
        at = round(time.monotonic() - self.t0, 1)
        self.events.append((at, what))
        say(f"[chaos {at:7.1f}s] {what}")


def retry_budget_s(bundle_id: str, system: str) -> float:
    """Seconds of back-off a step of `system` waits through before its last attempt: an outage
    shorter than this is absorbed by retries; a longer one parks the step for an operator."""
    definition = Catalogue.load(known_adapters=KNOWN_ADAPTERS).get(bundle_id)
    step = next(s for s in definition.steps if s.adapter == system)
    retry = step.retry
    first, cap = retry.initial_interval.total_seconds(), retry.maximum_interval.total_seconds()
    return sum(min(first * retry.backoff_coefficient**k, cap) for k in range(retry.maximum_attempts - 1))


def make_submissions(plan: Plan, run_salt: int) -> list[list[Submission]]:
    """Every wave's submissions: channels alternate, fates are spread over both types and channels."""
    today = toronto_today()
    waves: list[list[Submission]] = []
    index = 0
    for wave, (newborns, moves) in enumerate(zip(plan.newborns, plan.moves, strict=True)):
        batch: list[Submission] = []
        for n in range(newborns):
            channel: Channel = "api" if (n + wave) % 2 == 0 else "kafka"
            fate: Fate = "withdraw" if n < plan.withdrawals else "complete"
            batch.append(_new(index, NEWBORN, channel, fate, newborn_body(index, today, run_salt)))
            index += 1
        for m in range(moves):
            channel = "kafka" if (m + wave) % 2 == 0 else "api"
            if m < plan.withdrawals:
                fate, resident = "withdraw", MOVING_RESIDENTS[m % len(MOVING_RESIDENTS)]
            elif m < plan.withdrawals + plan.rollbacks:
                fate, resident = "rollback", REFUSED_RESIDENT
            else:
                fate, resident = "complete", MOVING_RESIDENTS[m % len(MOVING_RESIDENTS)]
            body = address_body(index, resident, today)
            if fate == "withdraw":
                # A move dated next week: the licence, health card and electors' register wait for
                # the day, so the bundle is surely in flight when the resident withdraws it.
                body["effective_date"] = (today + timedelta(days=7)).isoformat()
            submission = _new(index, ADDRESS_CHANGE, channel, fate, body)
            submission.resident = resident
            batch.append(submission)
            index += 1
        waves.append(batch)
    return waves


def _new(index: int, bundle_id: str, channel: Channel, fate: Fate, body: dict[str, Any]) -> Submission:
    submission = Submission(index=index, bundle_id=bundle_id, channel=channel, fate=fate, body=body)
    if channel == "api":
        submission.idempotency_key = f"chaos-{uuid.uuid4().hex}"
    else:
        submission.kafka_id = uuid.uuid4()
    return submission


class ChaosRun:
    """One run of the scenario against a started stack."""

    def __init__(self, stack: ChaosStack, plan: Plan, stack_start_s: float) -> None:
        self.stack = stack
        self.plan = plan
        self.settings = stack.settings
        self.timeline = Timeline()
        self.waves = make_submissions(plan, run_salt=100_000 + int(time.time()) % 800_000)
        self.all = [s for wave in self.waves for s in wave]
        self.report = RunReport(
            plan=plan.name,
            stack_start_s=stack_start_s,
            outage_s=plan.outage_s,
            retry_budget_s=retry_budget_s(NEWBORN, DOWN_SYSTEM),
        )
        self.client: Client | None = None
        self.withdrawals: list[asyncio.Future[int]] = []
        self.background: list[asyncio.Future[None]] = []
        """Requests still in flight when a step of the run fails: cancelled on the way out."""

    async def run(self) -> RunReport:
        """Drive the whole scenario, then read and judge the outcome."""
        started = time.monotonic()
        async with (
            httpx.AsyncClient(base_url=self.settings.api_base_url, timeout=30.0) as api,
            SandboxAdmin(self.settings.sandbox_base_url) as sandbox,
        ):
            partner = Partner(self.settings)
            await partner.start()
            self.client = await connect(self.settings)
            try:
                await self._inject_and_submit(api, sandbox, partner)
                outcomes = await self._wait_final(self.client)
                await self._duplicates_after_the_end(api, partner)
                await self._judge(self.client, sandbox, outcomes)
            finally:
                for pending in self.background:
                    pending.cancel()
                for withdrawal in self.withdrawals:
                    withdrawal.cancel()
                await partner.stop()
        self.report.wall_s = self.report.stack_start_s + time.monotonic() - started
        self.report.faults = self.timeline.events
        return self.report

    # ------------------------------------------------------------------ the faults

    async def _inject_and_submit(
        self, api: httpx.AsyncClient, sandbox: SandboxAdmin, partner: Partner
    ) -> None:
        plan, note = self.plan, self.timeline.note
        refused = RESIDENTS[REFUSED_RESIDENT]
        await sandbox.set_faults(
            SLOW_SYSTEM,
            latency_ms=plan.latency_ms,
            reject_when={
                "field": "health_number",
                "equals": refused.health_number,
                "code": "health_card_not_found",
            },
        )
        note(f"{SLOW_SYSTEM}: {plan.latency_ms} ms per call; refuses resident '{REFUSED_RESIDENT}'")
        await sandbox.set_faults(DOWN_SYSTEM, down=True)
        down_at = time.monotonic()
        note(f"{DOWN_SYSTEM}: down")

        first, second, *later = self.waves
        await self._submit_wave(api, partner, first, copies=2)
        note(f"wave 1 submitted: {len(first)} bundles (Kafka ones twice)")
        await self._send_notices(partner, first)

        # Early, so that the activities whose answers it loses time out while the rest goes on.
        await self._temporal_restart_during(api, partner, second, kafka_too=False)
        note(f"wave 2 submitted over HTTP: {len(self._api(second))} bundles")

        # The slow system's calls are in flight now: the worker dies between effect and answer.
        await asyncio.sleep(plan.latency_ms / 1000 * 0.75)
        await self._kill_worker()
        note("worker: SIGKILL")
        self.stack.start("worker")
        self.stack.kill("streams")
        note("streams: SIGKILL")
        # While streams is down: every Kafka submission so far once more, and the next wave's.
        for submission in self._kafka(first):
            await partner.send_submission(submission)
        await self._submit_kafka(partner, second, copies=2)
        note(f"wave 2 submitted over Kafka while streams is down: {len(self._kafka(second))} bundles")
        self.stack.start("streams")
        await self.stack.wait_healthy("worker")
        note("worker: restarted, healthy")
        self._withdraw(api, first + second)
        await self._send_notices(partner, second)

        for number, wave in enumerate(later, start=3):
            # These waves' Kafka submissions go out while Temporal is down: streams must keep
            # trying to start their bundles.
            await self._temporal_restart_during(api, partner, wave, kafka_too=True)
            note(f"wave {number} submitted: {len(wave)} bundles")
            await self._send_notices(partner, wave)
            self._withdraw(api, wave)
            if self.stack.starts["worker"] <= plan.worker_kills:
                await self._kill_worker()
                self.stack.start("worker")
                await self.stack.wait_healthy("worker")
                note("worker: SIGKILL, restarted, healthy")
            if self.stack.starts["streams"] <= plan.streams_kills:
                await self.stack.restart("streams")
                note("streams: SIGKILL, restarted, healthy")

        remaining = plan.outage_s - (time.monotonic() - down_at)
        if remaining > 0:
            await asyncio.sleep(remaining)
        await sandbox.set_faults(DOWN_SYSTEM, down=False)
        note(f"{DOWN_SYSTEM}: up again after {time.monotonic() - down_at:.0f}s")

        # Client retries: every HTTP submission once more with its key, every Kafka one once more.
        await asyncio.gather(*(submit_http(api, s, give_up_after=60) for s in self._api(self.all)))
        for submission in self._kafka(self.all):
            await partner.send_submission(submission)
        note("every submission sent once more (HTTP with the same Idempotency-Key, Kafka duplicates)")
        await sandbox.set_faults(SLOW_SYSTEM, latency_ms=0)
        note(f"{SLOW_SYSTEM}: latency off (its refusal of one resident stays)")
        await asyncio.gather(*self.withdrawals)
        await self.stack.wait_healthy("streams")
        note("streams: healthy")

    async def _kill_worker(self) -> None:
        """SIGKILL the worker; with `spare_collector`, not while a batch-reply collection runs."""
        if self.plan.spare_collector:
            # A collection takes milliseconds every 2 s: this waits at most a few polls.
            for _ in range(250):
                if not await self._collection_running():
                    break
                await asyncio.sleep(0.02)
        self.stack.kill("worker")

    async def _collection_running(self) -> str | None:
        """The worker identity running the batch-reply collection now, if one runs."""
        assert self.client is not None
        collector = reply_collector_id(self.settings.task_queue_prefix, BATCH_SYSTEM)
        handle = self.client.get_workflow_handle(collector)
        try:
            description = await handle.describe()
        except RPCError:
            return None
        for pending in description.raw_description.pending_activities:
            if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                return pending.last_worker_identity or "?"
        return None

    async def _temporal_restart_during(
        self, api: httpx.AsyncClient, partner: Partner, wave: list[Submission], *, kafka_too: bool
    ) -> None:
        """Kill the Temporal server; residents submit while it is down (their clients retry)."""
        note = self.timeline.note
        self.stack.kill("temporal", self.plan.temporal_signal)
        note(f"temporal: {self.plan.temporal_signal.name}")
        posts = [asyncio.ensure_future(submit_http(api, s, give_up_after=120)) for s in self._api(wave)]
        self.background.extend(posts)
        if kafka_too:
            await self._submit_kafka(partner, wave, copies=2)
        await asyncio.sleep(self.plan.temporal_down_s)
        await self.stack.wait_ports_free("temporal")
        self.stack.start("temporal")
        await self.stack.wait_healthy("temporal")
        note("temporal: restarted on the same SQLite file, healthy")
        await asyncio.gather(*posts)

    async def _submit_wave(
        self, api: httpx.AsyncClient, partner: Partner, wave: list[Submission], *, copies: int
    ) -> None:
        await asyncio.gather(
            *(submit_http(api, s, give_up_after=60) for s in self._api(wave)),
            self._submit_kafka(partner, wave, copies=copies),
        )

    async def _submit_kafka(self, partner: Partner, wave: list[Submission], *, copies: int) -> None:
        for _ in range(copies):
            for submission in self._kafka(wave):
                await partner.send_submission(submission)

    async def _send_notices(self, partner: Partner, wave: list[Submission]) -> None:
        """The hospital's notices for the newborns that go through (half of them sent twice)."""
        for submission in wave:
            if submission.newborn and submission.fate == "complete":
                for _ in range(1 + submission.index % 2):
                    await partner.send_notice(submission)

    def _withdraw(self, api: httpx.AsyncClient, wave: list[Submission]) -> None:
        """Residents withdraw mid-flight (Kafka submissions with the access code tellonce derives).

        In the background: an answer may be slow to come, and the faults go on meanwhile.
        """
        assert self.client is not None
        intake = Intake(self.client, Catalogue.load(known_adapters=KNOWN_ADAPTERS), self.settings)
        targets = [s for s in wave if s.fate == "withdraw" and s.accepted]
        for submission in targets:
            assert submission.tracking_id is not None
            submission.access_code = submission.access_code or intake.access_code(submission.tracking_id)
            self.withdrawals.append(asyncio.ensure_future(self._withdraw_once_started(api, submission)))
        self.timeline.note(f"withdrawing mid-flight: {len(targets)} bundles")

    async def _withdraw_once_started(self, api: httpx.AsyncClient, submission: Submission) -> int:
        """A partner's resident can withdraw only once streams has started the bundle (before
        that the API rightly knows no such tracking id): wait for it, then withdraw."""
        assert self.client is not None and submission.tracking_id is not None
        handle = self.client.get_workflow_handle(submission.tracking_id)
        for _ in range(300):
            try:
                await handle.describe()
                break
            except RPCError:
                await asyncio.sleep(0.2)
        return await withdraw_http(api, submission, give_up_after=90)

    @staticmethod
    def _api(wave: list[Submission]) -> list[Submission]:
        return [s for s in wave if s.channel == "api"]

    @staticmethod
    def _kafka(wave: list[Submission]) -> list[Submission]:
        return [s for s in wave if s.channel == "kafka"]

    # ------------------------------------------------------------------ the outcome

    async def _wait_final(self, client: Client) -> dict[str, Outcome]:
        tracking_ids = sorted({s.tracking_id for s in self.all if s.tracking_id})
        last_print = [0.0]
        retried: set[tuple[str, str]] = set()

        async def each_round(outcomes: dict[str, Outcome]) -> None:
            await self._operator_retries(client, outcomes, retried)
            if time.monotonic() - last_print[0] >= 10:
                last_print[0] = time.monotonic()
                seen = Counter(o.status.state.value if o.status else o.execution for o in outcomes.values())
                self.timeline.note(f"waiting for final states: {dict(seen)}")

        outcomes = await wait_all_final(
            client, tracking_ids, timeout=self.plan.final_timeout_s, each_round=each_round
        )
        done = all(o.final for o in outcomes.values())
        self.timeline.note("every bundle final" if done else "gave up waiting")
        if not done:
            self.report.known_bug = await self._stalled_on_lost_collection(outcomes)
        return outcomes

    async def _stalled_on_lost_collection(self, outcomes: dict[str, Outcome]) -> str | None:
        """Say so when every unfinished bundle only waits for a batch reply, and the collection
        that would bring them was lost with a killed worker (the known 5-minute stall)."""
        running = await self._collection_running()
        killed = {f"{pid}@" for pid in self.stack.killed_pids}
        if running is None or not any(running.startswith(prefix) for prefix in killed):
            return None
        for outcome in outcomes.values():
            if outcome.final:
                continue
            if outcome.status is None:
                return None
            waiting = [step for step in outcome.status.steps if step.state not in FINAL_STEP_STATES]
            if any(s.system != BATCH_SYSTEM or s.state is not StepState.WAITING_REPLY for s in waiting):
                return None
        return (
            f"the {BATCH_SYSTEM} reply collection was lost with a killed worker ({running}): "
            "no batch reply until its heartbeat timed out (test_reply_collector_crash.py)"
        )

    async def _operator_retries(
        self, client: Client, outcomes: dict[str, Outcome], retried: set[tuple[str, str]]
    ) -> None:
        """Play the operator for steps the outage parked: the design parks a step whose system stays
        down past its retry budget, and a person retries it once the system is back."""
        for tracking_id, outcome in outcomes.items():
            if outcome.status is None:
                continue
            for step in outcome.status.steps:
                parked = (
                    step.state is StepState.NEEDS_ATTENTION
                    and step.system == DOWN_SYSTEM
                    and step.last_error is not None
                    and step.last_error.kind in ("transient", "timeout")
                )
                if not parked or (tracking_id, step.id) in retried:
                    continue
                retried.add((tracking_id, step.id))
                self.report.parked_by_outage += 1
                if self.report.outage_s <= self.report.retry_budget_s:
                    continue  # not the operator's to fix: the test reports it as a failure
                handle = client.get_workflow_handle_for(BundleWorkflow.run, tracking_id)
                decision = StepDecision(
                    step_id=step.id,
                    action=DecisionAction.RETRY,
                    actor="chaos-operator",
                    reason=f"{DOWN_SYSTEM} is back after its outage",
                )
                try:
                    await handle.execute_update(BundleWorkflow.decide, decision)
                except (WorkflowUpdateFailedError, RPCError):
                    retried.discard((tracking_id, step.id))
                    self.report.parked_by_outage -= 1
                    continue
                self.report.operator_retries += 1
                self.timeline.note(f"operator: retry {step.id} of {tracking_id}")

    async def _duplicates_after_the_end(self, api: httpx.AsyncClient, partner: Partner) -> None:
        """Once every bundle has closed, the same submissions once more: none may start a bundle."""
        await asyncio.gather(*(submit_http(api, s, give_up_after=30) for s in self._api(self.all)))
        for submission in self._kafka(self.all):
            await partner.send_submission(submission)
        await self._streams_caught_up()
        self.timeline.note("duplicates sent after the end, and consumed")

    async def _streams_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the streams consumer group has committed the end of the submissions topic.

        The committed offsets are read as a member of the group that never subscribes, so it
        never joins the group and streams keeps its partitions.
        """
        topic = self.settings.kafka_topic_submissions
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_target,
            group_id=self.settings.kafka_consumer_group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                committed = {tp: await consumer.committed(tp) for tp in partitions}
                if all((committed[tp] or 0) >= end for tp, end in ends.items()):
                    return
                await asyncio.sleep(0.5)
            raise AssertionError(f"streams did not consume {topic} to its end in {timeout:.0f}s")
        finally:
            await consumer.stop()

    async def _dead_letters(self) -> int:
        """How many records the submissions DLQ holds (a duplicate must never be dead-lettered)."""
        topic = self.settings.kafka_topic_submissions_dlq
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_target, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(partitions)
            return sum(ends.values())
        finally:
            await consumer.stop()

    async def _judge(self, client: Client, sandbox: SandboxAdmin, outcomes: dict[str, Outcome]) -> None:
        report = self.report
        report.step_retries = sum(
            max(0, step.attempts - 1) for o in outcomes.values() if o.status for step in o.status.steps
        )
        report.submitted = len(self.all)
        report.accepted = sum(1 for s in self.all if s.accepted)
        report.distinct_bundles = len({s.tracking_id for s in self.all if s.tracking_id})
        report.http_requests = sum(len(s.http_statuses) for s in self.all)
        report.http_statuses = dict(Counter(str(code) for s in self.all for code in s.http_statuses))
        report.http_retried_same_tracking_id = all(len(s.http_tracking_ids) <= 1 for s in self.all)
        report.kafka_submission_records = sum(s.kafka_sends for s in self.all)
        report.kafka_notice_records = sum(s.notices_sent for s in self.all)
        withdrawn = [s for s in self.all if s.fate == "withdraw"]
        report.withdrawals = dict(Counter(str(s.withdraw_status) for s in withdrawn))
        report.withdrawal_answers = [code for s in withdrawn for code in s.withdraw_answers]
        report.slowest_withdrawal_s = max((s.withdraw_seconds or 0.0 for s in withdrawn), default=0.0)
        report.states = dict(
            Counter(o.status.state.value if o.status else o.execution for o in outcomes.values())
        )
        report.not_final = {
            tid: dump_status(o.status) or o.execution for tid, o in outcomes.items() if not o.final
        }
        executions = await settled_bundle_executions(client, report.distinct_bundles)
        report.bundle_executions = len(executions)
        listed = Counter(workflow_id for workflow_id, _run, _status in executions)
        expected = {s.tracking_id for s in self.all if s.tracking_id}
        if set(listed) != expected or any(n != 1 for n in listed.values()):
            report.fate_problems.append(
                f"executions {dict(listed)} are not one per distinct submission {sorted(expected)}"
            )
        report.fate_problems.extend(self._fates(outcomes))
        for s in self.all:
            outcome = outcomes.get(s.tracking_id or "")
            status = outcome.status if outcome else None
            report.bundles.append(
                {
                    "index": s.index,
                    "bundle_id": s.bundle_id,
                    "channel": s.channel,
                    "story": s.fate,
                    "tracking_id": s.tracking_id,
                    "state": status.state.value if status else None,
                    "steps": {step.id: step.state.value for step in status.steps} if status else None,
                    "withdraw_answers": s.withdraw_answers,
                }
            )
        statuses = {tid: o.status for tid, o in outcomes.items() if o.status is not None}
        dedupes, effects = await read_ledgers(sandbox)
        found: LedgerFindings = judge_ledgers(effects, dedupes, statuses, compensable_steps())
        report.ledger_entries = found.entries
        report.ledger_submits = found.submits
        report.ledger_cancels = found.cancels
        report.ledger_replays = found.replays
        report.duplicates = found.duplicates
        report.visible_duplicates = found.visible_duplicates
        report.strays = found.strays
        report.compensations_expected = found.compensations_expected
        report.compensations_found = found.compensations_found
        report.ledger_problems = found.problems
        report.dead_letters = await self._dead_letters()

    def _fates(self, outcomes: dict[str, Outcome]) -> list[str]:
        """Each bundle ended as its story says: withdrawn when the withdrawal was accepted, failed
        when OHIP refused the move, completed otherwise."""
        problems = []
        for s in self.all:
            if s.tracking_id is None:
                problems.append(f"#{s.index} ({s.bundle_id} via {s.channel}) was never accepted")
                continue
            outcome = outcomes.get(s.tracking_id)
            state = outcome.status.state.value if outcome and outcome.status else None
            if s.fate == "withdraw":
                expected = "withdrawn" if s.withdraw_status == 202 else "completed"
            elif s.fate == "rollback":
                expected = "failed"
            else:
                expected = "completed"
            if state != expected:
                problems.append(
                    f"#{s.index} {s.tracking_id} ({s.bundle_id} via {s.channel}, {s.fate}): "
                    f"{state} instead of {expected}: {dump_status(outcome.status if outcome else None)}"
                )
        return problems
