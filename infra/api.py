"""The resident HTTP API (`/api/v1`): catalogue, submit, status, withdraw.

Errors are RFC 9457 problem documents with field paths and bilingual messages. A tracking id
alone reveals nothing: status and withdrawal also need the access code, sent in a header so it
never appears in a URL or an access log. An unknown id and a wrong code get the same 404.

Bad input gets a 4xx, never a 500: a body is read strictly (its size, its media type, UTF-8,
JSON without duplicate names, NaN or deep nesting) and no problem repeats a submitted value.
An unexpected error becomes a generic 500 with a correlation id, never exception text.
"""

from __future__ import annotations

import json
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.messages import message_for
from bundles.models import Level, LocalizedText
from bundles.submissions import SUBMISSION_SCHEMAS, FieldError, SubmissionInvalid
from bundles.validators import safe_path
from infra.intake import IdempotencyConflict, Intake
from infra.ops.http import mount_ops
from infra.portal import mount_portal
from infra.records import RecordStoreUnavailable, open_record_store, public_record
from infra.settings import Settings
from infra.telemetry import mount_metrics
from infra.temporal import connect
from infra.websecurity import body_limit, secure_app
from workflows.bundle import BundleWorkflow
from workflows.models import BundleState, BundleStatus, StepState, WithdrawRequest

log = structlog.get_logger("tellonce.api")

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
"""Nesting no submission needs (its deepest field is four levels down): deeper is refused."""
MAX_ERRORS = 100
"""Field errors a problem lists at most, so a body of unknown keys cannot grow tenfold in the answer."""
TRACKING_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
JSON_MEDIA_TYPE = re.compile(r"^application/(?:[a-z0-9.-]+\+)?json$")
CHARSET = re.compile(r"""charset\s*=\s*"?([^";\s]*)""", re.IGNORECASE)
PROBLEM_JSON = "application/problem+json"
CORRELATION_HEADER = "X-Correlation-Id"
SUBMISSIONS_PATH = "/api/v1/bundles/{bundle_id}/submissions"


class Problem(BaseModel):
    """An RFC 9457 problem document: what went wrong, in both languages, and at which fields."""

    type: str = Field(description="A URI naming the kind of problem.")
    title: str = Field(description="A short English summary, the same for every problem of this type.")
    status: int = Field(description="The HTTP status code.")
    detail: LocalizedText
    errors: list[FieldError] = Field(
        min_length=1, description="Each thing wrong, at its field; path '' is the request as a whole."
    )
    errors_omitted: int | None = Field(
        default=None, description=f"How many more errors there were past the first {MAX_ERRORS}."
    )
    correlation_id: str | None = Field(
        default=None, description="Only for an unexpected error: quote it to support to find what happened."
    )


class ProblemError(Exception):
    """Raised by handlers to answer with a problem document.

    Without `errors`, the problem lists one error at `path` ('' for the whole request) with
    `code` (default: the title in snake case) and the detail as its message.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: LocalizedText,
        errors: list[FieldError] | None = None,
        *,
        code: str | None = None,
        path: str = "",
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or [FieldError(path=path, code=code or _snake(title), message=detail)]


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
    personal_data_removed_at: datetime | None = Field(
        default=None,
        description=(
            "When this bundle's personal data was removed after the retention period; null until then."
        ),
    )


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
            app.state.intake = Intake(client, catalogue, settings, records=open_record_store(settings))
        yield

    app = ResidentApi(
        title="tellonce",
        version="1",
        summary="Tell us once: one life-event form, every program that needs to know.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        # Any route can meet these: an oversized body, an invalid header, an unexpected error.
        responses=problem_responses(400, 413, 422, 500),
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
                path=safe_path(err["loc"][1:]),
                code=err["type"],
                message=message_for(err["type"], err.get("ctx")),
            )
            for err in exc.errors()
        ]
        return problem(422, "Invalid request", INVALID_SUBMISSION, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The router's own refusals (no such path, a method a path does not take), as problems.
        title, detail = HTTP_PROBLEMS.get(exc.status_code, ("Request refused", REFUSED))
        return problem(exc.status_code, title, detail, headers=exc.headers)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            return problem(400, "Invalid Content-Length", BAD_LENGTH, path="Content-Length")
        if length is not None and int(length) > body_limit(request.url.path):
            return problem(413, "Request too large", TOO_LARGE)
        return await call_next(request)

    # Added last, so it wraps every other middleware: nothing escapes it as a traceback.
    app.add_middleware(UnhandledErrors)

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

    @app.get("/api/v1/bundles/{bundle_id}", tags=["catalogue"], responses=problem_responses(404))
    async def show_bundle(bundle_id: str, request: Request) -> dict[str, Any]:
        """A bundle's definition and the JSON Schema of its submission."""
        catalogue = get_intake(request).catalogue
        if bundle_id not in catalogue:
            raise ProblemError(404, "Unknown bundle", UNKNOWN_BUNDLE, path="bundle_id")
        return {
            "definition": catalogue.get(bundle_id).model_dump(mode="json"),
            "submission_schema": catalogue.schema_for(bundle_id).model_json_schema(),
        }

    @app.post(
        SUBMISSIONS_PATH,
        status_code=202,
        tags=["submissions"],
        responses=problem_responses(404, 409, 415, 503),
    )
    async def submit(
        bundle_id: str,
        request: Request,
        idempotency_key: Annotated[
            str | None, Header(json_schema_extra={"pattern": IDEMPOTENCY_KEY.pattern})
        ] = None,
    ) -> SubmissionAccepted:
        """Submit a life-event form; answers 202 once the bundle has durably started.

        The body is the bundle's submission, as JSON (see `GET /api/v1/bundles/{bundle_id}`).
        Send an `Idempotency-Key` to retry safely: the same key and body give the same answer.
        """
        intake = get_intake(request)
        if bundle_id not in intake.catalogue:
            raise ProblemError(404, "Unknown bundle", UNKNOWN_BUNDLE, path="bundle_id")
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise ProblemError(400, "Invalid Idempotency-Key", BAD_IDEMPOTENCY_KEY, path="Idempotency-Key")
        check_json_media_type(request.headers.get("content-type"))
        raw = parse_json_object(await read_body(request))
        try:
            accepted = await intake.submit(bundle_id, raw, channel="api", idempotency_key=idempotency_key)
        except SubmissionInvalid as exc:
            raise ProblemError(422, "Invalid submission", INVALID_SUBMISSION, exc.errors) from None
        except IdempotencyConflict:
            raise ProblemError(409, "Idempotency key reused", KEY_REUSED, path="Idempotency-Key") from None
        except RPCError as exc:
            # Temporal is out of reach: whether the bundle started is unknown, so the resident
            # retries (with the same Idempotency-Key, a retry cannot start a second bundle).
            log.warning("submission.unavailable", bundle_id=bundle_id, rpc_status=exc.status.name)
            raise ProblemError(503, "Submission unavailable", SUBMIT_UNAVAILABLE) from None
        except RecordStoreUnavailable:
            # The records of removed bundles could not be read, so nothing was started yet.
            log.warning("submission.records_unavailable", bundle_id=bundle_id)
            raise ProblemError(503, "Submission unavailable", SUBMIT_UNAVAILABLE) from None
        return SubmissionAccepted(
            tracking_id=accepted.tracking_id,
            status_url=f"/api/v1/submissions/{accepted.tracking_id}",
            access_code=accepted.access_code,
            notices=accepted.notices,
        )

    @app.get("/api/v1/submissions/{tracking_id}", tags=["submissions"], responses=problem_responses(404, 503))
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
                # Past the retention period only the bundle's non-personal record remains.
                try:
                    record = await open_record_store(intake.settings).get(tracking_id)
                except RecordStoreUnavailable:
                    log.warning("status.records_unavailable", bundle=tracking_id)
                    raise ProblemError(503, "Status unavailable", UNAVAILABLE) from None
                if record is None:
                    raise ProblemError(404, "Not found", NOT_FOUND) from None
                return PublicStatus.model_validate(public_record(record))
            log.warning("status.unavailable", bundle=tracking_id, rpc_status=exc.status.name)
            raise ProblemError(503, "Status unavailable", UNAVAILABLE) from None
        except WorkflowQueryFailedError:
            log.warning("status.query_failed", bundle=tracking_id)
            raise ProblemError(503, "Status unavailable", UNAVAILABLE) from None
        return public_status(status)

    @app.post(
        "/api/v1/submissions/{tracking_id}/withdraw",
        status_code=202,
        tags=["submissions"],
        responses=problem_responses(404, 409, 503),
    )
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

    mount_metrics(app, settings)
    mount_ops(app, settings)
    # Last: the portal's pages sit at the site root, below every more specific route.
    mount_portal(app, settings)
    secure_app(app, settings)
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
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ProblemError(413, "Request too large", TOO_LARGE)
    except ClientDisconnect:
        # The client left before its body ended (it announced more than it sent): nobody reads
        # this answer, but it keeps a client's behaviour out of the error log.
        raise ProblemError(400, "Incomplete request", INCOMPLETE) from None
    return bytes(body)


def check_json_media_type(content_type: str | None) -> None:
    """Refuse a body that is not declared as JSON (`application/json` or `application/*+json`) in UTF-8.

    Raises:
        ProblemError: 415.
    """
    media_type, _, parameters = (content_type or "").partition(";")
    charset = CHARSET.search(parameters)
    utf8 = charset is None or charset.group(1).lower() in ("utf-8", "utf8")
    if not JSON_MEDIA_TYPE.match(media_type.strip().lower()) or not utf8:
        raise ProblemError(415, "Unsupported media type", NOT_JSON, path="Content-Type")


class _Refused(Exception):  # noqa: N818 - internal signal out of the JSON parser's hooks
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _refuse_constant(name: str) -> Any:
    raise _Refused("non_finite_number")


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python keeps the last of two equal names; another reader may keep the first. Refusing
    # both means every reader of the body sees the same submission.
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _Refused("duplicate_name")
    return value


def _too_deep(value: Any) -> bool:
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, read strictly: UTF-8, standard JSON only, each name once, not too deep.

    Raises:
        ProblemError: 400, with a code saying what is wrong (`invalid_utf8`, `malformed_json`,
            `non_finite_number`, `duplicate_name`, `too_deep`, `not_an_object`).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("invalid_utf8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_names)
    except _Refused as exc:
        raise _malformed(exc.code) from None
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser's own stack allows.
        raise _malformed("malformed_json") from None
    if not isinstance(value, dict):
        raise _malformed("not_an_object")
    if _too_deep(value):
        raise _malformed("too_deep")
    return value


def _malformed(code: str) -> ProblemError:
    return ProblemError(400, "Malformed JSON", BODY_PROBLEMS[code], code=code)


class UnhandledErrors:
    """ASGI middleware: an exception no handler took becomes a generic 500 problem.

    The resident sees a bilingual apology and a correlation id, never the exception's text (it
    may quote personal data) nor a traceback. The log gets the same id, the exception's type and
    where it was raised (files, lines, functions), but not its message.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            correlation_id = str(uuid.uuid4())
            route = getattr(scope.get("route"), "path", None)
            frames = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)]
            log.error(
                "api.unhandled_error",
                correlation_id=correlation_id,
                method=scope.get("method"),
                route=route,
                error=type(exc).__name__,
                frames=frames[-8:],
            )
            if started:
                return  # the answer is under way: the connection simply ends
            page = _error_page(scope)
            answer = (
                page(scope, correlation_id)
                if page is not None
                else problem(
                    500, "Internal error", INTERNAL_ERROR, correlation_id=correlation_id,
                    headers={CORRELATION_HEADER: correlation_id},
                )
            )  # fmt: skip
            await answer(scope, receive, send)


def _error_page(scope: Scope) -> Callable[[Scope, str], ASGIApp] | None:
    """The site's own error page for an address outside `/api/` (the portal sets one), else None."""
    if str(scope.get("path", "")).startswith("/api/"):
        return None
    state = getattr(scope.get("app"), "state", None)
    page: Callable[[Scope, str], ASGIApp] | None = getattr(state, "error_page", None)
    return page


class ResidentApi(FastAPI):
    """The FastAPI app, whose OpenAPI document also shows problem media types and submission bodies."""

    _documented = False

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, completed once where FastAPI cannot see what the routes do."""
        schema = super().openapi()
        if not self._documented:
            intake: Intake | None = getattr(self.state, "intake", None)
            catalogue = (
                intake.catalogue if intake is not None else Catalogue.load(known_adapters=KNOWN_ADAPTERS)
            )
            _document_problem_media_type(schema)
            _document_bundle_ids(schema, catalogue)
            _document_submission_body(schema, catalogue)
            self._documented = True
        return schema


def _document_problem_media_type(schema: dict[str, Any]) -> None:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in ("4", "5") and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")


def _document_bundle_ids(schema: dict[str, Any], catalogue: Catalogue) -> None:
    # The bundles this deployment offers; any other id gets a 404 problem.
    ids = sorted(catalogue.definitions)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "bundle_id":
                    parameter["schema"] = {"type": "string", "title": "Bundle Id", "enum": ids}


def _document_submission_body(schema: dict[str, Any], catalogue: Catalogue) -> None:
    # The route reads its body itself (to bound its size and refuse bad JSON clearly), so
    # FastAPI does not know it: the catalogue's submission schemas are added here.
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    variants = []
    for name in sorted({definition.submission_schema for definition in catalogue.all()}):
        model = SUBMISSION_SCHEMAS[name]
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for part, part_schema in {**body.pop("$defs", {}), model.__name__: body}.items():
            if components.setdefault(part, part_schema) != part_schema:
                raise RuntimeError(f"two different schemas are named {part} in the OpenAPI document")
        variants.append({"$ref": f"#/components/schemas/{model.__name__}"})
    schema["paths"][SUBMISSIONS_PATH]["post"]["requestBody"] = {
        "required": True,
        "description": "The bundle's submission; `GET /api/v1/bundles/{bundle_id}` gives its schema.",
        "content": {"application/json": {"schema": {"anyOf": variants}}},
    }


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for problem documents with these statuses."""
    return {status: {"model": Problem, "description": RESPONSE_DESCRIPTIONS[status]} for status in statuses}


def authorised(
    intake: Intake, tracking_id: str, access_code: str | None
) -> WorkflowHandle[BundleWorkflow, BundleStatus]:
    """The bundle's handle, or the same 404 for a malformed id, an unknown one or a wrong code."""
    if not TRACKING_ID.match(tracking_id) or not intake.check_access(tracking_id, access_code):
        raise ProblemError(404, "Not found", NOT_FOUND)
    return intake.handle(tracking_id)


def problem(
    status: int,
    title: str,
    detail: LocalizedText,
    errors: list[FieldError] | None = None,
    *,
    path: str = "",
    correlation_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document with bilingual detail and per-field errors (at least one).

    Without `errors`, the one error is at `path` with the title's code and the detail as message.
    At most `MAX_ERRORS` errors are listed; `errors_omitted` counts the rest.
    """
    listed = errors or [FieldError(path=path, code=_snake(title), message=detail)]
    body: dict[str, Any] = {
        "type": f"https://tellonce.example/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail.model_dump(),
        "errors": [e.model_dump() for e in listed[:MAX_ERRORS]],
    }
    if len(listed) > MAX_ERRORS:
        body["errors_omitted"] = len(listed) - MAX_ERRORS
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _snake(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


INVALID_SUBMISSION = LocalizedText(
    en="Some information is missing or needs correcting.",
    fr="Certains renseignements sont manquants ou doivent être corrigés.",
)
UNKNOWN_BUNDLE = LocalizedText(en="This service does not exist.", fr="Ce service n'existe pas.")
MALFORMED_JSON = LocalizedText(
    en="The request body must be a JSON object.", fr="Le corps de la requête doit être un objet JSON."
)
BODY_PROBLEMS: dict[str, LocalizedText] = {
    "invalid_utf8": LocalizedText(
        en="The request body must be UTF-8 text.", fr="Le corps de la requête doit être du texte UTF-8."
    ),
    "malformed_json": LocalizedText(
        en="The request body is not valid JSON.", fr="Le corps de la requête n'est pas du JSON valide."
    ),
    "non_finite_number": LocalizedText(
        en="NaN and Infinity are not JSON numbers.", fr="NaN et Infinity ne sont pas des nombres JSON."
    ),
    "duplicate_name": LocalizedText(
        en="A name appears twice in the same JSON object.",
        fr="Un même nom figure deux fois dans un objet JSON.",
    ),
    "too_deep": LocalizedText(
        en="The JSON is nested too deeply.", fr="Le JSON comporte trop de niveaux d'imbrication."
    ),
    "not_an_object": MALFORMED_JSON,
}
TOO_LARGE = LocalizedText(en="The request is too large.", fr="La requête est trop volumineuse.")
BAD_LENGTH = LocalizedText(
    en="The Content-Length header must be a number of bytes.",
    fr="L'en-tête Content-Length doit être un nombre d'octets.",
)
INCOMPLETE = LocalizedText(
    en="The request ended before its body was complete.",
    fr="La requête s'est terminée avant la fin de son corps.",
)
NOT_JSON = LocalizedText(
    en="Send the submission as JSON (Content-Type: application/json) encoded in UTF-8.",
    fr="Envoyez la soumission en JSON (Content-Type: application/json) encodé en UTF-8.",
)
NO_SUCH_ADDRESS = LocalizedText(en="This address does not exist.", fr="Cette adresse n'existe pas.")
METHOD_NOT_ALLOWED = LocalizedText(
    en="This address does not accept this method.", fr="Cette adresse n'accepte pas cette méthode."
)
REFUSED = LocalizedText(en="This request cannot be processed.", fr="Cette requête ne peut pas être traitée.")
HTTP_PROBLEMS: dict[int, tuple[str, LocalizedText]] = {
    404: ("Not found", NO_SUCH_ADDRESS),
    405: ("Method not allowed", METHOD_NOT_ALLOWED),
}
INTERNAL_ERROR = LocalizedText(
    en=(
        "Something went wrong on our side. Please try again later; if it keeps happening, "
        "contact us and quote the correlation id."
    ),
    fr=(
        "Un problème est survenu de notre côté. Veuillez réessayer plus tard; si le problème "
        "persiste, communiquez avec nous en indiquant l'identifiant de corrélation."
    ),
)
SUBMIT_UNAVAILABLE = LocalizedText(
    en=(
        "We cannot accept requests right now. Please try again in a few minutes; sent again "
        "with the same Idempotency-Key, your request is never counted twice."
    ),
    fr=(
        "Nous ne pouvons pas recevoir de demandes pour le moment. Veuillez réessayer dans quelques "
        "minutes; envoyée de nouveau avec la même clé Idempotency-Key, votre demande n'est jamais "
        "comptée deux fois."
    ),
)
RESPONSE_DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed (body, header or JSON).",
    404: "No such bundle, or no request matches this tracking number and access code.",
    409: "A conflict: the Idempotency-Key was used for other data, or the request cannot be withdrawn.",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes.",
    415: "The body is not JSON in UTF-8.",
    422: "Some fields are missing or need correcting (see `errors`).",
    500: "An unexpected error; quote `correlation_id` to support.",
    503: "A service tellonce depends on is out of reach; try again in a few minutes.",
}
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
