"""Batch-file exchange of the sandbox's batch systems (placeholder until the batch frontend lands)."""

from __future__ import annotations

from infra.sandbox.systems import SystemState
from infra.settings import Settings


class BatchExchange:
    """Takes request files over SFTP (or a shared directory) and writes reply files later."""

    name = "batch"

    def __init__(self, states: dict[str, SystemState], settings: Settings) -> None:
        self.states = states
        self.settings = settings

    async def start(self) -> None:
        """Start serving."""

    async def stop(self) -> None:
        """Stop serving."""
