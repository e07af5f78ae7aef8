"""The operations HTTP surface: `/api/v1/ops/…` and the ops console."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings


def mount_ops(app: FastAPI, settings: Settings) -> None:
    """Add the operations routes to the HTTP app."""
