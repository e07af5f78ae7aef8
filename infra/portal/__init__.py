"""The resident portal: server-rendered, bilingual pages over the same intake as `/api/v1`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings


def mount_portal(app: FastAPI, settings: Settings) -> None:
    """Add the portal's pages and static files to the HTTP app."""
