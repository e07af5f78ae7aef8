"""Metrics and traces: Prometheus series and OpenTelemetry spans for every tellonce process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings


def mount_metrics(app: FastAPI, settings: Settings) -> None:
    """Expose the process's metrics on the HTTP app."""
