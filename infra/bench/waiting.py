"""`tellonce bench --waiting 1000,10000`: worker memory while many bundles wait on a reply.

Bundles are started and never sent their hospital notice, so each parks with its registration
waiting; after each count is reached and the worker has gone quiet, the worker's resident memory
is sampled, with its anonymous and file-backed parts and the worker's thread count. The raw
baseline's workflows park on their signal the same way, for comparison. Memory stays bounded
only while the worker's workflow cache is (`max_cached_workflows`, 1000 in both workers here);
within that bound it moves with which workflows the cache holds and with the peaks the worker
went through, not with the number waiting (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infra.bench.measure import cpu_seconds
from infra.bench.raw import RAW_WORKFLOW
from infra.bench.runner import Bench, BenchOptions, Progress
from infra.bench.stack import rss_of
from infra.bench.workload import BUNDLE_ID
from infra.intake import Intake
from infra.temporal import connect

QUIET_WINDOW = 3.0
QUIET_CPU_SHARE = 0.1
"""The worker is settled when it used under 10 % of a core over the last window."""
SETTLE_LIMIT = 900.0


def _status(pids: list[int]) -> dict[str, float]:
    """Anonymous and file-backed resident memory (MiB) and threads of some processes, summed."""
    fields = {"RssAnon": "anon_mb", "RssFile": "file_mb", "Threads": "threads"}
    found = dict.fromkeys(fields.values(), 0.0)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    name, _, rest = line.partition(":")
                    if name in fields:
                        value = float(rest.split()[0])
                        found[fields[name]] += value if name == "Threads" else value / 1024
        except OSError:
            continue
    return found


async def _settle(pids: Callable[[], list[int]]) -> float:
    """Wait until the workers are quiet; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_LIMIT:
        before = sum(cpu_seconds(pid) for pid in pids())
        await asyncio.sleep(QUIET_WINDOW)
        if sum(cpu_seconds(pid) for pid in pids()) - before < QUIET_CPU_SHARE * QUIET_WINDOW:
            break
    return time.monotonic() - started


async def _fill(
    levels: list[int],
    concurrency: int,
    start: Callable[[int], Awaitable[None]],
    pids: Callable[[], list[int]],
    *,
    say: Progress,
    side: str,
) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {
        "rss_mb": [],
        "anon_mb": [],
        "file_mb": [],
        "threads": [],
        "fill_s": [],
        "settle_s": [],
    }
    done = 0
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            await start(index)

    for level in levels:
        began = time.monotonic()
        await asyncio.gather(*(one(index) for index in range(done, level)))
        done = level
        figures["fill_s"].append(round(time.monotonic() - began, 1))
        figures["settle_s"].append(round(await _settle(pids), 1))
        figures["rss_mb"].append(round(rss_of(pids()), 1))
        for name, value in _status(pids()).items():
            figures[name].append(round(value, 1))
        say(
            f"{side}: {level} bundles waiting, worker RSS {figures['rss_mb'][-1]:.0f} MiB, "
            f"{figures['threads'][-1]:.0f} threads"
        )
    return figures


async def run_waiting(options: BenchOptions, levels: list[int], say: Progress) -> dict[str, Any]:
    """Fill both sides to each level and report the worker RSS at each."""
    bench = Bench(options, say)
    result: dict[str, Any] = {"levels": levels}
    try:
        await bench.stack.start_servers()
        if options.raw:
            task_queue = f"bench-raw-{bench.run_id}"
            raw_pids = await bench.stack.start_raw_workers(task_queue)
            client = await bench.stack.raw_client()
            shape = bench.shape_input()

            async def start_raw(index: int) -> None:
                await client.start_workflow(
                    RAW_WORKFLOW, shape, id=f"bench-raw-{bench.run_id}-{index}", task_queue=task_queue
                )

            result["raw"] = await _fill(
                levels, options.concurrency, start_raw, lambda: raw_pids, say=say, side="raw"
            )
            bench.stack.stop_raw_workers()
        if options.tellonce:
            await bench.stack.start_tellonce()
            intake = Intake(await connect(bench.settings), bench.catalogue, bench.settings)

            async def start_tellonce(index: int) -> None:
                await intake.submit(BUNDLE_ID, bench.submissions.body(index), channel="api")

            result["tellonce"] = await _fill(
                levels,
                options.concurrency,
                start_tellonce,
                bench.stack.tellonce_worker_pids,
                say=say,
                side="tellonce",
            )
    finally:
        bench.stack.stop()
    for side in ("raw", "tellonce"):
        if side in result and len(result[side]["rss_mb"]) > 1:
            first, last = result[side]["rss_mb"][0], result[side]["rss_mb"][-1]
            result[side]["change"] = round(last / first - 1, 3) if first else None
            result[side]["flat"] = first > 0 and abs(last / first - 1) <= 0.10
    result["max_cached_workflows"] = bench.settings.worker_max_cached_workflows
    return result


def render_waiting(result: dict[str, Any]) -> str:
    """The waiting run for a person."""
    lines = [f"{'bundles waiting':>16} " + " ".join(f"{level:>10}" for level in result["levels"])]
    for side in ("tellonce", "raw"):
        if side in result:
            figures = result[side]
            lines.append(
                f"{side + ' RSS MiB':>16} " + " ".join(f"{value:>10.1f}" for value in figures["rss_mb"])
            )
            lines.append(f"{'threads':>16} " + " ".join(f"{value:>10.0f}" for value in figures["threads"]))
            if "change" in figures:
                verdict = "PASS" if figures["flat"] else "MISS"
                lines.append(f"{'':>16} change {figures['change']:+.1%} (target ±10 %): {verdict}")
    return "\n".join(lines)
