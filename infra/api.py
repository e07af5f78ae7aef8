"""The resident HTTP API (`/api/v1`): catalogue, submit, status, withdraw.

Errors are RFC 9457 problem documents with field paths and bilingual messages. A tracking id
alone reveals nothing: status and withdrawal also need the access code, sent in a header so it
never appears in a URL or an access log. An unknown id and a wrong code get the same 404.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.messages import message_for
from bundles.models import Level, LocalizedText
from bundles.submissions import FieldError, SubmissionInvalid
from infra.intake import IdempotencyConflict, Intake
from infra.settings import Settings
from infra.temporal import connect
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, BundleStatus, StepState, WithdrawRequest

log = structlog.get_logger("tellonce.api")

MAX_BODY_BYTES = 256 * 1024
TRACKING_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Raised by handlers to answer with a problem document."""

    def __init__(
        self, status: int, title: str, detail: LocalizedText, errors: list[FieldError] | None = None
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


NOT_FOUND = LocalizedText(
    en="No request matches this tracking number and access code.",
    fr="Aucune demande ne correspond à ce numéro de suivi et à ce code d'accès.",
)


class SubmissionAccepted(BaseModel):
    """Answer to an accepted submission."""

    tracking_id: str
    status_url: str
    access_code: str
    notices: list[LocalizedText] = []


class PublicStep(BaseModel):
    """One program's progress, as a resident sees it."""

    id: str
    program: LocalizedText
    organization: LocalizedText
    level: Level
    state: StepState
    attempts: int
    reference: str | None
    message: LocalizedText | None
    updated_at: datetime | None


class PublicStatus(BaseModel):
    """A bundle's progress, as a resident sees it (no personal data)."""

    tracking_id: str
    bundle_id: str
    state: BundleState
    received_at: datetime
    updated_at: datetime
    steps: list[PublicStep]


class WithdrawAnswer(BaseModel):
    """Answer to a withdrawal."""

    tracking_id: str
    state: BundleState


def public_status(status: BundleStatus) -> PublicStatus:
    """Keep only what a resident may see of a bundle's status."""
    return PublicStatus(
        tracking_id=status.submission_id,
        bundle_id=status.bundle_id,
        state=status.state,
        received_at=status.received_at,
        updated_at=status.updated_at,
        steps=[
            PublicStep(
                id=s.id,
                program=s.program,
                organization=s.organization,
                level=s.level,
                state=s.state,
                attempts=s.attempts,
                reference=s.reference,
                message=s.message,
                updated_at=s.finished_at or s.started_at,
            )
            for s in status.steps
        ],
    )


def create_app(settings: Settings, intake: Intake | None = None) -> FastAPI:
    """Build the API. Without an `intake`, one is made at start-up from the settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if intake is None:
            client = await connect(settings)
            catalogue = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
            app.state.intake = Intake(client, catalogue, settings)
        yield

    app = FastAPI(
        title="tellonce",
        version="1",
        summary="Tell us once: one life-event form, every program that needs to know.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    if intake is not None:
        app.state.intake = intake

    def get_intake(request: Request) -> Intake:
        result: Intake = request.app.state.intake
        return result

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(
                path=".".join(str(p) for p in err["loc"][1:]),
                code=err["type"],
                message=message_for(err["type"], err.get("ctx")),
            )
            for err in exc.errors()
        ]
        return problem(422, "Invalid request", INVALID_SUBMISSION, errors)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return problem(413, "Request too large", TOO_LARGE)
        return await call_next(request)

    @app.get("/api/v1/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness and readiness: answers once the API has connected to Temporal."""
        return {"status": "ok"}

    @app.get("/api/v1/bundles", tags=["catalogue"])
    async def list_bundles(request: Request) -> list[dict[str, Any]]:
        """Every bundle a resident can submit."""
        return [
            {
                "id": d.id,
                "version": d.version,
                "jurisdiction": d.jurisdiction,
                "life_event": d.life_event,
                "title": d.title.model_dump(),
                "description": d.description.model_dump(),
            }
            for d in get_intake(request).catalogue.all()
        ]

    @app.get("/api/v1/bundles/{bundle_id}", tags=["catalogue"])
    async def show_bundle(bundle_id: str, request: Request) -> dict[str, Any]:
        """A bundle's definition and the JSON Schema of its submission."""
        catalogue = get_intake(request).catalogue
        if bundle_id not in catalogue:
            raise ProblemError(404, "Unknown bundle", UNKNOWN_BUNDLE)
        return {
            "definition": catalogue.get(bundle_id).model_dump(mode="json"),
            "submission_schema": catalogue.schema_for(bundle_id).model_json_schema(),
        }

    @app.post(
        "/api/v1/bundles/{bundle_id}/submissions",
        status_code=202,
        tags=["submissions"],
        responses={409: {"description": "Idempotency key reused"}, 422: {"description": "Invalid"}},
    )
    async def submit(
        bundle_id: str,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> SubmissionAccepted:
        """Submit a life-event form; answers 202 once the bundle has durably started.

        The body is the bundle's submission (see `GET /api/v1/bundles/{bundle_id}`). Send an
        `Idempotency-Key` to retry safely: the same key and body give the same answer.
        """
        intake = get_intake(request)
        if bundle_id not in intake.catalogue:
            raise ProblemError(404, "Unknown bundle", UNKNOWN_BUNDLE)
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise ProblemError(400, "Invalid Idempotency-Key", BAD_IDEMPOTENCY_KEY)
        try:
            raw = json.loads(await read_body(request))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ProblemError(400, "Malformed JSON", MALFORMED_JSON) from None
        if not isinstance(raw, dict):
            raise ProblemError(400, "Malformed JSON", MALFORMED_JSON)
        try:
            accepted = await intake.submit(bundle_id, raw, channel="api", idempotency_key=idempotency_key)
        except SubmissionInvalid as exc:
            raise ProblemError(422, "Invalid submission", INVALID_SUBMISSION, exc.errors) from None
        except IdempotencyConflict:
            raise ProblemError(409, "Idempotency key reused", KEY_REUSED) from None
        return SubmissionAccepted(
            tracking_id=accepted.tracking_id,
            status_url=f"/api/v1/submissions/{accepted.tracking_id}",
            access_code=accepted.access_code,
            notices=accepted.notices,
        )

    @app.get("/api/v1/submissions/{tracking_id}", tags=["submissions"])
    async def submission_status(
        tracking_id: str,
        request: Request,
        x_access_code: Annotated[str | None, Header()] = None,
    ) -> PublicStatus:
        """The progress of a submission at each program (needs the `X-Access-Code` header)."""
        intake = get_intake(request)
        handle = authorised(intake, tracking_id, x_access_code)
        try:
            status = await handle.query(BundleWorkflow.status)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise ProblemError(404, "Not found", NOT_FOUND) from None
            log.warning("status.unavailable", bundle=tracking_id, rpc_status=exc.status.name)
            raise ProblemError(503, "Status unavailable", UNAVAILABLE) from None
        except WorkflowQueryFailedError:
            log.warning("status.query_failed", bundle=tracking_id)
            raise ProblemError(503, "Status unavailable", UNAVAILABLE) from None
        return public_status(status)

    @app.post("/api/v1/submissions/{tracking_id}/withdraw", status_code=202, tags=["submissions"])
    async def withdraw(
        tracking_id: str,
        request: Request,
        x_access_code: Annotated[str | None, Header()] = None,
    ) -> WithdrawAnswer:
        """Withdraw a submission: nothing more is sent and reversible requests are cancelled."""
        intake = get_intake(request)
        handle = authorised(intake, tracking_id, x_access_code)
        try:
            # One update id per bundle: a withdrawal retried after a lost answer is the same one.
            result = await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest(), id="withdraw")
        except WorkflowUpdateFailedError:
            raise ProblemError(409, "Cannot withdraw", CANNOT_WITHDRAW) from None
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                # Closed bundles refuse updates (with wording that varies as the bundle closes);
                # an id past retention is unknown. Only the server can tell which.
                closed = await _exists(handle)
                raise (
                    ProblemError(409, "Cannot withdraw", CANNOT_WITHDRAW)
                    if closed
                    else ProblemError(404, "Not found", NOT_FOUND)
                ) from None
            log.warning("withdraw.unavailable", bundle=tracking_id, rpc_status=exc.status.name)
            raise ProblemError(503, "Withdrawal unavailable", UNAVAILABLE) from None
        log.info("submission.withdrawn", bundle=tracking_id)
        return WithdrawAnswer(tracking_id=tracking_id, state=result.state)

    return app


async def _exists(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the server still has the bundle (open or closed)."""
    try:
        await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise ProblemError(503, "Withdrawal unavailable", UNAVAILABLE) from None
    return True


async def read_body(request: Request) -> bytes:
    """The request body, refused past `MAX_BODY_BYTES` even when no Content-Length was sent."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ProblemError(413, "Request too large", TOO_LARGE)
    return bytes(body)


def authorised(
    intake: Intake, tracking_id: str, access_code: str | None
) -> WorkflowHandle[BundleWorkflow, BundleStatus]:
    """The bundle's handle, or the same 404 for a malformed id, an unknown one or a wrong code."""
    if not TRACKING_ID.match(tracking_id) or not intake.check_access(tracking_id, access_code):
        raise ProblemError(404, "Not found", NOT_FOUND)
    return intake.handle(tracking_id)


def problem(
    status: int, title: str, detail: LocalizedText, errors: list[FieldError] | None = None
) -> JSONResponse:
    """An RFC 9457 problem document with bilingual detail and per-field errors."""
    body: dict[str, Any] = {
        "type": f"https://tellonce.example/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail.model_dump(),
    }
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


INVALID_SUBMISSION = LocalizedText(
    en="Some information is missing or needs correcting.",
    fr="Certains renseignements sont manquants ou doivent être corrigés.",
)
UNKNOWN_BUNDLE = LocalizedText(en="This service does not exist.", fr="Ce service n'existe pas.")
MALFORMED_JSON = LocalizedText(
    en="The request body must be a JSON object.", fr="Le corps de la requête doit être un objet JSON."
)
TOO_LARGE = LocalizedText(en="The request is too large.", fr="La requête est trop volumineuse.")
BAD_IDEMPOTENCY_KEY = LocalizedText(
    en="The Idempotency-Key header must be 8 to 128 letters, digits or . _ : -",
    fr="L'en-tête Idempotency-Key doit compter de 8 à 128 lettres, chiffres ou . _ : -",
)
KEY_REUSED = LocalizedText(
    en="This Idempotency-Key was already used for a different submission.",
    fr="Cette clé Idempotency-Key a déjà servi pour une autre soumission.",
)
UNAVAILABLE = LocalizedText(
    en="We cannot show this right now. Please try again in a few minutes.",
    fr=(
        "Nous ne pouvons pas afficher ces renseignements pour le moment. "
        "Veuillez réessayer dans quelques minutes."
    ),
)
CANNOT_WITHDRAW = LocalizedText(
    en="This request has already ended or is already being withdrawn.",
    fr="Cette demande est déjà terminée ou déjà en cours de retrait.",
)
