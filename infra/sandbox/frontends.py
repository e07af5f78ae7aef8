"""The sandbox's protocol frontends besides its REST endpoints: background servers started with the app.

Each frontend (batch files over SFTP, message-queue request/reply) speaks one legacy protocol and
records what it receives through the same `SystemState` as the REST endpoints, so every system
keeps one ledger whatever protocol reached it.
"""

from __future__ import annotations

from typing import Protocol


class Frontend(Protocol):
    """A background server of the sandbox, started and stopped with its HTTP app."""

    name: str

    async def start(self) -> None:
        """Start serving (return once it listens)."""

    async def stop(self) -> None:
        """Stop serving and release every resource."""
