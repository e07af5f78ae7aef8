"""The resident portal: server-rendered, bilingual pages over the same intake as `/api/v1`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from infra.portal import assets as static_assets
from infra.portal.assets import (
    FONTS_URL,
    GCDS_URL,
    MISSING_MESSAGE,
    OWN_STATIC,
    OWN_URL,
    load_assets,
)
from infra.portal.draft import DraftSealer
from infra.portal.i18n import Language, environments, other_language
from infra.portal.pages import Portal, PortalNotFound, router

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings

log = structlog.get_logger("tellonce.portal")

PORTAL_PATH = "/en/"
"""Where `tellonce dev` points residents (the English home page; `/` offers both languages)."""
CSS_MEDIA_TYPE = "text/css; charset=utf-8"
CORRELATION_HEADER = "X-Correlation-Id"


def mount_portal(app: FastAPI, settings: Settings) -> None:
    """Add the portal's pages and static files to the HTTP app."""
    assets = load_assets()
    if not assets.available:
        # The pages still answer (unstyled); the log says what to do.
        log.error("portal.assets_missing", message=MISSING_MESSAGE)
    portal = Portal(settings, environments(), DraftSealer(settings))
    app.state.portal = portal

    @app.get(f"{GCDS_URL}/gcds.css", include_in_schema=False)
    async def gcds_css() -> Response:
        return Response(assets.gcds_css, media_type=CSS_MEDIA_TYPE)

    @app.get(f"{FONTS_URL}/fonts.css", include_in_schema=False)
    async def fonts_css() -> Response:
        return Response(assets.fonts_css, media_type=CSS_MEDIA_TYPE)

    if assets.available:
        # Without them (no `make install`) their addresses answer 404, never a 500.
        app.mount(GCDS_URL, StaticFiles(directory=static_assets.GCDS_DIST), name="gcds")
        app.mount(FONTS_URL, StaticFiles(directory=static_assets.GCDS_FONTS), name="gcds-fonts")
    app.mount(OWN_URL, StaticFiles(directory=OWN_STATIC), name="portal-static")
    app.include_router(router())

    def error_page(request: Request, status: int, *, correlation_id: str | None = None) -> HTMLResponse:
        path = request.url.path
        lang: Language = "fr" if path.startswith("/fr/") or path == "/fr" else "en"
        kind = {404: "not_found", 500: "internal"}.get(status, "refused")
        return portal.render(
            request,
            lang,
            "error.html",
            {"kind": kind, "correlation_id": correlation_id},
            status=status,
            lang_href=f"/{other_language(lang)}/",
        )

    def internal_error_page(scope: Scope, correlation_id: str) -> HTMLResponse:
        # Called by the API's last-resort handler for a page address: an HTML apology, not JSON.
        request = Request(scope)
        response = error_page(request, 500, correlation_id=correlation_id)
        response.headers[CORRELATION_HEADER] = correlation_id
        return response

    app.state.error_page = internal_error_page

    @app.exception_handler(PortalNotFound)
    async def _not_found(request: Request, exc: PortalNotFound) -> HTMLResponse:
        return error_page(request, 404)

    # The API answers its own errors as problem JSON; the rest of the site answers in HTML.
    api_handler: Any = app.exception_handlers.get(StarletteHTTPException)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or api_handler is None:
            if api_handler is None:
                raise exc
            response: Response = await api_handler(request, exc)
            return response
        return error_page(request, exc.status_code)
