"""Message-queue systems of the sandbox (placeholder until the MQ frontend lands)."""

from __future__ import annotations

from infra.sandbox.systems import SystemState
from infra.settings import Settings


class MqResponder:
    """Reads `legacy.<system>.requests` and answers on `legacy.<system>.replies`."""

    name = "mq"

    def __init__(self, states: dict[str, SystemState], settings: Settings) -> None:
        self.states = states
        self.settings = settings

    async def start(self) -> None:
        """Start serving."""

    async def stop(self) -> None:
        """Stop serving."""
