"""The codec endpoint for the Temporal Web UI: Temporal's remote codec protocol over tellonce's keyring.

`POST …/decode` and `POST …/encode` take and answer `{"payloads": [...]}` in proto3 JSON (bytes
in base64), with the namespace in `X-Namespace`. Decoding shows a resident's data, so it needs
an operator or supervisor token and every call is audited; the server never keeps what it
decodes. Browsers may call it only from the Temporal UI's origins (CORS), and only with a JSON
content type, so another page cannot make a simple cross-site request to it.

A token arrives as `Authorization: Bearer …` (a UI with its own OIDC login and "pass access
token" on), or as the `tellonce_codec` cookie set by `…/session`: the dev stack's UI has no
login of its own, so an operator pastes their token there once and turns on "Include
cross-origin credentials" in the UI's codec settings. That form carries the app's CSRF token
(API routes are otherwise exempt), so another site cannot sign a browser in under its own
token (login CSRF); a script may instead send the token as `Authorization: Bearer`.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Header, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payloads

from infra.codec import EncryptionCodec
from infra.crypto import KeyringError
from infra.ops.audit import AuditRecord, Outcome, now
from infra.ops.auth import AuthError, Principal, Role
from infra.settings import Settings

if TYPE_CHECKING:
    from infra.websecurity import CsrfTokens

CODEC_PATH = "/api/v1/ops/codec"
COOKIE = "tellonce_codec"
MAX_CODEC_BODY = 4 * 1024 * 1024
"""Twice Temporal's 2 MiB payload limit, for the base64 overhead."""

Authorize = Callable[[Request, Role, str, str | None], Awaitable[Principal]]
"""Checks a request's token for a role, auditing a refusal: (request, role, action, token)."""
Record = Callable[[AuditRecord], Awaitable[None]]


def codec_app(settings: Settings, authorize: Authorize, record: Record) -> FastAPI:
    """The codec endpoint as an app of its own, mounted at `CODEC_PATH` (its CORS is its own)."""
    # websecurity reads this module's limits at import: its CSRF tokens are imported here.
    from infra.websecurity import CsrfTokens, csrf_secret_source, csrf_token  # noqa: PLC0415

    codec = EncryptionCodec(settings.keyring) if settings.keyring is not None else None
    csrf = CsrfTokens(csrf_secret_source(settings))
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.codec_cors_origins),
        allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
        allow_credentials=True,
        max_age=600,
    )

    async def run(request: Request, operation: str, namespace: str | None) -> Response:
        token = _token(request)
        action = f"codec.{operation}"
        principal = await authorize(request, Role.OPERATOR, action, token)
        if namespace is not None and namespace != settings.temporal_namespace:
            await record(_entry(principal, action, Outcome.DENIED, f"namespace {namespace!r} is not served"))
            return _error(403, f"this codec serves the {settings.temporal_namespace!r} namespace only")
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            return _error(415, "send the payloads as application/json")
        body = await request.body()
        if len(body) > MAX_CODEC_BODY:
            return _error(413, "too many payloads at once")
        try:
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except json_format.ParseError:
            return _error(400, 'the body must be {"payloads": [...]} in proto3 JSON')
        try:
            if codec is None:
                result = list(payloads.payloads)
            elif operation == "decode":
                result = await codec.decode(payloads.payloads)
            else:
                result = await codec.encode(payloads.payloads)
        except (KeyringError, KeyError, DecodeError) as exc:
            await record(_entry(principal, action, Outcome.FAILED, type(exc).__name__))
            return _error(422, f"a payload could not be {operation}d ({type(exc).__name__})")
        await record(
            _entry(
                principal,
                "view.personal_data" if operation == "decode" else action,
                Outcome.ACCEPTED,
                f"{len(result)} payload(s) through the codec endpoint",
            )
        )
        answer = json_format.MessageToDict(Payloads(payloads=result))
        return JSONResponse({"payloads": answer.get("payloads", [])}, headers={"Cache-Control": "no-store"})

    @app.post("/decode")
    async def decode(request: Request, x_namespace: Annotated[str | None, Header()] = None) -> Response:
        """Decrypt payloads for display (operator or supervisor; audited)."""
        return await run(request, "decode", x_namespace)

    @app.post("/encode")
    async def encode(request: Request, x_namespace: Annotated[str | None, Header()] = None) -> Response:
        """Encrypt payloads typed in the UI (e.g. a signal's input) with the active key."""
        return await run(request, "encode", x_namespace)

    @app.get("/session", response_class=HTMLResponse)
    async def session_form(request: Request) -> HTMLResponse:
        """A form to paste a token once, so the Temporal UI can send it as a cookie."""
        page = SESSION_FORM.replace("{csrf}", html.escape(csrf_token(request), quote=True))
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post("/session")
    async def session(request: Request) -> Response:
        """Keep a token (from the form, or the Authorization header) in an HttpOnly cookie.

        The form must carry the CSRF token its page gave: a browser cannot be signed in by a post
        from another site. A bearer header needs none (no other site can set it).
        """
        secure = bool(request.scope.get("tellonce.secure")) or request.url.scheme == "https"
        token = _bearer(request)
        if token is None:
            token = _posted_token(request, await request.body(), secure, csrf)
        principal = await authorize(request, Role.OPERATOR, "codec.session", token)
        await record(_entry(principal, "codec.session", Outcome.ACCEPTED, "codec cookie set"))
        answer = HTMLResponse(
            f"<!doctype html><title>tellonce codec</title><p>Signed in as {html.escape(principal.subject)} "
            f"({principal.role.value}). In the Temporal UI's codec settings, turn on "
            "“Include cross-origin credentials”.</p>",
            headers={"Cache-Control": "no-store"},
        )
        answer.set_cookie(
            COOKIE,
            token or "",
            max_age=int(settings.ops_token_ttl.total_seconds()),
            path=CODEC_PATH,
            httponly=True,
            samesite="strict",
            # Behind a TLS-terminating proxy the request reaches us over http: the app's own
            # test (TELLONCE_BEHIND_TLS) says whether the browser's connection is secure.
            secure=secure,
        )
        return answer

    @app.exception_handler(AuthError)
    async def _refused(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
        return _error(exc.status, exc.message, code=exc.code, headers=headers)

    return app


def _posted_token(request: Request, body: bytes, secure: bool, csrf: CsrfTokens) -> str | None:
    """The token pasted in the sign-in form, once the form's CSRF token is checked.

    Raises:
        AuthError: 403 when the CSRF token is missing or not this browser's.
    """
    from infra.websecurity import CSRF_COOKIE, CSRF_COOKIE_SECURE, CSRF_FIELD  # noqa: PLC0415

    form = parse_qs(body.decode("utf-8", errors="replace"))
    cookie_id = request.cookies.get(CSRF_COOKIE_SECURE if secure else CSRF_COOKIE)
    if not csrf.matches(cookie_id, (form.get(CSRF_FIELD) or [""])[0]):
        raise AuthError(403, "csrf", "open the sign-in form again and paste the token there")
    return (form.get("token") or [""])[0].strip() or None


def _bearer(request: Request) -> str | None:
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _token(request: Request) -> str | None:
    return _bearer(request) or request.cookies.get(COOKIE)


def _entry(principal: Principal, action: str, outcome: Outcome, detail: str) -> AuditRecord:
    return AuditRecord(
        at=now(),
        subject=principal.subject,
        role=principal.role.value,
        action=action,
        outcome=outcome,
        detail=detail,
    )


def _error(status: int, message: str, *, code: str | None = None, headers: Any = None) -> JSONResponse:
    # Problem documents like the rest of the API, in English only: the UI shows the text as is.
    body = {
        "type": "https://tellonce.example/problems/codec",
        "title": message,
        "status": status,
        "code": code or f"codec_{status}",
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


SESSION_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tellonce codec: sign in</title></head>
<body><main>
<h1>Decode payloads in the Temporal UI</h1>
<p>Paste an operator or supervisor token (<code>tellonce dev</code> prints one as <code>ops-token</code>).
It is kept in a cookie only this codec endpoint receives.</p>
<form method="post" action="session">
<input type="hidden" name="csrf_token" value="{csrf}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button>
</form>
</main></body></html>
"""
