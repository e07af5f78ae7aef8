"""`tellonce retention`: remove finished bundles' personal data now, or see what would be removed.

The worker's sweeper does this every hour on its own; this command runs one round at once
(after a change of retention period, before retiring a key, or to look with `--dry-run`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from temporalio.service import RPCError

from activities.retention import DEFAULT_BATCH_SIZE, RetentionSweeper, SweepRequest, SweepResult
from infra.logging import configure_logging
from infra.records import open_record_store
from infra.settings import Settings
from infra.temporal import connect

retention_app = typer.Typer(
    help="Data retention: finished bundles keep only a non-personal record after the retention period.",
    no_args_is_help=True,
)
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


async def _sweep(settings: Settings, request: SweepRequest) -> SweepResult:
    sweeper = RetentionSweeper(
        await connect(settings),
        open_record_store(settings),
        task_queue_prefix=settings.task_queue_prefix,
        retention_period=settings.retention_period,
    )
    return await sweeper.sweep(request)


@retention_app.command("sweep")
def sweep(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed (tracking ids, close times).")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Most bundles (and matchers) to remove in this round.")
    ] = DEFAULT_BATCH_SIZE,
    json_out: Annotated[bool, typer.Option("--json", help="Print the round's result as JSON.")] = False,
) -> None:
    """Run one retention round now: record, then delete, every bundle closed longer ago than
    TELLONCE_RETENTION_PERIOD (and delete the birth-notice matchers closed as long ago)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        errors.print(f"invalid settings: {exc}", markup=False)
        raise typer.Exit(2) from None
    # Each bundle removed is logged (to stderr): the output stays the table or the JSON.
    configure_logging(settings.log_level, settings.log_format)
    try:
        result = asyncio.run(_sweep(settings, SweepRequest(batch_size=batch_size, dry_run=dry_run)))
    except RuntimeError as exc:
        # What `Client.connect` raises when the frontend cannot be reached.
        errors.print(f"cannot reach Temporal at {settings.temporal_target}: {exc}", markup=False)
        raise typer.Exit(2) from None
    except RPCError as exc:
        errors.print(f"Temporal refused the sweep ({exc.status.name}); run it again", markup=False)
        raise typer.Exit(1) from None
    if json_out:
        console.print_json(result.model_dump_json())
        return
    if dry_run:
        table = Table("tracking id", "closed at")
        for bundle in result.would_remove:
            table.add_row(bundle.tracking_id, bundle.closed_at.isoformat(timespec="seconds"))
        console.print(table)
        console.print(
            f"would remove {len(result.would_remove)} bundles and {result.would_remove_notices} "
            f"birth-notice matchers closed before the last {settings.retention_period}"
            + (" (more wait beyond this batch)" if result.more else "")
        )
        return
    console.print(
        f"removed {result.removed} bundles (record kept), resumed {result.resumed}, "
        f"{result.already_gone} already gone, {result.deferred} deferred; "
        f"removed {result.notices_removed} birth-notice matchers"
        + (" (more wait: run again)" if result.more else "")
    )
