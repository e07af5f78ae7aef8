"""Browser-facing protections for every response: security headers, CSRF and per-client rate limits."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings


def secure_app(app: FastAPI, settings: Settings) -> None:
    """Install the protections on the HTTP app (called last, so they wrap everything)."""
