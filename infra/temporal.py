"""The one place a Temporal client is built: encrypted pydantic data converter, namespace, address,
TLS or API key, and the process's telemetry (trace propagation, tellonce metrics, the SDK's own)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from infra.codec import build_data_converter
from infra.settings import Settings
from infra.telemetry import client_interceptors, start_process_telemetry


def data_converter(settings: Settings) -> DataConverter:
    """The converter every client and worker of these settings uses (workers inherit their client's)."""
    return build_data_converter(settings.keyring)


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS toward the frontend: off, the system's CAs, or a private CA and a client certificate."""
    if not settings.temporal_uses_tls:
        return False
    return TLSConfig(
        server_root_ca_cert=_read(settings.temporal_tls_ca_file),
        client_cert=_read(settings.temporal_tls_cert_file),
        client_private_key=_read(settings.temporal_tls_key_file),
        domain=settings.temporal_tls_server_name,
    )


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


async def connect(settings: Settings) -> Client:
    """Connect to the Temporal frontend named by the settings.

    Workers built from the client inherit its interceptors and runtime: a span per workflow,
    activity and legacy call, and the step metrics (`infra.telemetry`). The first connection of a
    process also starts its metrics endpoints and trace export, when the settings ask for them.
    """
    runtime = start_process_telemetry(settings)
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls_config(settings),
        api_key=api_key.get_secret_value() if api_key is not None else None,
        interceptors=client_interceptors(),
        runtime=runtime,
    )
