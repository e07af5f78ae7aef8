"""Web protections on the real app: security headers, CSP nonces, CSRF, rate limits, body bounds.

The app is `create_app` with an intake that has the real catalogue and no Temporal client: every
request here is answered before Temporal would be needed (unknown bundles, malformed tracking
ids), which is all the protections in front of the routes need.
"""

from __future__ import annotations

import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.routing import Route
from temporalio.client import Client

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.api import MAX_BODY_BYTES as API_MAX_BODY_BYTES
from infra.api import create_app
from infra.intake import Intake
from infra.ops.codec_server import CODEC_PATH, MAX_CODEC_BODY
from infra.settings import RateLimit, Settings
from infra.websecurity import (
    MAX_BODY_BYTES,
    TokenBucket,
    client_address,
    csrf_token,
    rate_budget,
    secure_app,
)

CATALOGUE = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
BASE = "http://tellonce.test"
STATIC_HEADERS = {
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
CSP = re.compile(
    r"^default-src 'self'; script-src 'self' 'nonce-(?P<nonce>[A-Za-z0-9_-]{24})'; "
    r"style-src 'self' 'nonce-(?P=nonce)'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
    r"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'$"
)


async def _form_page(request: Request) -> HTMLResponse:
    token = csrf_token(request)
    return HTMLResponse(f'<form method="post"><input name="csrf_token" value="{token}"></form>')


async def _form_post(request: Request) -> HTMLResponse:
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    return HTMLResponse(repr(sorted(fields.items())))


async def _status_page(request: Request) -> HTMLResponse:
    return HTMLResponse(f"<p>{request.state.csp_nonce}</p>")


async def _broken(request: Request) -> HTMLResponse:
    raise RuntimeError("a bug")


def make_app(tmp_path: Path, **overrides: Any) -> FastAPI:
    """`create_app` plus a few page routes standing for the portal's (a form, a status page, a bug)."""
    settings = Settings(**{"environment": "test", "data_dir": tmp_path, **overrides})
    app = create_app(settings, intake=Intake(cast("Client", None), CATALOGUE, settings))
    # In front of the portal's own routes, so none of them can shadow these.
    app.router.routes[:0] = [
        Route("/en/test-form", _form_page, methods=["GET"]),
        Route("/en/test-form", _form_post, methods=["POST"]),
        Route("/en/status/{tracking_id}", _status_page, methods=["GET"]),
        Route("/en/broken", _broken, methods=["GET"]),
    ]
    return app


def client(app: FastAPI, address: str = "192.0.2.10", base_url: str = BASE) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture(scope="module")
def plain_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """One app for the tests without rate limits: it keeps no state between clients."""
    return make_app(tmp_path_factory.mktemp("web"))


@pytest.fixture
async def web(plain_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(plain_app) as c:
        yield c


@pytest.fixture
def limited_app(tmp_path: Path) -> FastAPI:
    return make_app(
        tmp_path,
        rate_limits_enabled=True,
        rate_limit_submit=RateLimit(burst=2, per_minute=1),
        rate_limit_status=RateLimit(burst=3, per_minute=1),
        rate_limit_withdraw=RateLimit(burst=1, per_minute=1),
    )


def assert_protected(response: httpx.Response, *, cache: str = "no-store") -> str:
    """Every security header is there; returns the response's nonce."""
    for name, value in STATIC_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "camera=()" in response.headers["permissions-policy"]
    assert "geolocation=()" in response.headers["permissions-policy"]
    assert response.headers["cache-control"] == cache
    csp = CSP.match(response.headers["content-security-policy"])
    assert csp is not None, response.headers["content-security-policy"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    return csp.group("nonce")


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body sent in chunks without a Content-Length."""
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"a" * part


# Headers and nonces


async def test_every_kind_of_answer_carries_the_security_headers(web: httpx.AsyncClient) -> None:
    answers = {
        "html": await web.get("/api/v1/docs"),
        "json": await web.get("/api/v1/bundles"),
        "api 404": await web.get("/api/v1/no-such-thing"),
        "status 404": await web.get("/api/v1/submissions/not-a-tracking-id"),
        "page 500": await web.get("/en/broken"),
        "csrf 403": await web.post("/en/test-form", data={"a": "b"}),
        "413": await web.post("/en/test-form", content=b"a" * (MAX_BODY_BYTES + 1)),
    }
    assert {name: r.status_code for name, r in answers.items()} == {
        "html": 200,
        "json": 200,
        "api 404": 404,
        "status 404": 404,
        "page 500": 500,
        "csrf 403": 403,
        "413": 413,
    }
    for name, response in answers.items():
        assert assert_protected(response), name
    # The API's JSON too is never stored: status answers carry personal data.
    assert answers["json"].headers["cache-control"] == "no-store"
    # Plain HTTP without a TLS deployment: no HSTS (a browser would ignore it anyway).
    assert "strict-transport-security" not in answers["json"].headers


async def test_rate_limited_answers_carry_the_security_headers(limited_app: FastAPI) -> None:
    async with client(limited_app) as web:
        for _ in range(3):
            await web.get("/en/status/abc")
        refused = await web.get("/en/status/abc")
    assert refused.status_code == 429
    assert_protected(refused)


async def test_each_request_gets_a_fresh_nonce_the_page_can_use(web: httpx.AsyncClient) -> None:
    pages = [await web.get("/en/status/abc") for _ in range(5)]
    nonces = [assert_protected(page) for page in pages]
    assert len(set(nonces)) == 5
    # request.state.csp_nonce is the header's nonce, so the page's inline code runs.
    assert [page.text for page in pages] == [f"<p>{nonce}</p>" for nonce in nonces]


async def test_the_api_docs_load_swagger_ui_from_this_server_with_the_nonce(web: httpx.AsyncClient) -> None:
    docs = await web.get("/api/v1/docs")
    nonce = assert_protected(docs)
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources, docs.text
    assert all(source.startswith("/assets/swagger-ui/") for source in sources), sources
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", docs.text)
    assert inline == [f' nonce="{nonce}"'], inline
    assert '"validatorUrl": null' in docs.text  # no badge from the public validator
    for source in sources:
        asset = await web.get(source)
        assert asset.status_code == 200, source
        assert_protected(asset, cache="public, max-age=31536000, immutable")
    # FastAPI's OAuth2 redirect helper (an inline script without nonce) is not served.
    assert "oauth2" not in (await web.get("/docs/oauth2-redirect")).text.lower()
    missing = await web.get("/assets/swagger-ui/0.0.0/swagger-ui.css")
    assert missing.status_code == 404
    assert missing.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("base_url", "behind_tls", "hsts"),
    [("http://tellonce.test", False, False), ("https://tellonce.test", False, True), (BASE, True, True)],
)
async def test_hsts_when_served_over_https_or_behind_tls(
    tmp_path: Path, base_url: str, behind_tls: bool, hsts: bool
) -> None:
    async with client(make_app(tmp_path, behind_tls=behind_tls), base_url=base_url) as web:
        page = await web.get("/en/test-form")
    expected = "max-age=31536000; includeSubDomains" if hsts else None
    assert page.headers.get("strict-transport-security") == expected
    cookie = page.headers["set-cookie"]
    # Over TLS the cookie is Secure and __Host- bound to this host.
    assert cookie.startswith("__Host-tellonce-csrf=" if hsts else "tellonce-csrf=")
    assert ("; Secure" in cookie) is hsts


# CSRF


async def test_a_form_posted_with_its_token_reaches_the_route_with_every_field(
    web: httpx.AsyncClient,
) -> None:
    page = await web.get("/en/test-form")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    token = re.search(r'value="([^"]+)"', page.text)
    assert token is not None
    posted = await web.post(
        "/en/test-form", data={"csrf_token": token.group(1), "given_names": "Zoë-Chloé", "step": "2"}
    )
    assert posted.status_code == 200, posted.text
    assert posted.text == repr(
        sorted({"csrf_token": token.group(1), "given_names": "Zoë-Chloé", "step": "2"}.items())
    )
    # The same token serves every form of the visit, and multipart forms are read too.
    again = await web.post(
        "/en/test-form", files={"note": (None, "deux")}, data={"csrf_token": token.group(1)}
    )
    assert again.status_code == 200, again.text
    assert "('note', 'deux')" in again.text
    # A page that asks again for a token keeps the browser's cookie.
    assert "set-cookie" not in (await web.get("/en/test-form")).headers


async def test_forms_without_the_right_token_are_refused_with_a_bilingual_page(
    tmp_path: Path, web: httpx.AsyncClient
) -> None:
    page = await web.get("/en/test-form")
    token = re.search(r'value="([^"]+)"', page.text)
    assert token is not None
    async with client(make_app(tmp_path)) as stranger:
        # Another browser's cookie and token: each is valid, but not together.
        other = re.search(r'value="([^"]+)"', (await stranger.get("/en/test-form")).text)
        assert other is not None
    refused = {
        "no token": await web.post("/en/test-form", data={"a": "b"}),
        "wrong token": await web.post("/en/test-form", data={"csrf_token": "x" * 43}),
        "other browser's token": await web.post("/en/test-form", data={"csrf_token": other.group(1)}),
        "no body": await web.post("/en/test-form"),
        "json": await web.post("/en/test-form", json={"csrf_token": token.group(1)}),
    }
    web.cookies.clear()
    refused["no cookie"] = await web.post("/en/test-form", data={"csrf_token": token.group(1)})
    for name, answer in refused.items():
        assert answer.status_code == 403, name
        assert answer.headers["content-type"].startswith("text/html")
        assert '<html lang="en">' in answer.text and '<section lang="fr">' in answer.text
        assert "Formulaire expiré" in answer.text
    for method in ("PUT", "PATCH", "DELETE"):
        assert (await web.request(method, "/en/test-form")).status_code == 403, method


async def test_a_script_may_send_the_token_in_a_header(web: httpx.AsyncClient) -> None:
    page = await web.get("/en/test-form")
    token = re.search(r'value="([^"]+)"', page.text)
    assert token is not None
    posted = await web.post("/en/test-form", data={"a": "b"}, headers={"X-CSRF-Token": token.group(1)})
    assert posted.status_code == 200


async def test_the_json_api_needs_no_csrf_token(web: httpx.AsyncClient) -> None:
    answer = await web.post("/api/v1/bundles/no-such-bundle/submissions", json={})
    assert answer.status_code == 404
    assert answer.json()["title"] == "Unknown bundle"


async def test_the_csrf_secret_is_made_once_and_shared_by_every_process_of_a_data_dir(
    tmp_path: Path,
) -> None:
    first, second = make_app(tmp_path), make_app(tmp_path)
    secret = tmp_path / "keys" / "csrf-secret"
    assert not secret.exists()  # made only when a form needs it
    async with client(first) as web:
        page = await web.get("/en/test-form")
    token = re.search(r'value="([^"]+)"', page.text)
    assert token is not None
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # A form served by one API process is accepted by another.
    async with client(second) as web:
        cookie = page.headers["set-cookie"].split(";")[0]
        answer = await web.post(
            "/en/test-form", data={"csrf_token": token.group(1)}, headers={"Cookie": cookie}
        )
    assert answer.status_code == 200


def test_production_needs_its_own_csrf_secret(tmp_path: Path) -> None:
    app = FastAPI()
    production: dict[str, Any] = {
        "environment": "production",
        "access_code_secret": "a-production-access-code-secret",
        "correlation_secret": "a-production-correlation-secret",
        "encryption_keys_file": tmp_path / "keyring.json",
        "kafka_bootstrap": "kafka:9092",
        "batch_transport": "directory",
        "ops_enabled": False,
    }
    with pytest.raises(RuntimeError, match="TELLONCE_CSRF_SECRET"):
        secure_app(app, Settings(**production))
    secure_app(app, Settings(**production, csrf_secret="a-production-csrf-secret"))
    assert not (tmp_path / "keys").exists()


# Rate limits


async def test_submissions_past_the_budget_get_429_with_retry_after(limited_app: FastAPI) -> None:
    async with client(limited_app) as web, client(limited_app, address="192.0.2.99") as neighbour:
        answers = [await web.post("/api/v1/bundles/no-such-bundle/submissions", json={}) for _ in range(3)]
        other = await neighbour.post("/api/v1/bundles/no-such-bundle/submissions", json={})
        status = await web.get("/api/v1/submissions/not-a-tracking-id")
    assert [a.status_code for a in answers] == [404, 404, 429]
    refused = answers[2]
    # One token a minute: the next one comes within 60 s.
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status"] == 429 and problem["title"] == "Too many requests"
    assert set(problem["detail"]) == {"en", "fr"}
    # Another client, and another budget of the same client, are untouched.
    assert other.status_code == 404
    assert status.status_code == 404


async def test_status_pages_and_withdrawals_have_their_own_budgets(limited_app: FastAPI) -> None:
    async with client(limited_app) as web:
        pages = [(await web.get("/en/status/abc")).status_code for _ in range(4)]
        withdrawals = [
            (await web.post("/api/v1/submissions/not-a-tracking-id/withdraw")).status_code for _ in range(2)
        ]
        form = await web.get("/en/test-form")
    assert pages == [200, 200, 200, 429]
    assert withdrawals == [404, 429]
    assert form.status_code == 200  # pages outside every budget are never limited
    refused = await client(limited_app).get("/en/status/abc")
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/html")
    assert "Trop de requêtes" in refused.text


async def test_x_forwarded_for_counts_only_behind_trusted_proxies(tmp_path: Path) -> None:
    limits = {"rate_limits_enabled": True, "rate_limit_status": RateLimit(burst=1, per_minute=1)}

    async def statuses(app: FastAPI, forwarded: list[str]) -> list[int]:
        async with client(app, address="10.0.0.1") as proxy:
            return [
                (await proxy.get("/en/status/abc", headers={"X-Forwarded-For": hop})).status_code
                for hop in forwarded
            ]

    # Without trusted proxies a client cannot buy a new budget by writing the header.
    assert await statuses(make_app(tmp_path, **limits), ["198.51.100.1", "198.51.100.2"]) == [200, 429]
    # Behind one proxy, each client the proxy saw has its own budget; what the client wrote itself
    # (left of the proxy's entry) does not count.
    behind = make_app(tmp_path, trusted_proxies=1, **limits)
    assert await statuses(behind, ["198.51.100.1", "198.51.100.2", "6.6.6.6, 198.51.100.1"]) == [
        200,
        200,
        429,
    ]


def test_client_address_takes_the_entry_the_outermost_trusted_proxy_added() -> None:
    scope = {
        "type": "http",
        "client": ("10.0.0.2", 1),
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7"), (b"x-forwarded-for", b"10.0.0.1")],
    }
    assert client_address(scope, 0) == "10.0.0.2"
    assert client_address(scope, 1) == "10.0.0.1"
    assert client_address(scope, 2) == "198.51.100.7"
    assert client_address(scope, 5) == "10.0.0.2"  # fewer hops than proxies: the peer, never a guess


def test_a_bucket_refills_at_its_rate_and_forgets_the_least_recent_clients() -> None:
    now = [0.0]
    bucket = TokenBucket(burst=2, per_minute=6, max_clients=2, clock=lambda: now[0])
    assert [bucket.take("a"), bucket.take("a")] == [0.0, 0.0]
    assert bucket.take("a") == pytest.approx(10.0)
    now[0] = 5.0
    assert bucket.take("a") == pytest.approx(5.0)  # half a token back, not enough
    now[0] = 10.0
    assert bucket.take("a") == 0.0
    bucket.take("b")
    bucket.take("c")  # over max_clients: "a", seen least recently, is forgotten
    assert bucket.take("a") == 0.0


@pytest.mark.parametrize(
    ("method", "path", "budget"),
    [
        ("POST", "/api/v1/bundles/newborn-on/submissions", "submit"),
        ("GET", "/api/v1/bundles/newborn-on/submissions", None),
        ("GET", "/api/v1/submissions/0d9c7d1e-1111-4222-8333-944445555666", "status"),
        ("POST", "/api/v1/submissions/0d9c7d1e-1111-4222-8333-944445555666/withdraw", "withdraw"),
        ("GET", "/api/v1/bundles", None),
        ("POST", "/api/v1/ops/bundles/x/retry", None),
        ("POST", "/en/newborn-on/submit", "submit"),
        ("POST", "/fr/newborn-on/soumettre", "submit"),
        ("GET", "/en/status/abc", "status"),
        ("POST", "/en/status", "status"),
        ("GET", "/fr/statut/abc/etat.json", "status"),
        ("POST", "/en/status/abc/withdraw", "withdraw"),
        ("GET", "/en/status/abc/withdraw", "status"),
        ("GET", "/en/newborn-on/start", None),
    ],
)
def test_which_requests_spend_which_budget(method: str, path: str, budget: str | None) -> None:
    assert rate_budget(method, path) == budget


def test_the_openapi_document_shows_429_where_limits_apply(limited_app: FastAPI) -> None:
    paths = limited_app.openapi()["paths"]
    assert "429" in paths["/api/v1/bundles/{bundle_id}/submissions"]["post"]["responses"]
    assert "429" in paths["/api/v1/submissions/{tracking_id}"]["get"]["responses"]
    assert "429" not in paths["/api/v1/bundles"]["get"]["responses"]


# Body size


def test_the_form_bound_is_the_apis() -> None:
    assert MAX_BODY_BYTES == API_MAX_BODY_BYTES


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/en/test-form", "text/html"), ("/api/v1/bundles/newborn-on/submissions", "application/problem+json")],
)
async def test_an_oversized_chunked_body_gets_413(web: httpx.AsyncClient, path: str, media_type: str) -> None:
    answer = await web.post(
        path,
        content=chunks(MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith(media_type)
    assert_protected(answer)


async def test_a_chunked_form_within_the_bound_reaches_the_route_whole(web: httpx.AsyncClient) -> None:
    page = await web.get("/en/test-form")
    token = re.search(r'value="([^"]+)"', page.text)
    assert token is not None
    filler = "b" * (MAX_BODY_BYTES - 200)

    async def body() -> AsyncIterator[bytes]:
        encoded = f"csrf_token={token.group(1)}&filler={filler}".encode()
        for start in range(0, len(encoded), 10_000):
            yield encoded[start : start + 10_000]

    answer = await web.post(
        "/en/test-form", content=body(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 200, answer.text[:300]
    assert f"('filler', '{filler}')" in answer.text


async def test_the_codec_endpoint_takes_a_history_sized_body_and_no_more(web: httpx.AsyncClient) -> None:
    # The Temporal UI decodes a history's payloads in one call: far above the form bound.
    large = b"x" * (MAX_BODY_BYTES * 2)
    within = await web.post(
        f"{CODEC_PATH}/decode", content=large, headers={"Content-Type": "application/json"}
    )
    assert within.status_code != 413
    beyond = await web.post(
        f"{CODEC_PATH}/decode",
        content=b"x" * (MAX_CODEC_BODY + 1),
        headers={"Content-Type": "application/json"},
    )
    assert beyond.status_code == 413


async def test_unversioned_assets_are_cached_briefly_so_upgrades_arrive(
    web: httpx.AsyncClient,
) -> None:
    answer = await web.get("/assets/portal/portal.js")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=3600"
