"""The one place a Temporal client is built: pydantic data converter, namespace, address."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from infra.settings import Settings

DATA_CONVERTER: DataConverter = pydantic_data_converter
"""Every client and worker uses this converter (the privacy work adds its payload codec here)."""


async def connect(settings: Settings) -> Client:
    """Connect to the Temporal frontend named by the settings."""
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
    )
