"""Both phases of `tellonce bench`, against one Temporal server, and the report comparing them.

The raw baseline runs first, while only Temporal and Kafka are up, so nothing of tellonce's
(reply collectors, streams consumers) loads the server during it; then the sandbox, tellonce's
worker(s) and the streams process start and the same number of newborn bundles go through
tellonce. Each bundle is timed from just before its start request to its workflow's result.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from activities.events import producer_config
from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.notices import correlation_key, facts_from_notice, match_workflow_id, parse_notice
from bundles.plan import resolve_plan
from bundles.submissions import validate_submission
from infra.bench.measure import HistoryFigures, history_figures, machine, mean, percentile
from infra.bench.profile import summarize
from infra.bench.raw import NOTICE_SIGNAL, RAW_WORKFLOW, RawBundleInput
from infra.bench.stack import BenchStack, WorkerSettings, free_port_base, rss_of
from infra.bench.workload import BUNDLE_ID, Submissions, raw_shape
from infra.devstack import binary
from infra.intake import Intake
from infra.notices_cli import hospital_notice, notice_record
from infra.settings import Settings
from infra.temporal import connect
from workflows.models import BundleState

TARGETS = {"throughput": 0.8, "p99": 1.5, "history": 1.5}
"""Issue 8: throughput at least 0.8 of raw; p99 latency and history per bundle at most 1.5 times."""

HISTORY_SAMPLE = 50
"""Bundles whose histories are fetched and counted (evenly spread over the run)."""

RSS_SAMPLE_INTERVAL = 0.5

Progress = Callable[[str], None]


@dataclass
class Phase:
    """What one side of the run measured."""

    bundles: int
    completed: int = 0
    wall_s: float = math.nan
    latencies: list[float] = field(default_factory=list)
    histories: list[HistoryFigures] = field(default_factory=list)
    side_histories: list[HistoryFigures] = field(default_factory=list)
    """tellonce only: the birth-notice matchers of the sampled bundles."""
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def _cpu_per_bundle(self, counted: Callable[[str], bool]) -> float:
        spent = sum(used for name, used in self.cpu_s.items() if counted(name))
        return spent / self.completed if self.completed and spent else math.nan

    def summary(self) -> dict[str, Any]:
        """The phase as the JSON report gives it."""
        per_bundle = mean(h.activities for h in self.histories)
        rate = self.completed / self.wall_s if self.wall_s > 0 else math.nan
        result: dict[str, Any] = {
            "bundles": self.bundles,
            "completed": self.completed,
            "wall_s": _round(self.wall_s),
            "bundles_per_s": _round(rate),
            "activities_per_s": _round(rate * per_bundle),
            "p50_s": _round(percentile(self.latencies, 50)),
            "p95_s": _round(percentile(self.latencies, 95)),
            "p99_s": _round(percentile(self.latencies, 99)),
            "history_events": _round(mean(h.events for h in self.histories)),
            "payload_bytes": _round(mean(h.payload_bytes for h in self.histories)),
            "activities_per_bundle": _round(per_bundle),
            "workflow_tasks_per_bundle": _round(mean(h.workflow_tasks for h in self.histories)),
            "worker_rss_mb": _round(self.rss_peak_mb),
            "worker_rss_end_mb": _round(self.rss_end_mb),
            "cpu_s": {name: _round(used) for name, used in sorted(self.cpu_s.items())},
            # CPU per bundle does not depend on what else the machine runs, unlike rates.
            "cpu_s_per_bundle": _round(self._cpu_per_bundle(lambda name: name != BENCH_CLIENT)),
            "temporal_cpu_s_per_bundle": _round(self._cpu_per_bundle(lambda name: name == "temporal")),
            "worker_cpu_s_per_bundle": _round(self._cpu_per_bundle(lambda name: "worker" in name)),
            "failures": self.failures[:10],
        }
        kinds = sorted({kind for h in self.histories for kind in h.by_type})
        sized = sorted({kind for h in self.histories for kind in h.payload_bytes_by_type})
        result["payload_bytes_by_type"] = {
            kind: _round(mean(h.payload_bytes_by_type.get(kind, 0) for h in self.histories)) for kind in sized
        }
        result["history_by_type"] = {
            kind: _round(mean(h.by_type.get(kind, 0) for h in self.histories)) for kind in kinds
        }
        if self.side_histories:
            result["matcher_history_events"] = _round(mean(h.events for h in self.side_histories))
            result["matcher_payload_bytes"] = _round(mean(h.payload_bytes for h in self.side_histories))
        return result


BENCH_CLIENT = "bench (client)"


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


class _RssSampler:
    """Samples the summed RSS of some processes until stopped; keeps the peak."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_of(self.pids()))
            await asyncio.sleep(RSS_SAMPLE_INTERVAL)

    def __enter__(self) -> _RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def _drive(
    bundles: int, concurrency: int, one: Callable[[int], Awaitable[tuple[float, str | None]]], phase: Phase
) -> None:
    """Run `one` for every index with at most `concurrency` bundles in flight; fill in the phase."""
    slots = asyncio.Semaphore(concurrency)
    first: list[float] = []
    last: list[float] = []

    async def run(index: int) -> None:
        async with slots:
            started = time.monotonic()
            first.append(started)
            try:
                latency, problem = await one(index)
            except Exception as exc:  # one broken bundle is reported, it does not stop the run
                latency, problem = math.nan, f"{type(exc).__name__}: {exc}"
            last.append(time.monotonic())
        if problem is None:
            phase.completed += 1
            phase.latencies.append(latency)
        else:
            phase.failures.append(f"bundle {index}: {problem}")

    await asyncio.gather(*(run(index) for index in range(bundles)))
    phase.wall_s = max(last) - min(first) if last else math.nan


def _sample(ids: list[Any], size: int) -> list[Any]:
    if len(ids) <= size:
        return ids
    step = len(ids) / size
    return [ids[int(i * step)] for i in range(size)]


@dataclass(frozen=True)
class BenchOptions:
    """What `tellonce bench` was asked to do."""

    bundles: int = 500
    concurrency: int = 100
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    raw: bool = True
    tellonce: bool = True
    data_dir: Path | None = None
    history_sample: int = HISTORY_SAMPLE


class Bench:
    """One bench run: a stack, a catalogue and the two phases."""

    def __init__(self, options: BenchOptions, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.submissions = Submissions()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        data_dir = options.data_dir
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tellonce-bench-")
            data_dir = Path(self._tmp.name)
        self.settings = Settings(
            data_dir=data_dir.resolve(),
            port_base=free_port_base(),
            task_queue_prefix=f"bench-{self.run_id}",
        )
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        _ = self.settings.keyring  # created once here, before the children race to create it
        self.stack = BenchStack(self.settings, options.workers)
        self.catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)

    def shape_input(self) -> RawBundleInput:
        """The raw baseline's shape: the plan tellonce resolves for the run's first submission."""
        definition = self.catalogue.get(BUNDLE_ID)
        validated = validate_submission(definition, self.submissions.body(0))
        return RawBundleInput(steps=raw_shape(resolve_plan(definition, validated.data, validated.consents)))

    async def run(self) -> dict[str, Any]:
        """Start the servers, run the phases asked for, stop everything, and report."""
        options = self.options
        result: dict[str, Any] = {"bundles": options.bundles, "concurrency": options.concurrency}
        try:
            self.progress(f"starting Temporal and Kafka under {self.settings.data_dir}")
            await self.stack.start_servers()
            if options.raw:
                result["raw"] = (await self.raw_phase()).summary()
            if options.tellonce:
                result["tellonce"] = (await self.tellonce_phase()).summary()
                if options.workers.profile_to is not None and options.workers.profile_to.exists():
                    result["profile"] = summarize(options.workers.profile_to)
        finally:
            self.progress("stopping the servers")
            self.stack.stop()
            if self._tmp is not None:
                self._tmp.cleanup()
        result["ratio"] = ratios(result.get("tellonce"), result.get("raw"))
        result["targets"] = targets(result["ratio"])
        result["worker_settings"] = {
            "processes": options.workers.processes,
            "max_concurrent_activities": options.workers.max_concurrent_activities,
            "max_concurrent_workflow_tasks": options.workers.max_concurrent_workflow_tasks,
            "batch_interval_s": options.workers.batch_interval.total_seconds(),
            "workflow_runner": "sandboxed (SDK default), both sides",
        }
        result["machine"] = machine(binary("temporal"))
        return result

    async def raw_phase(self) -> Phase:
        """N raw bundles: start, signal the outside fact, wait for the result."""
        options = self.options
        task_queue = f"bench-raw-{self.run_id}"
        pids = await self.stack.start_raw_workers(task_queue)
        client = await self.stack.raw_client()
        shape = self.shape_input()
        ids = [f"bench-raw-{self.run_id}-{index}" for index in range(options.bundles)]

        async def one(index: int) -> tuple[float, str | None]:
            started = time.monotonic()
            handle = await client.start_workflow(RAW_WORKFLOW, shape, id=ids[index], task_queue=task_queue)
            await handle.signal(NOTICE_SIGNAL)
            done = await handle.result()
            problem = None if done == len(shape.steps) else f"{done} of {len(shape.steps)} steps done"
            return time.monotonic() - started, problem

        self.progress(f"raw baseline: {options.bundles} bundles, {options.concurrency} in flight")
        phase = Phase(options.bundles)
        cpu_before = self.stack.cpu_by_service()
        bench_cpu = time.process_time()
        with _RssSampler(lambda: pids) as sampler:
            await _drive(options.bundles, options.concurrency, one, phase)
        phase.cpu_s = _cpu_delta(cpu_before, self.stack.cpu_by_service(), time.process_time() - bench_cpu)
        phase.rss_peak_mb, phase.rss_end_mb = sampler.peak, rss_of(pids)
        phase.histories = [await history_figures(client, i) for i in _sample(ids, options.history_sample)]
        self.stack.stop_raw_workers()
        return phase

    async def tellonce_phase(self) -> Phase:
        """N newborn bundles through intake, the hospital's notice through Kafka, to the result."""
        options, settings = self.options, self.settings
        self.progress("starting the sandbox, tellonce's worker(s) and the streams process")
        await self.stack.start_tellonce()
        client = await connect(settings)
        intake = Intake(client, self.catalogue, settings)
        hospital = AIOKafkaProducer(**producer_config(settings), acks="all")
        await hospital.start()
        secret = settings.correlation_secret.get_secret_value().encode()
        ids: dict[int, str] = {}
        matchers: dict[int, str] = {}

        async def one(index: int) -> tuple[float, str | None]:
            body = self.submissions.body(index)
            started = time.monotonic()
            accepted = await intake.submit(BUNDLE_ID, body, channel="api")
            ids[index] = accepted.tracking_id
            notice = hospital_notice(body, notice_id=f"NLB-{self.run_id.upper()}-{index}")
            await hospital.send_and_wait(
                settings.kafka_topic_birth_notices,
                notice_record(notice, settings.keyring),
                key=notice["notice_id"].encode(),
            )
            status = await intake.handle(accepted.tracking_id).result()
            latency = time.monotonic() - started
            key = correlation_key(facts_from_notice(parse_notice(json.dumps(notice).encode())), secret)
            if key is not None:
                matchers[index] = match_workflow_id(key)
            return latency, None if status.state == BundleState.COMPLETED else f"ended {status.state}"

        self.progress(f"tellonce: {options.bundles} newborn bundles, {options.concurrency} in flight")
        phase = Phase(options.bundles)
        cpu_before = self.stack.cpu_by_service()
        bench_cpu = time.process_time()
        self.stack.start_profiler()
        try:
            with _RssSampler(self.stack.tellonce_worker_pids) as sampler:
                await _drive(options.bundles, options.concurrency, one, phase)
            self.stack.stop_profiler()
            phase.cpu_s = _cpu_delta(cpu_before, self.stack.cpu_by_service(), time.process_time() - bench_cpu)
            phase.rss_peak_mb = sampler.peak
            phase.rss_end_mb = rss_of(self.stack.tellonce_worker_pids())
        finally:
            await hospital.stop()
        sampled = _sample(sorted(ids), options.history_sample)
        self.progress("counting histories")
        phase.histories = [await history_figures(client, ids[index]) for index in sampled]
        phase.side_histories = [
            await history_figures(client, matchers[index]) for index in sampled if index in matchers
        ]
        if (problem := self.stack.dead()) is not None:
            phase.failures.append(problem)
        return phase


def _cpu_delta(before: dict[str, float], after: dict[str, float], bench: float) -> dict[str, float]:
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    used[BENCH_CLIENT] = bench
    return {name: value for name, value in used.items() if value > 0}


def ratios(tellonce: dict[str, Any] | None, raw: dict[str, Any] | None) -> dict[str, float | None]:
    """tellonce over raw: throughput (higher is better), p99 and history (lower is better)."""

    def over(key: str) -> float | None:
        if not tellonce or not raw or not tellonce.get(key) or not raw.get(key):
            return None
        return round(float(tellonce[key]) / float(raw[key]), 3)

    result = {"throughput": over("bundles_per_s"), "p99": over("p99_s"), "history": over("history_events")}
    result["p50"] = over("p50_s")
    result["payload"] = over("payload_bytes")
    result["worker_rss"] = over("worker_rss_mb")
    result["cpu_per_bundle"] = over("cpu_s_per_bundle")
    return result


def targets(ratio: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Each target of issue 8 with the measured ratio and PASS, MISS or n/a."""
    checks: dict[str, dict[str, Any]] = {}
    for name, bound in TARGETS.items():
        value = ratio.get(name)
        if value is None:
            verdict = "n/a"
        elif name == "throughput":
            verdict = "PASS" if value >= bound else "MISS"
        else:
            verdict = "PASS" if value <= bound else "MISS"
        checks[name] = {
            "ratio": value,
            "bound": f"{'≥' if name == 'throughput' else '≤'} {bound}",
            "verdict": verdict,
        }
    return checks


def render(result: dict[str, Any]) -> str:
    """The report for a person: one table, the targets, where the CPU went."""
    tellonce, raw = result.get("tellonce") or {}, result.get("raw") or {}
    rows = [
        ("bundles completed", "completed", "{:.0f}"),
        ("wall time (s)", "wall_s", "{:.2f}"),
        ("bundles/s", "bundles_per_s", "{:.2f}"),
        ("activities/s", "activities_per_s", "{:.1f}"),
        ("p50 submit-to-final (s)", "p50_s", "{:.3f}"),
        ("p95 submit-to-final (s)", "p95_s", "{:.3f}"),
        ("p99 submit-to-final (s)", "p99_s", "{:.3f}"),
        ("history events per bundle", "history_events", "{:.1f}"),
        ("payload bytes per bundle", "payload_bytes", "{:.0f}"),
        ("activities per bundle", "activities_per_bundle", "{:.1f}"),
        ("workflow tasks per bundle", "workflow_tasks_per_bundle", "{:.1f}"),
        ("worker RSS peak (MiB)", "worker_rss_mb", "{:.0f}"),
        ("CPU s per bundle (stack)", "cpu_s_per_bundle", "{:.3f}"),
        ("  of which Temporal server", "temporal_cpu_s_per_bundle", "{:.3f}"),
        ("  of which worker(s)", "worker_cpu_s_per_bundle", "{:.3f}"),
    ]

    def cell(side: dict[str, Any], key: str, fmt: str) -> str:
        value = side.get(key)
        return fmt.format(value) if isinstance(value, int | float) else "-"

    lines = [f"{'':28} {'tellonce':>12} {'raw':>12} {'ratio':>8}"]
    for label, key, fmt in rows:
        ratio = (
            f"{tellonce[key] / raw[key]:.2f}"
            if isinstance(tellonce.get(key), int | float)
            and isinstance(raw.get(key), int | float)
            and raw[key]
            else ""
        )
        lines.append(f"{label:28} {cell(tellonce, key, fmt):>12} {cell(raw, key, fmt):>12} {ratio:>8}")
    if "matcher_history_events" in tellonce:
        lines.append(
            f"{'  + birth-notice matcher':28} {tellonce['matcher_history_events']:>12.1f} events, "
            f"{tellonce['matcher_payload_bytes']:.0f} payload bytes per bundle"
        )
    lines.append("")
    for name, check in result["targets"].items():
        value = check["ratio"]
        shown = f"{value:.2f}" if value is not None else "-"
        lines.append(f"target {name:11} {shown:>6} {check['bound']:>7}  {check['verdict']}")
    for side_name, side in (("tellonce", tellonce), ("raw", raw)):
        if side.get("cpu_s"):
            spent = ", ".join(f"{name} {used:.1f}" for name, used in side["cpu_s"].items())
            lines.append(f"CPU seconds during {side_name}: {spent}")
        for failure in side.get("failures", []):
            lines.append(f"{side_name} problem: {failure}")
    if profile := result.get("profile"):
        lines.append(f"worker profile ({profile['samples']:.0f} samples), self time by package:")
        packages = list(profile["self_by_package_pct"].items())[:10]
        lines += [f"  {share:5.1f} %  {name}" for name, share in packages]
        lines.append("top frames by self time:")
        lines += [f"  {share:5.1f} %  {frame}" for frame, share in profile["top_self_pct"][:10]]
    info = result["machine"]
    lines.append(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"{info['temporal'].splitlines()[0] if info['temporal'] else 'temporal ?'}"
    )
    return "\n".join(lines)
