"""The legacy sandbox's HTTP app: the systems' own endpoints plus the `/sandbox` admin API.

State lives in the app (in memory); handlers never await between reading and writing it, so one
event loop needs no locks. An effect is recorded before any injected latency, as a real system
commits before its answer is lost on the way back.
"""

# No `from __future__ import annotations`: FastAPI must evaluate the route signatures, whose
# dependencies are local to the router factories.

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from bundles.models import LocalizedText
from infra.logging import configure_logging
from infra.sandbox.batch import BatchExchange
from infra.sandbox.faults import Fault, FaultState, FaultUpdate, utcnow
from infra.sandbox.frontends import Frontend
from infra.sandbox.mq import MqResponder
from infra.sandbox.soap import soap_routes
from infra.sandbox.systems import CANCELLED, Answer, LedgerOperation, SystemState, fresh_states
from infra.settings import Settings

log = structlog.get_logger("tellonce.sandbox")

KEY_REQUIRED = LocalizedText(
    en="The Idempotency-Key header is required.", fr="L'en-tête Idempotency-Key est obligatoire."
)
MALFORMED = LocalizedText(
    en='The body must be a JSON object {"fields": {...}}.',
    fr='Le corps doit être un objet JSON {"fields": {...}}.',
)
UNKNOWN_SYSTEM = LocalizedText(en="No such system.", fr="Système inconnu.")
UNKNOWN_REFERENCE = LocalizedText(en="No such request.", fr="Demande inconnue.")
CANCEL_UNSUPPORTED = LocalizedText(
    en="This system's requests cannot be cancelled.",
    fr="Les demandes de ce système ne peuvent pas être annulées.",
)
MAX_KEY_LENGTH = 255
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
BAD_CURSOR = LocalizedText(
    en="The cursor is not one this system handed out.",
    fr="Le curseur n'a pas été fourni par ce système.",
)
BAD_PAGE_SIZE = LocalizedText(
    en=f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}.",
    fr=f"page_size doit être un nombre entier de 1 à {MAX_PAGE_SIZE}.",
)
BAD_SINCE = LocalizedText(
    en="since must be a date and time with its UTC offset (ISO 8601).",
    fr="since doit être une date et une heure avec leur décalage UTC (ISO 8601).",
)
_CURSOR = re.compile(r"^after:(\d{1,12})$")


def error(status: int, code: str, message: LocalizedText, retry_after_s: int | None = None) -> JSONResponse:
    """An error answer in the sandbox's one error shape: `{"code", "message": {"en", "fr"}}`."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"code": code, "message": message.model_dump()}, status_code=status, headers=headers)


def fault_response(fault: Fault) -> JSONResponse:
    """The answer of an injected fault."""
    return error(fault.status, fault.code, fault.message, fault.retry_after_s)


async def read_fields(request: Request, *, required: bool) -> dict[str, Any] | None:
    """The `fields` object of a request body; None when the body is malformed."""
    raw = await request.body()
    if not raw and not required:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) - {"fields"}:
        return None
    fields = body.get("fields", None if required else {})
    return fields if isinstance(fields, dict) else None


def gate(state: SystemState, key: str | None) -> JSONResponse | None:
    """Count the request and answer an injected fault, if one applies."""
    state.counts.requests += 1
    if not state.faults.applies_to(key):
        return None
    fault = state.faults.check(utcnow())
    if fault is None:
        return None
    state.counts.faulted += 1
    log.info("sandbox.fault", system=state.spec.id, status=fault.status, code=fault.code)
    return fault_response(fault)


async def answer(state: SystemState, key: str, result: Answer, *, replayed: bool) -> JSONResponse:
    """Wait out injected latency (after recording), then send the answer."""
    if state.faults.latency_ms and state.faults.applies_to(key):
        await asyncio.sleep(state.faults.latency_ms / 1000)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(result.body, status_code=result.status, headers=headers)


def strong_etag(body: dict[str, Any]) -> str:
    """A strong ETag for a JSON body: a digest of its canonical form."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names the current ETag (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def encode_cursor(seq: int) -> str:
    """An opaque cursor for "after ledger entry `seq`" (clients send it back, never build it)."""
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The ledger position a cursor stands for, or None when it is not one the sandbox made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    match = _CURSOR.match(raw)
    return int(match[1]) if match else None


def parse_since(value: str) -> datetime | None:
    """A timezone-aware ISO 8601 time, or None when `value` is not one."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.utcoffset() is not None else None


def request_view(state: SystemState, reference: str) -> dict[str, Any] | None:
    """What the system says about one accepted request (no fields: no personal data)."""
    order = state.orders.get(reference)
    if order is None:
        return None
    message = order.message or (CANCELLED if order.state == "cancelled" else state.spec.accepted)
    body: dict[str, Any] = {"reference": reference, "state": order.state, "message": message.model_dump()}
    if order.fee_cents is not None:
        body["fee_cents"] = order.fee_cents
        body["refunded"] = order.refunded
        body["refunded_cents"] = order.fee_cents if order.refunded else 0
    return body


def checked_key(key: str | None) -> str | None:
    """The Idempotency-Key when it is usable, else None."""
    return key if key and len(key) <= MAX_KEY_LENGTH and key.isprintable() else None


class UnknownSystemError(Exception):
    """A path named a system the sandbox does not simulate."""


def lookup(states: dict[str, SystemState]) -> Callable[[str], SystemState]:
    """A FastAPI dependency resolving `{system_id}` to its state (404 when unknown)."""

    def system_state(system_id: str) -> SystemState:
        state = states.get(system_id)
        if state is None:
            raise UnknownSystemError(system_id)
        return state

    return system_state


async def write(
    state: SystemState,
    idempotency_key: str | None,
    request: Request,
    operation: LedgerOperation,
    process: Callable[[str, dict[str, Any]], Answer],
) -> JSONResponse:
    """The path every effect takes: key, faults, body, replay or process, latency, answer."""
    key = checked_key(idempotency_key)
    if key is None:
        state.counts.requests += 1
        return error(400, "idempotency_key_required", KEY_REQUIRED)
    if (faulted := gate(state, key)) is not None:
        return faulted
    fields = await read_fields(request, required=operation == "submit")
    if fields is None:
        return error(400, "malformed_request", MALFORMED)
    replayed = state.replay(operation, key)
    result = replayed or process(key, fields)
    return await answer(state, key, result, replayed=replayed is not None)


def create_app(settings: Settings | None = None, *, frontends: bool = True) -> FastAPI:
    """Build a sandbox app with every system empty and no faults.

    Args:
        settings: Where the protocol frontends listen (SFTP port, Kafka); default from the environment.
        frontends: Start the SFTP and message-queue frontends with the app (off for HTTP-only tests).
    """
    settings = settings or Settings()
    states = fresh_states()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        started: list[Frontend] = []
        try:
            if frontends:
                for frontend in protocol_frontends(states, settings):
                    await frontend.start()
                    started.append(frontend)
                    log.info("sandbox.frontend_started", frontend=frontend.name)
            yield
        finally:
            for frontend in reversed(started):
                await frontend.stop()

    app = FastAPI(
        title="tellonce legacy sandbox",
        description="Simulated legacy systems for development, demos and tests. Never in production.",
        version="1",
        lifespan=lifespan,
    )

    async def unknown_system(_request: Request, _exc: Exception) -> JSONResponse:
        return error(404, "unknown_system", UNKNOWN_SYSTEM)

    app.add_exception_handler(UnknownSystemError, unknown_system)
    app.include_router(system_routes(lookup(states)))
    app.include_router(soap_routes(states))
    app.include_router(admin_routes(states, lookup(states)), prefix="/sandbox")
    return app


def system_routes(system_state: Callable[[str], SystemState]) -> APIRouter:
    """The endpoints a legacy system itself exposes (what adapters call)."""
    router = APIRouter(tags=["systems"])
    System = Annotated[SystemState, Depends(system_state)]  # noqa: N806 - a type alias

    @router.post("/systems/{system_id}/requests", status_code=201)
    async def submit(
        state: System, request: Request, idempotency_key: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        """Send a request to a system: `{"fields": {...}}` with an `Idempotency-Key` header."""
        return await write(state, idempotency_key, request, "submit", state.submit)

    @router.post("/systems/{system_id}/requests/{reference}/cancel")
    async def cancel(
        state: System,
        reference: str,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Cancel (compensate) an accepted request; only reversible systems support it."""
        if not state.spec.reversible:
            return error(405, "cancel_not_supported", CANCEL_UNSUPPORTED)
        return await write(
            state,
            idempotency_key,
            request,
            "cancel",
            lambda key, fields: state.cancel(key, reference, fields),
        )

    @router.get("/systems/{system_id}/requests")
    async def list_requests(
        state: System,
        since: str | None = None,
        page_size: str | None = None,
        cursor: str | None = None,
    ) -> JSONResponse:
        """The requests a system accepted, oldest first, a page at a time (`next_cursor` for more).

        Each item has `reference`, `state`, `message` and `received_at`; never the fields sent.
        """
        if (faulted := gate(state, None)) is not None:
            return faulted
        size = DEFAULT_PAGE_SIZE
        if page_size is not None:
            if not page_size.isdigit() or not 1 <= int(page_size) <= MAX_PAGE_SIZE:
                return error(400, "invalid_page_size", BAD_PAGE_SIZE)
            size = int(page_size)
        after = 0
        if cursor is not None:
            decoded = decode_cursor(cursor)
            if decoded is None:
                return error(400, "invalid_cursor", BAD_CURSOR)
            after = decoded
        since_at = None
        if since is not None and (since_at := parse_since(since)) is None:
            return error(400, "invalid_since", BAD_SINCE)
        page: list[dict[str, Any]] = []
        last_seq, more = after, False
        # The ledger is in seq order (seq n at index n-1): start right after the cursor.
        for entry in state.ledger[after:]:
            if entry.operation != "submit" or entry.outcome != "accepted":
                continue
            if since_at is not None and entry.received_at < since_at:
                continue
            if len(page) == size:
                more = True
                break
            view = request_view(state, entry.reference) or {
                "reference": entry.reference,
                "state": state.spec.accepted_state,
                "message": state.spec.accepted.model_dump(),
            }
            page.append({**view, "received_at": entry.received_at.isoformat()})
            last_seq = entry.seq
        next_cursor = encode_cursor(last_seq) if more else None
        return JSONResponse({"requests": page, "next_cursor": next_cursor})

    @router.get("/systems/{system_id}/requests/{reference}")
    async def request_status(
        state: System, reference: str, if_none_match: Annotated[str | None, Header()] = None
    ) -> Response:
        """What a system says about a request it accepted, with a strong ETag (304 when unchanged)."""
        if (faulted := gate(state, None)) is not None:
            return faulted
        body = request_view(state, reference)
        if body is None:
            return error(404, "unknown_reference", UNKNOWN_REFERENCE)
        etag = strong_etag(body)
        if etag_matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(body, headers={"ETag": etag})

    return router


def admin_routes(states: dict[str, SystemState], system_state: Callable[[str], SystemState]) -> APIRouter:
    """The `/sandbox` admin API: systems, ledgers, faults, reset (mutates `states` in place)."""
    router = APIRouter(tags=["admin"])
    System = Annotated[SystemState, Depends(system_state)]  # noqa: N806 - a type alias

    @router.get("/systems")
    async def list_systems() -> dict[str, Any]:
        """Every system with its faults, counts and (for certificates) fee totals."""
        now = utcnow()
        return {"systems": [state.view(now) for state in states.values()]}

    @router.get("/systems/{system_id}")
    async def show_system(state: System) -> dict[str, Any]:
        """One system, as in the list."""
        return state.view(utcnow())

    @router.get("/systems/{system_id}/ledger")
    async def ledger(
        state: System, key_prefix: Annotated[str | None, Query(min_length=1)] = None
    ) -> dict[str, Any]:
        """The effects a system had, oldest first, optionally only those whose key has a prefix."""
        entries = [
            entry.model_dump(mode="json")
            for entry in state.ledger
            if key_prefix is None or entry.idempotency_key.startswith(key_prefix)
        ]
        return {"system": state.spec.id, "entries": entries}

    @router.put("/systems/{system_id}/faults")
    async def set_faults(state: System, update: FaultUpdate) -> dict[str, Any]:
        """Merge-update a system's faults: keys left out keep their value, null clears one."""
        now = utcnow()
        state.faults.update(update, now)
        log.info("sandbox.faults_set", system=state.spec.id, keys=sorted(update.model_fields_set))
        return state.view(now)

    @router.delete("/systems/{system_id}/faults")
    async def clear_faults(state: System) -> dict[str, Any]:
        """Clear every fault of a system."""
        state.faults = FaultState()
        log.info("sandbox.faults_cleared", system=state.spec.id)
        return state.view(utcnow())

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        """Forget every ledger, order, fee and fault (development convenience)."""
        # In place: the lookup dependency holds this same dict.
        states.clear()
        states.update(fresh_states())
        log.info("sandbox.reset")
        return {"reset": True}

    return router


def protocol_frontends(states: dict[str, SystemState], settings: Settings) -> list[Frontend]:
    """The sandbox's non-HTTP servers: batch files over SFTP, and message-queue systems on Kafka."""
    return [BatchExchange(states, settings), MqResponder(states, settings)]


def serve(host: str, port: int) -> None:
    """Run the sandbox in this process until interrupted (what `tellonce sandbox` calls)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.environment == "production":
        # The sandbox answers anything and resets on request: it must never stand in for real systems.
        log.error("sandbox.refused", reason="the legacy sandbox never runs in production")
        raise SystemExit(2)
    log.info("sandbox.starting", host=host, port=port)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
