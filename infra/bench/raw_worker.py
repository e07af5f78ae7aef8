"""The raw baseline's worker process: `python -m infra.bench.raw_worker --target HOST:PORT ...`.

A process of its own, like `tellonce worker`, so its memory is measured the same way. Same
runner (unsandboxed, `tellonce worker`'s default) and same concurrency limits as tellonce's
worker; the SDK's default data converter, since the baseline is Temporal and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from infra.bench.raw import RawActivities, RawBundleWorkflow


async def serve(args: argparse.Namespace) -> None:
    """Poll the task queue until SIGTERM or SIGINT."""
    client = await Client.connect(args.target, namespace=args.namespace)
    worker = Worker(
        client,
        task_queue=args.task_queue,
        workflows=[RawBundleWorkflow],
        activities=[RawActivities(client).raw_step],
        max_concurrent_activities=args.max_concurrent_activities,
        max_concurrent_workflow_tasks=args.max_concurrent_workflow_tasks,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()


def main() -> None:
    """Parse the arguments the bench passes and run the worker."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--max-concurrent-activities", type=int, required=True)
    parser.add_argument("--max-concurrent-workflow-tasks", type=int, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
