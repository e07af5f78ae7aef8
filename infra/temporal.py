"""The one place a Temporal client is built: encrypted pydantic data converter, namespace, address,
and the process's telemetry (trace propagation, tellonce metrics, the SDK's own metrics)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.converter import DataConverter

from infra.codec import build_data_converter
from infra.settings import Settings
from infra.telemetry import client_interceptors, start_process_telemetry


def data_converter(settings: Settings) -> DataConverter:
    """The converter every client and worker of these settings uses (workers inherit their client's)."""
    return build_data_converter(settings.keyring)


async def connect(settings: Settings) -> Client:
    """Connect to the Temporal frontend named by the settings.

    Workers built from the client inherit its interceptors and runtime: a span per workflow,
    activity and legacy call, and the step metrics (`infra.telemetry`). The first connection of a
    process also starts its metrics endpoints and trace export, when the settings ask for them.
    """
    runtime = start_process_telemetry(settings)
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        interceptors=client_interceptors(),
        runtime=runtime,
    )
