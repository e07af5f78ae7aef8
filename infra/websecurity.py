"""Browser-facing protections for every response: security headers, CSRF and per-client rate limits.

`secure_app` is the last thing `create_app` calls, so its middlewares wrap every route: the API,
the portal's pages, the operations API and static files alike. Outermost first:

- `SecurityHeaders` gives each request a fresh CSP nonce (`request.state.csp_nonce`) and adds the
  security headers and `Cache-Control` to every answer, refusals and errors included;
- `RateLimits` keeps a token bucket per client and budget (submit, status, withdraw);
- `BodyGuard` bounds request bodies (chunked ones too) and, on the pages (not `/api/`), refuses
  an unsafe method whose `csrf_token` does not match the browser's CSRF cookie.

The limits are in memory, per API process: a limit shared between processes belongs to the
gateway in front of them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import structlog
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.formparsers import MultiPartException
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bundles.models import LocalizedText
from infra.ops.codec_server import CODEC_PATH, MAX_CODEC_BODY
from infra.settings import RateLimit, Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = structlog.get_logger("tellonce.websecurity")

MAX_BODY_BYTES = 256 * 1024
"""Largest request body, the same bound as the API's (`infra.api.MAX_BODY_BYTES`)."""


def body_limit(path: str) -> int:
    """Largest body a path takes: the Temporal UI's codec calls carry whole histories' payloads."""
    return MAX_CODEC_BODY if path.startswith(CODEC_PATH) else MAX_BODY_BYTES


ASSETS_PREFIX = "/assets/"
"""Static files: cached (for a year when their path names their version)."""
API_PREFIX = "/api/"
"""The JSON API authenticates with headers (access code, bearer token), never cookies: no CSRF check."""
DOCS_PATH = "/api/v1/docs"
SWAGGER_UI_DIR = Path(__file__).resolve().parent.parent / "node_modules" / "swagger-ui-dist"

CSRF_FIELD = "csrf_token"
"""The hidden form field that carries `csrf_token(request)`."""
CSRF_HEADER = "x-csrf-token"
"""Where a script may send the token instead of the form field."""
CSRF_COOKIE = "tellonce-csrf"
CSRF_COOKIE_SECURE = "__Host-tellonce-csrf"
"""The cookie's name over HTTPS: the `__Host-` prefix makes browsers refuse it from a subdomain."""
CSRF_SECRET_FILE = "csrf-secret"  # noqa: S105 - a file name, not a secret
_CSRF_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_STATE_NEW_CSRF_ID = "csrf_new_id"
_SCOPE_CSRF = "tellonce.csrf"

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
)
ASSET_CACHE = "public, max-age=31536000, immutable"
"""For assets whose path names their version: a new version is a new address."""
UNVERSIONED_ASSET_CACHE = "public, max-age=3600"
"""For assets at a fixed address (GCDS, the portal's files): an upgrade reaches browsers within an hour."""
_VERSION_SEGMENT = re.compile(r"/\d+\.\d+\.\d+/")
HSTS = "max-age=31536000; includeSubDomains"

Budget = Literal["submit", "status", "withdraw"]

_API_SUBMIT = re.compile(r"^/api/v1/bundles/[^/]+/submissions/?$")
_API_STATUS = re.compile(r"^/api/v1/submissions/[^/]+/?$")
_API_WITHDRAW = re.compile(r"^/api/v1/submissions/[^/]+/withdraw/?$")
PAGE_SUBMIT_SEGMENTS = frozenset({"submit", "soumettre"})
PAGE_WITHDRAW_SEGMENTS = frozenset({"withdraw", "retirer", "retrait"})
PAGE_STATUS_SEGMENTS = frozenset({"status", "statut", "suivi"})


def content_security_policy(nonce: str) -> str:
    """The CSP of every answer: our own origin only, and inline code only with this request's nonce."""
    return (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def rate_budget(method: str, path: str) -> Budget | None:
    """Which rate budget a request spends, if any.

    - `submit`: `POST /api/v1/bundles/{id}/submissions`, and a page `POST` whose last path
      segment is `submit` (or `soumettre`);
    - `withdraw`: `POST /api/v1/submissions/{id}/withdraw`, and a page `POST` whose last segment
      is `withdraw` (`retirer`, `retrait`);
    - `status`: `GET /api/v1/submissions/{id}`, and any page request with a `status` (`statut`,
      `suivi`) segment: the status pages, their JSON and the form that checks an access code.
    """
    budget: Budget | None = None
    if path.startswith(API_PREFIX):
        if method == "POST" and _API_SUBMIT.match(path):
            budget = "submit"
        elif method == "POST" and _API_WITHDRAW.match(path):
            budget = "withdraw"
        elif method in ("GET", "HEAD") and _API_STATUS.match(path):
            budget = "status"
        return budget
    segments = [s for s in path.lower().split("/") if s]
    last = segments[-1] if segments else ""
    if method == "POST" and last in PAGE_WITHDRAW_SEGMENTS:
        budget = "withdraw"
    elif method == "POST" and last in PAGE_SUBMIT_SEGMENTS:
        budget = "submit"
    elif PAGE_STATUS_SEGMENTS.intersection(segments):
        budget = "status"
    return budget


def client_address(scope: Scope, trusted_proxies: int) -> str:
    """The client a request comes from, for rate limiting.

    With `trusted_proxies` = N > 0, the N proxies in front each append the address they received
    the request from to `X-Forwarded-For`, so the client is the N-th entry from the right; the
    entries to its left are the client's own word and are ignored.
    """
    peer = scope.get("client")
    address = str(peer[0]) if peer else "unknown"
    if trusted_proxies <= 0:
        return address
    forwarded = [
        hop.strip()
        for value in Headers(scope=scope).getlist("x-forwarded-for")
        for hop in value.split(",")
        if hop.strip()
    ]
    return forwarded[-trusted_proxies] if len(forwarded) >= trusted_proxies else address


class TokenBucket:
    """Token buckets, one per client, for one budget: `burst` at once, refilled at `per_minute`.

    At most `max_clients` buckets are kept; the least recently seen go first (a forgotten client
    starts again with a full bucket, as it would after a quiet while).
    """

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Spend one token of `client`'s bucket: 0 when there was one, else seconds until there is."""
        now = self._clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class CsrfTokens:
    """Signed double-submit tokens: the cookie holds a random id, the form its HMAC under a secret."""

    def __init__(self, secret: Callable[[], bytes]) -> None:
        self._secret_source = secret
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            self._secret = self._secret_source()
        return self._secret

    def token_for(self, cookie_id: str) -> str:
        """The form token that goes with a cookie id."""
        digest = hmac.new(self._key(), b"tellonce-csrf/v1:" + cookie_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def matches(self, cookie_id: str | None, token: str | None) -> bool:
        """Whether a form token was made for this cookie id (in constant time)."""
        if not cookie_id or not token or not _CSRF_ID.match(cookie_id):
            return False
        return hmac.compare_digest(self.token_for(cookie_id).encode(), token.encode())


def csrf_token(request: Request) -> str:
    """The token to put in a form's hidden `csrf_token` field.

    A browser without a CSRF cookie gets one with this answer (HttpOnly, SameSite=Strict), so
    call this while building the page whose form will be posted.
    """
    tokens: CsrfTokens = request.scope[_SCOPE_CSRF]
    state = request.scope.setdefault("state", {})
    cookie_id = state.get(_STATE_NEW_CSRF_ID) or _cookie_id(request.scope)
    if cookie_id is None:
        cookie_id = secrets.token_urlsafe(32)
        state[_STATE_NEW_CSRF_ID] = cookie_id
    return tokens.token_for(cookie_id)


def _secure(scope: Scope, behind_tls: bool) -> bool:
    return behind_tls or scope.get("scheme") in ("https", "wss")


def _cookie_name(scope: Scope) -> str:
    return CSRF_COOKIE_SECURE if scope.get("tellonce.secure") else CSRF_COOKIE


def _cookie_id(scope: Scope) -> str | None:
    cookie_id = cookie_parser(Headers(scope=scope).get("cookie", "")).get(_cookie_name(scope))
    return cookie_id if cookie_id and _CSRF_ID.match(cookie_id) else None


class SecurityHeaders:
    """ASGI middleware: a CSP nonce per request, and the security headers on every answer.

    `Cache-Control: no-store` on everything (status answers carry personal data) except static
    files under `/assets/`, which are cached for a year. HSTS when the request came over HTTPS or
    the deployment says it is behind TLS. An error that escapes the app still gets a bare 500
    with these headers.
    """

    def __init__(self, app: ASGIApp, *, behind_tls: bool, csrf: CsrfTokens) -> None:
        self.app = app
        self.behind_tls = behind_tls
        self.csrf = csrf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        state = scope.setdefault("state", {})
        state["csp_nonce"] = nonce
        scope[_SCOPE_CSRF] = self.csrf
        secure = _secure(scope, self.behind_tls)
        scope["tellonce.secure"] = secure
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                self._add(headers, scope, message["status"], nonce, secure)
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception as exc:
            # The app's own error handler answers first; this is for an error in a middleware.
            log.error("web.unhandled_error", error=type(exc).__name__, method=scope.get("method"))
            if not started:
                await Response("Internal Server Error", status_code=500)(scope, receive, with_headers)

    def _add(self, headers: MutableHeaders, scope: Scope, status: int, nonce: str, secure: bool) -> None:
        headers["Content-Security-Policy"] = content_security_policy(nonce)
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Permissions-Policy"] = PERMISSIONS_POLICY
        if secure:
            headers["Strict-Transport-Security"] = HSTS
        asset = str(scope.get("path", "")).startswith(ASSETS_PREFIX) and status < 400
        if asset:
            versioned = _VERSION_SEGMENT.search(str(scope.get("path", ""))) is not None
            headers["Cache-Control"] = ASSET_CACHE if versioned else UNVERSIONED_ASSET_CACHE
        else:
            headers["Cache-Control"] = "no-store"
        if not asset and "pragma" not in headers:
            headers["Pragma"] = "no-cache"
        new_id = scope.get("state", {}).get(_STATE_NEW_CSRF_ID)
        if new_id:
            attributes = "; Secure" if secure else ""
            headers.append(
                "Set-Cookie",
                f"{_cookie_name(scope)}={new_id}; Path=/; HttpOnly; SameSite=Strict{attributes}",
            )


class RateLimits:
    """ASGI middleware: per-client token buckets for submit, status and withdraw (see `rate_budget`)."""

    def __init__(self, app: ASGIApp, *, limits: Mapping[Budget, RateLimit], trusted_proxies: int) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.buckets: dict[Budget, TokenBucket] = {
            budget: TokenBucket(limit.burst, limit.per_minute) for budget, limit in limits.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            budget = rate_budget(scope["method"], scope["path"])
            if budget is not None:
                wait = self.buckets[budget].take(client_address(scope, self.trusted_proxies))
                if wait > 0:
                    retry_after = max(1, math.ceil(wait))
                    log.info("web.rate_limited", budget=budget, retry_after=retry_after)
                    answer = refusal(scope, 429, headers={"Retry-After": str(retry_after)})
                    await answer(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyGuard:
    """ASGI middleware: bounded bodies, and CSRF on the pages.

    A body over `max_bytes` gets a 413, whether or not it announced its length. The pages'
    unsafe methods are read whole (within the bound), checked for a `csrf_token` matching the
    cookie, then replayed to the route, which reads its form as usual. The API's bodies with a
    Content-Length stream through untouched: its routes bound what they read.
    """

    def __init__(self, app: ASGIApp, *, csrf: CsrfTokens, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.csrf = csrf
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        api = scope["path"].startswith(API_PREFIX)
        max_bytes = body_limit(scope["path"]) if self.max_bytes == MAX_BODY_BYTES else self.max_bytes
        if length is not None and length.isdigit() and int(length) > max_bytes:
            await refusal(scope, 413)(scope, receive, send)
            return
        if api and length is not None:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(receive, max_bytes)
        except _ClientGone:
            return  # nobody to answer
        refused: int | Literal[False] = 413 if body is None else False
        if body is not None and not api:
            refused = await self._csrf_refusal(scope, headers, body)
        if refused:
            await refusal(scope, refused)(scope, receive, send)
            return
        await self.app(scope, _Replay(body or b"", receive), send)

    async def _read(self, receive: Receive, max_bytes: int) -> bytes | None:
        """The whole body, or None past `max_bytes`."""
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > max_bytes:
                return None
        return bytes(body)

    async def _csrf_refusal(self, scope: Scope, headers: Headers, body: bytes) -> int | Literal[False]:
        """The status to refuse a page's unsafe request with, or False when its CSRF token is right."""
        try:
            token = headers.get(CSRF_HEADER) or await _form_token(scope, body)
        except MultiPartException:
            return 400
        if self.csrf.matches(_cookie_id(scope), token):
            return False
        log.info("web.csrf_refused", method=scope["method"], cookie=_cookie_id(scope) is not None)
        return 403


class _ClientGone(Exception):  # noqa: N818 - internal signal, not an error
    pass


class _Replay:
    """An ASGI `receive` that gives the buffered body once, then waits on the real one (disconnect)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()


async def _form_token(scope: Scope, body: bytes) -> str | None:
    """The form's `csrf_token` field, parsed by Starlette from a copy of the body."""
    content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return None
    form = await Request(scope, _Replay(body, _no_more)).form()
    try:
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    finally:
        await form.close()


async def _no_more() -> Message:
    return {"type": "http.disconnect"}


@dataclass(frozen=True)
class _Refusal:
    title: str
    message: LocalizedText


REFUSALS: dict[int, _Refusal] = {
    400: _Refusal(
        "Malformed request",
        LocalizedText(
            en="This request cannot be read. Go back and try again.",
            fr="Cette requête est illisible. Revenez en arrière et réessayez.",
        ),
    ),
    403: _Refusal(
        "Form expired",
        LocalizedText(
            en=(
                "For your security, this form could not be accepted: it may have been open too long "
                "or in another window. Go back, reload the page and send it again."
            ),
            fr=(
                "Pour votre sécurité, ce formulaire n'a pas pu être accepté : il a peut-être été "
                "ouvert trop longtemps ou dans une autre fenêtre. Revenez en arrière, rechargez la "
                "page et envoyez-le de nouveau."
            ),
        ),
    ),
    413: _Refusal(
        "Request too large",
        LocalizedText(en="The request is too large.", fr="La requête est trop volumineuse."),
    ),
    429: _Refusal(
        "Too many requests",
        LocalizedText(
            en="Too many requests from your connection. Please wait a moment, then try again.",
            fr=(
                "Trop de requêtes proviennent de votre connexion. Veuillez patienter un moment, "
                "puis réessayer."
            ),
        ),
    ),
}
_PAGE_TITLES: dict[int, str] = {
    400: "Requête illisible",
    403: "Formulaire expiré",
    413: "Requête trop volumineuse",
    429: "Trop de requêtes",
}


def refusal(scope: Scope, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """A refusal: an RFC 9457 problem for `/api/`, a bilingual HTML page for browsers."""
    refused = REFUSALS[status]
    if str(scope.get("path", "")).startswith(API_PREFIX):
        code = re.sub(r"[^a-z0-9]+", "_", refused.title.lower()).strip("_")
        body = {
            "type": f"https://tellonce.example/problems/{refused.title.lower().replace(' ', '-')}",
            "title": refused.title,
            "status": status,
            "detail": refused.message.model_dump(),
            "errors": [{"path": "", "code": code, "message": refused.message.model_dump()}],
        }
        return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)
    return HTMLResponse(_refusal_page(status, refused), status_code=status, headers=headers)


def _refusal_page(status: int, refused: _Refusal) -> str:
    french = _PAGE_TITLES[status]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(refused.title)} / {escape(french)}</title>\n</head>\n<body>\n<main>\n"
        f"<section><h1>{escape(refused.title)}</h1>\n<p>{escape(refused.message.en)}</p></section>\n"
        f'<section lang="fr"><h2>{escape(french)}</h2>\n<p>{escape(refused.message.fr)}</p></section>\n'
        '<p><a href="/">tellonce</a></p>\n</main>\n</body>\n</html>\n'
    )


def csrf_secret_source(settings: Settings) -> Callable[[], bytes]:
    """Where the CSRF secret comes from: the setting, or (outside production) a file made once.

    Raises:
        RuntimeError: in production without `TELLONCE_CSRF_SECRET`.
    """
    if settings.csrf_secret is not None:
        configured = settings.csrf_secret.get_secret_value().encode()
        return lambda: configured
    if settings.environment == "production":
        raise RuntimeError("TELLONCE_CSRF_SECRET must be set to a secret of your own in production")
    path = settings.data_dir / "keys" / CSRF_SECRET_FILE
    # Read only when a form is first served or checked: processes that never do make no file.
    return lambda: _load_or_create_secret(path)


def _load_or_create_secret(path: Path) -> bytes:
    """A random secret kept in `path` (0600), made by whichever process comes first."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        # link() fails if another process linked its own first: everyone then reads that one.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_text().strip().encode()


def _docs_page(request: Request) -> HTMLResponse:
    """Swagger UI from this server's own copy, its one inline script carrying the request's nonce."""
    nonce = request.state.csp_nonce
    version = _swagger_ui_version()
    assets = f"{ASSETS_PREFIX}swagger-ui/{version}"
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon-32x32.png",
        # No badge fetched from the public validator: no request may leave for another host.
        swagger_ui_parameters={"validatorUrl": None},
    )
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    return HTMLResponse(html)


def _swagger_ui_version() -> str:
    try:
        package = json.loads((SWAGGER_UI_DIR / "package.json").read_text())
    except (OSError, ValueError):
        return "missing"
    return str(package.get("version", "unknown"))


def _serve_docs_locally(app: FastAPI) -> None:
    """Replace FastAPI's docs page (Swagger UI from a CDN) by one served from node_modules.

    FastAPI's OAuth2 redirect helper goes too: no flow of ours uses it, and its inline script
    has no nonce.
    """
    replaced = {app.docs_url, app.swagger_ui_oauth2_redirect_url} - {None}
    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) not in replaced
    ]
    app.swagger_ui_oauth2_redirect_url = None
    if app.docs_url is None:
        return
    routes: list[Route | Mount] = [Route(app.docs_url, _docs_page, methods=["GET"], include_in_schema=False)]
    if SWAGGER_UI_DIR.is_dir():
        static = StaticFiles(directory=SWAGGER_UI_DIR)
        routes.append(Mount(f"{ASSETS_PREFIX}swagger-ui/{_swagger_ui_version()}", app=static))
    else:
        log.warning("web.swagger_ui_missing", hint="run make install")
    # First, so a catch-all of the portal's cannot shadow them.
    app.router.routes[:0] = routes


def _document_rate_limits(app: FastAPI) -> None:
    """Add the 429 answer to the OpenAPI description of each rate-limited API route."""
    for route in app.router.routes:
        if not isinstance(route, APIRoute):
            continue
        example = re.sub(r"\{[^}]+\}", "x", route.path)
        if any(rate_budget(method, example) for method in route.methods or ()):
            route.responses.setdefault(
                429,
                {
                    "description": "Too many requests from this client; retry after `Retry-After` s.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            )


def secure_app(app: FastAPI, settings: Settings) -> None:
    """Install the protections on the HTTP app (called last, so they wrap everything).

    Raises:
        RuntimeError: in production without `TELLONCE_CSRF_SECRET`.
    """
    csrf = CsrfTokens(csrf_secret_source(settings))
    _serve_docs_locally(app)
    # add_middleware puts each one outside the ones before it: the headers are outermost.
    app.add_middleware(BodyGuard, csrf=csrf)
    if settings.rate_limiting:
        _document_rate_limits(app)
        limits: dict[Budget, RateLimit] = {
            "submit": settings.rate_limit_submit,
            "status": settings.rate_limit_status,
            "withdraw": settings.rate_limit_withdraw,
        }
        app.add_middleware(RateLimits, limits=limits, trusted_proxies=settings.trusted_proxies)
    app.add_middleware(SecurityHeaders, behind_tls=settings.behind_tls, csrf=csrf)
