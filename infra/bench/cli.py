"""`tellonce bench`: the command line of the benchmark (the work is in `infra.bench.runner`)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

_STARTED = time.monotonic()


def _say(message: str) -> None:
    # Progress goes to stderr, so `--json` output stays one clean document on stdout.
    typer.echo(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", err=True)


def bench_command(  # noqa: PLR0917 - one parameter per option, as Typer wants
    bundles: Annotated[int, typer.Option(min=1, help="Bundles on each side.")] = 500,
    concurrency: Annotated[int, typer.Option(min=1, help="Bundles in flight at once on each side.")] = 100,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on each side.")] = 1,
    max_concurrent: Annotated[
        int,
        typer.Option(min=1, help="Each worker's max concurrent activities and workflow tasks (both sides)."),
    ] = 200,
    batch_interval: Annotated[
        float,
        typer.Option(
            min=0.05, help="Seconds between the sandbox's batch runs and tellonce's reply collections."
        ),
    ] = 0.5,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    raw_only: Annotated[bool, typer.Option("--raw-only", help="Run only the raw baseline.")] = False,
    tellonce_only: Annotated[bool, typer.Option("--tellonce-only", help="Run only tellonce.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when a target is missed.")] = False,
    profile: Annotated[
        Path | None, typer.Option(help="Record tellonce's worker with py-spy into this speedscope file.")
    ] = None,
    waiting: Annotated[
        str | None,
        typer.Option(
            help="Instead: park bundles on the birth notice; sample worker RSS at these counts (1000,10000)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the servers' data and logs here (default: a temporary directory)."),
    ] = None,
) -> None:
    """Measure tellonce against raw Temporal: the same bundles, one Temporal server, one run.

    Prints bundles/s, activities/s, p50/p95/p99 submit-to-final latency, history events and payload
    bytes per bundle and worker RSS for both sides, their ratios, and PASS/MISS against issue 8's
    targets (throughput at least 0.8 of raw, p99 and history at most 1.5 times raw). See docs/performance.md.
    """
    from infra.bench.runner import Bench, BenchOptions, render  # noqa: PLC0415 - keeps the CLI light
    from infra.bench.stack import WorkerSettings  # noqa: PLC0415
    from infra.bench.waiting import render_waiting, run_waiting  # noqa: PLC0415
    from infra.logging import configure_logging  # noqa: PLC0415

    # The bench's own process submits through intake, which logs every acceptance: keep only problems.
    configure_logging("warning")
    if raw_only and tellonce_only:
        raise typer.BadParameter("--raw-only and --tellonce-only exclude each other")
    worker_settings = WorkerSettings(
        processes=workers,
        max_concurrent_activities=max_concurrent,
        max_concurrent_workflow_tasks=max_concurrent,
        batch_interval=timedelta(seconds=batch_interval),
        profile_to=profile.resolve() if profile is not None else None,
    )
    options = BenchOptions(
        bundles=bundles,
        concurrency=concurrency,
        workers=worker_settings,
        raw=not tellonce_only,
        tellonce=not raw_only,
        data_dir=data_dir,
    )
    result: dict[str, Any]
    if waiting is not None:
        try:
            levels = sorted({int(level) for level in waiting.split(",") if level.strip()})
        except ValueError:
            raise typer.BadParameter("--waiting takes counts separated by commas, e.g. 1000,10000") from None
        result = asyncio.run(run_waiting(options, levels, _say))
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False) if json_out else render_waiting(result))
        return
    result = asyncio.run(Bench(options, _say).run())
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False) if json_out else render(result))
    missed = [name for name, target in result["targets"].items() if target["verdict"] == "MISS"]
    if check and missed:
        typer.echo(f"missed: {', '.join(missed)}", err=True)
        sys.exit(1)
