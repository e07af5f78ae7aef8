"""`until_done`'s per-attempt timeout: a hung attempt is retried, and no attempt runs in a task of its own."""

from __future__ import annotations

import asyncio

import pytest

from infra.streams import retry
from infra.streams.retry import until_done


async def test_an_attempt_that_hangs_past_its_timeout_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "ATTEMPT_TIMEOUT", 0.05)
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)  # a start that never answers
        return "done"

    assert await asyncio.wait_for(until_done(attempt, what="test"), 5) == "done"
    assert calls == 2


async def test_an_attempt_runs_in_the_callers_task() -> None:
    # Each record's attempt used to be wrapped in a task of its own (`asyncio.wait_for` on
    # Python 3.11): one more task and loop pass per record, on the streams role's hot path.
    caller = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def attempt() -> None:
        seen.append(asyncio.current_task())

    await until_done(attempt, what="test")
    assert seen == [caller]


async def test_cancelling_the_caller_is_not_retried() -> None:
    started = asyncio.Event()

    async def attempt() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(until_done(attempt, what="test"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
