"""Hostile HTTP bodies through the real API app: each gets a clear 4xx problem, never a 500.

Every refusal is an RFC 9457 problem (`application/problem+json`) with a status, bilingual
detail and at least one error with a path and a bilingual message, and none repeats what was
sent (no reflected script). A script in a name is refused, so nothing starts. Most requests go
through httpx's ASGI transport; what only a socket can send (a lying Content-Length, a chunked
body without one, a client that leaves mid-body) goes to the app served by a real uvicorn.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from structlog.testing import capture_logs

from bundles.validators import toronto_today
from infra.api import MAX_BODY_BYTES, MAX_ERRORS
from tests.conftest import free_port
from tests.fuzz.conftest import FuzzApi

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = "/api/v1/bundles/newborn-on/submissions"
JSON = {"content-type": "application/json"}
SCRIPTS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(document.cookie)",
)


def valid_submission() -> dict[str, Any]:
    """The complete newborn example, born three days ago (in its 12-month window whatever the date)."""
    data: dict[str, Any] = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())
    submission: dict[str, Any] = data["submission"]
    submission["child"]["date_of_birth"] = (toronto_today() - timedelta(days=3)).isoformat()
    return submission


def with_value(path: str, value: Any) -> dict[str, Any]:
    """The valid submission with one field replaced."""
    submission = copy.deepcopy(valid_submission())
    *parents, leaf = path.split(".")
    node = submission
    for key in parents:
        node = node[key]
    node[leaf] = value
    return submission


def encoded(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def assert_problem(response: httpx.Response, status: int, code: str, path: str = "") -> dict[str, Any]:
    """A problem document with this status, whose errors include `code` at `path`."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["type"].startswith("https://")
    assert problem["detail"]["en"] and problem["detail"]["fr"]
    assert problem["errors"], "a problem always says where"
    for error in problem["errors"]:
        assert isinstance(error["path"], str) and error["code"]
        assert error["message"]["en"] and error["message"]["fr"]
    assert (path, code) in {(e["path"], e["code"]) for e in problem["errors"]}, problem["errors"]
    return problem


@dataclass(frozen=True)
class Hostile:
    """One hostile request to the submit route, and the refusal it must get."""

    name: str
    body: bytes
    status: int
    code: str
    path: str = ""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


FORM = (("content-type", "application/x-www-form-urlencoded"),)
TEXT = (("content-type", "text/plain"),)
LATIN1 = (("content-type", "application/json; charset=latin-1"),)
MULTIPART = (("content-type", "multipart/form-data; boundary=x"),)
BAD_LENGTH = (("content-type", "application/json"), ("content-length", "12abc"))
SCRIPT_KEY = (("content-type", "application/json"), ("idempotency-key", "<script>alert(1)</script>"))
VALID = encoded(valid_submission())
HOSTILE = [
    Hostile("oversize", encoded({"x": "a" * MAX_BODY_BYTES}), 413, "request_too_large"),
    Hostile("nested lists 100k deep", b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json"),
    Hostile("nested objects 40 deep", nested_objects(40), 400, "too_deep"),
    Hostile("nested objects 5000 deep", nested_objects(5000), 400, "malformed_json"),
    Hostile("invalid UTF-8", b'{"language": "\xff\xfe"}', 400, "invalid_utf8"),
    Hostile("UTF-16", '{"language": "en"}'.encode("utf-16"), 400, "invalid_utf8"),
    Hostile("truncated JSON", VALID[:-20], 400, "malformed_json"),
    Hostile("NaN", b'{"language": NaN}', 400, "non_finite_number"),
    Hostile("Infinity", b'{"child": {"plurality": Infinity}}', 400, "non_finite_number"),
    Hostile("-Infinity", b'{"child": {"plurality": -Infinity}}', 400, "non_finite_number"),
    Hostile("duplicate names", b'{"language": "en", "language": "fr"}', 400, "duplicate_name"),
    Hostile("duplicate nested names", b'{"child": {"sex": "F", "sex": "M"}}', 400, "duplicate_name"),
    Hostile("5000-digit number", b'{"child": {"plurality": ' + b"9" * 5000 + b"}}", 400, "malformed_json"),
    Hostile("a JSON array", b"[]", 400, "not_an_object"),
    Hostile("a JSON string", b'"<script>alert(1)</script>"', 400, "not_an_object"),
    Hostile("null", b"null", 400, "not_an_object"),
    Hostile("empty", b"", 400, "malformed_json"),
    Hostile("form post", b"language=en&x=<script>", 415, "unsupported_media_type", "Content-Type", FORM),
    Hostile("text/plain", VALID, 415, "unsupported_media_type", "Content-Type", TEXT),
    Hostile("no content type", VALID, 415, "unsupported_media_type", "Content-Type", ()),
    Hostile("latin-1 charset", VALID, 415, "unsupported_media_type", "Content-Type", LATIN1),
    Hostile("multipart", b"--x\r\n\r\n{}\r\n--x--", 415, "unsupported_media_type", "Content-Type", MULTIPART),
    Hostile(
        "a 200 kB name",
        encoded(with_value("child.surname", "A" * 200_000)),
        422,
        "string_too_long",
        "child.surname",
    ),
    Hostile(
        "a lone surrogate",
        json.dumps(with_value("child.surname", "\ud800")).encode(),
        422,
        "string_unicode",
        "child.surname",
    ),
    Hostile("a bad Content-Length", b"{}", 400, "invalid_content_length", "Content-Length", BAD_LENGTH),
    Hostile(
        "a script as Idempotency-Key", b"{}", 400, "invalid_idempotency_key", "Idempotency-Key", SCRIPT_KEY
    ),
]


@pytest.fixture
async def api(fuzz_api: FuzzApi) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fuzz_api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as client:
        yield client


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
async def test_a_hostile_body_gets_a_clear_refusal(api: httpx.AsyncClient, hostile: Hostile) -> None:
    response = await api.post(SUBMIT, content=hostile.body, headers=dict(hostile.headers))
    assert_problem(response, hostile.status, hostile.code, hostile.path)
    assert "<script" not in response.text and "onerror" not in response.text
    assert len(response.content) < 4096  # a refusal, not an echo


async def test_a_body_past_the_limit_is_refused_without_a_content_length_and_despite_a_lying_one(
    api: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"x": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 1):
            yield b"a" * 4096
        yield b'"}'

    streamed = await api.post(SUBMIT, content=chunks(), headers=JSON)
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413, "request_too_large")
    lying = await api.post(
        SUBMIT, content=b" " * (MAX_BODY_BYTES + 1), headers={**JSON, "content-length": "10"}
    )
    assert lying.request.headers["content-length"] == "10"
    assert_problem(lying, 413, "request_too_large")


async def test_many_unknown_fields_get_a_bounded_answer(api: httpx.AsyncClient) -> None:
    body = encoded(with_value("consents", {f"k{i}": True for i in range(12_000)}))
    assert len(body) < MAX_BODY_BYTES
    response = await api.post(SUBMIT, content=body, headers=JSON)
    problem = assert_problem(response, 422, "unknown_consent_purpose", "consents.k0")
    assert len(problem["errors"]) == MAX_ERRORS
    assert problem["errors_omitted"] == 12_000 - MAX_ERRORS


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "field", ["child.given_names", "child.surname", "birth_parent.surname", "other_parent.given_names"]
)
async def test_a_script_in_a_name_is_refused_and_nothing_starts(
    api: httpx.AsyncClient, fuzz_api: FuzzApi, field: str, script: str
) -> None:
    key = {**JSON, "Idempotency-Key": f"hostile-{uuid.uuid4().hex}"}
    response = await api.post(SUBMIT, content=encoded(with_value(field, script)), headers=key)
    assert_problem(response, 422, "name_characters", field)
    assert script not in response.text and "alert" not in response.text
    # Had the hostile request started a bundle under this key, other data with the same key
    # would be refused as a reuse (409); it is accepted, so nothing was stored under the key.
    clean = await api.post(SUBMIT, content=encoded(valid_submission()), headers=key)
    assert clean.status_code == 202, clean.text
    fuzz_api.started.add(clean.json()["tracking_id"])
    history = fuzz_api.intake.handle(clean.json()["tracking_id"]).fetch_history_events()
    assert not [e async for e in history if script.encode() in e.SerializeToString()]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("birth_parent.mailing_address.street", "<script>alert(1)</script>"),
        ("birth_parent.mailing_address.municipality", '"><img src=x onerror=alert(1)>'),
        ("birth_parent.email", "a<script>@example.ca"),
        ("resp_referral.promoter", "Example <b onmouseover=alert(1)>Credit</b> Union"),
    ],
)
async def test_markup_in_free_text_is_refused_too(api: httpx.AsyncClient, field: str, value: str) -> None:
    response = await api.post(SUBMIT, content=encoded(with_value(field, value)), headers=JSON)
    assert_problem(response, 422, "markup_characters", field)
    assert value not in response.text and "alert" not in response.text


@dataclass(frozen=True)
class HostileAddress:
    """A request whose path or header carries markup, and the 404 or 405 it must get."""

    method: str
    url: str
    status: int
    code: str
    headers: tuple[tuple[str, str], ...] = ()


SCRIPT_URL = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
IMG_URL = "%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
HOSTILE_ADDRESSES = [
    HostileAddress("GET", f"/api/v1/submissions/{SCRIPT_URL}", 404, "not_found", (("X-Access-Code", "x"),)),
    HostileAddress(
        "GET",
        f"/api/v1/submissions/{uuid.uuid4()}",
        404,
        "not_found",
        (("X-Access-Code", "<script>alert(1)</script>"),),
    ),
    HostileAddress(
        "POST",
        f"/api/v1/submissions/{IMG_URL}/withdraw",
        404,
        "not_found",
    ),
    HostileAddress("GET", f"/api/v1/bundles/{IMG_URL}", 404, "unknown_bundle"),
    HostileAddress("GET", f"/api/v1/{SCRIPT_URL}", 404, "not_found"),
    HostileAddress("DELETE", "/api/v1/bundles", 405, "method_not_allowed"),
]


@pytest.mark.parametrize("hostile", HOSTILE_ADDRESSES, ids=lambda h: f"{h.method} {h.url[:40]}")
async def test_hostile_paths_and_headers_are_not_reflected(
    api: httpx.AsyncClient, hostile: HostileAddress
) -> None:
    response = await api.request(hostile.method, hostile.url, headers=dict(hostile.headers))
    path = "bundle_id" if hostile.code == "unknown_bundle" else ""
    assert_problem(response, hostile.status, hostile.code, path)
    assert "<script" not in response.text and "onerror" not in response.text and "alert" not in response.text


# --- the framing a socket can get wrong, against a real uvicorn ----------------------------------


@pytest.fixture
def served(fuzz_api: FuzzApi) -> Iterator[int]:
    """The app under a real uvicorn in a thread of its own; yields its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fuzz_api.app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start"
    yield port
    server.should_exit = True
    thread.join(timeout=10)


async def exchange(port: int, request: bytes, *, close_write: bool = False, timeout: float = 10.0) -> bytes:
    """Send raw bytes; return everything the server answers until it closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if close_write:
            writer.write_eof()
        answer = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                return answer
            if not chunk:
                return answer
            answer += chunk
            if b"\r\n\r\n" in answer and not close_write and _complete(answer):
                return answer
    finally:
        writer.close()


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/problem+json" in head.lower(), head
    return status, json.loads(body)


def request_head(length: str | None = None, *, chunked: bool = False) -> bytes:
    lines = [f"POST {SUBMIT} HTTP/1.1", "Host: tellonce.test", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_chunked_body_past_the_limit_is_refused(served: int) -> None:
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 2))
    status, problem = status_and_body(
        await exchange(served, request_head(chunked=True) + body + b"0\r\n\r\n")
    )
    assert status == 413 and problem["errors"][0]["code"] == "request_too_large"


async def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(served: int) -> None:
    status, problem = status_and_body(await exchange(served, request_head(str(10 * MAX_BODY_BYTES))))
    assert status == 413 and problem["errors"][0]["code"] == "request_too_large"


async def test_a_content_length_shorter_than_the_body_reads_only_what_it_says(served: int) -> None:
    body = encoded(valid_submission())
    status, problem = status_and_body(await exchange(served, request_head("40") + body))
    assert status == 400 and problem["errors"][0]["code"] == "malformed_json"


async def test_a_client_that_leaves_mid_body_is_no_server_error(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as logs, caplog.at_level(logging.WARNING):
        answer = await exchange(
            served, request_head("5000") + b'{"language": "en"', close_write=True, timeout=3
        )
        await asyncio.sleep(0.2)
    assert not answer.startswith(b"HTTP/1.1 5")
    assert not [log for log in logs if log["log_level"] in ("error", "critical")], logs
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # The server is still there for the next resident.
    status, problem = status_and_body(await exchange(served, request_head("2") + b"[]"))
    assert status == 400 and problem["errors"][0]["code"] == "not_an_object"
