"""Fixtures of the resilience suite: the whole dev stack as separate processes, on a fresh data
dir and free ports, always stopped at the end, with every service's log tail printed on failure.

`TELLONCE_CHAOS=full` selects the long version (more bundles, faults held for minutes); the
default is the short version that runs in CI.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from infra.devstack import port_is_free
from infra.settings import PORT_OFFSETS, Settings
from tests.chaos.scenario import say
from tests.chaos.stack import ChaosStack

FULL = os.environ.get("TELLONCE_CHAOS", "").strip().lower() == "full"


def free_port_base() -> int:
    """A port base whose every dev-stack port is free right now."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        if all(port_is_free("127.0.0.1", base + offset) for offset in PORT_OFFSETS.values()):
            return base
    pytest.fail("no free port base found in 20000-40000")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test failed, so the stack fixture knows to print the logs."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def chaos_stack(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChaosStack]:
    """The dev stack's services, started stage by stage as `tellonce dev` starts them.

    CRA's nightly closure is switched off (`TELLONCE_LEGACY_SYSTEMS={}`) so the outcome does not
    depend on the hour CI runs; every other setting is the dev stack's own, keyring included.
    """
    # The services see none of the test session's TELLONCE_* variables (its test keyring, say):
    # neither may the settings this side uses to reach them.
    for name in [name for name in os.environ if name.startswith("TELLONCE_")]:
        monkeypatch.delenv(name)
    settings = Settings(port_base=free_port_base(), data_dir=tmp_path / "data", legacy_systems={})
    settings.data_dir.mkdir(parents=True)
    # The stack's own keyring file under its data dir, made before any service starts, as
    # `tellonce dev` makes it, so they cannot race to create it.
    _ = settings.keyring
    stack = ChaosStack(settings, extra_env={"TELLONCE_LEGACY_SYSTEMS": "{}"})
    try:
        await stack.start_all()
    except BaseException:
        stack.stop_all()
        say(f"\n===== service logs (under {stack.log_dir}) =====\n{stack.tails(40)}")
        raise
    try:
        yield stack
    finally:
        stack.stop_all()
        if request.node.stash.get(FAILED, False):
            say(f"\n===== service logs (under {stack.log_dir}) =====\n{stack.tails(40)}")
