"""The one place a Temporal client is built: encrypted pydantic data converter, namespace, address."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.converter import DataConverter

from infra.codec import build_data_converter
from infra.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """The converter every client and worker of these settings uses (workers inherit their client's)."""
    return build_data_converter(settings.keyring)


async def connect(settings: Settings) -> Client:
    """Connect to the Temporal frontend named by the settings."""
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
    )
