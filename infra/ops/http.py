"""The operations HTTP API, `/api/v1/ops/…`: stuck bundles, timelines, actions, systems, audit.

Every route needs a bearer token (see `infra.ops.auth`) with a role: a viewer reads lists and
timelines without personal data; an operator acts on one bundle and may view its personal data;
a supervisor acts in bulk, pauses and resumes systems and reads the audit trail. Every action,
every refusal of a known operator and every view of personal data is written to the audit trail
before the answer is sent (requests without a valid token are logged instead). Tracking ids
appear in paths; personal data never does (amendments travel in bodies). Errors are the API's
RFC 9457 problem documents.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict, Unpack

import httpx
import structlog
from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from bundles.models import LocalizedText
from bundles.submissions import FieldError
from infra.ops.audit import AuditEntry, AuditRecord, AuditTrail, Outcome, VerifyReport, now
from infra.ops.auth import (
    DISCOVERY_PATH,
    LOCAL_ISSUER_PATH,
    AuthError,
    LocalIssuer,
    Principal,
    Role,
    TokenVerifier,
)
from infra.ops.codec_server import CODEC_PATH, codec_app
from infra.ops.models import (
    ActionOutcome,
    BulkReport,
    BundleTimeline,
    OpsAction,
    OpsActionKind,
    StuckBundle,
    StuckFilter,
    StuckReason,
    SystemHealth,
    SystemState,
    TargetRef,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.ops.engine import OpsEngine
    from infra.settings import Settings

log = structlog.get_logger("tellonce.ops")

OPS_PREFIX = "/api/v1/ops"
TRACKING_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SYSTEM_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"

NEEDED: dict[OpsActionKind, Role] = dict.fromkeys(OpsActionKind, Role.OPERATOR)
"""The role each single action needs (bulk runs and system control need a supervisor)."""
CONTROL_ROLE = Role.SUPERVISOR
"""The role pausing and resuming a legacy system needs."""


def bulk_role(*, dry_run: bool) -> Role:
    """The role a bulk action needs: an operator may preview one, only a supervisor may run it."""
    return Role.OPERATOR if dry_run else Role.SUPERVISOR


def bulk_name(kind: OpsActionKind, *, dry_run: bool) -> str:
    """The audit trail's name of a bulk action: `bulk.retry`, or `bulk.retry.dry_run` for a preview."""
    return f"bulk.{kind.value}" + (".dry_run" if dry_run else "")


class ActionRequest(BaseModel):
    """One action on one bundle; the actor is the token's subject, never a field of the body."""

    action: OpsActionKind
    step_id: str | None = Field(default=None, description="The step (every action but withdraw).")
    reason: str = Field(min_length=1, max_length=1000, description="Why: kept in the audit trail.")
    amended_fields: dict[str, Any] | None = Field(
        default=None, description="With amend: corrected values, keyed like the step's payload."
    )


class BulkRequest(BaseModel):
    """One action on every bundle a filter selects (what `ops stuck` with the same filter lists)."""

    action: OpsActionKind
    filter: StuckFilter = Field(default_factory=StuckFilter)
    reason: str = Field(min_length=1, max_length=1000)
    dry_run: bool = Field(default=True, description="Only say what would happen (the default).")
    rate_per_s: float = Field(
        default=10,
        gt=0,
        le=1000,
        description="Bundles acted on per second at most, so a system is not flooded.",
    )
    targets: list[TargetRef] | None = Field(
        default=None,
        max_length=10_000,
        description="Act only on these (the targets a dry run listed) and only while the filter still "
        "selects them; a bundle stuck since the dry run is left alone.",
    )


class PauseRequest(BaseModel):
    """Hold calls to a system (a planned outage)."""

    reason: str = Field(min_length=1, max_length=1000)


class ResumeRequest(BaseModel):
    """Release a paused system, gradually."""

    reason: str = Field(default="resumed", min_length=1, max_length=1000)
    rate_per_s: float | None = Field(
        default=None, gt=0, description="Calls per second while the held work drains; default the engine's."
    )


class Concerning(TypedDict, total=False):
    """What a checked action is about, as its audit entry names it (all optional)."""

    bundle: str | None
    step: str | None
    system: str | None
    reason: str | None


class WhoAmI(BaseModel):
    """The caller as the API sees them."""

    subject: str
    role: Role


def audit_entry(principal: Principal, action: str, outcome: Outcome, **fields: Any) -> AuditRecord:
    """An audit entry of `principal`'s, now; `fields` are the rest of `AuditRecord`'s (bundle, …)."""
    return AuditRecord(
        at=now(),
        subject=principal.subject,
        role=principal.role.value,
        action=action,
        outcome=outcome,
        **fields,
    )


def _text(en: str, fr: str | None = None) -> LocalizedText:
    return LocalizedText(en=en, fr=fr or en)


ROLE_FR = {Role.VIEWER: "lecteur", Role.OPERATOR: "opérateur", Role.SUPERVISOR: "superviseur"}


class OpsAccess:
    """What the ops routes share: the token verifier, the audit trail, the local issuer if any."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.settings = settings
        self.audit = AuditTrail(settings.audit_path)
        self.local_issuer: LocalIssuer | None = None
        if settings.oidc_issuer is None:
            self.local_issuer = LocalIssuer.for_settings(settings)
            issuer = self.local_issuer.issuer
            # The API is its own issuer: its keys are read through the app itself (no network),
            # yet along the same discovery-and-JWKS path as a real issuer's.
            base = settings.api_base_url

            def client() -> httpx.AsyncClient:
                return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base, timeout=5.0)
        else:
            issuer = settings.oidc_issuer

            def client() -> httpx.AsyncClient:
                return httpx.AsyncClient(timeout=5.0)

        self.verifier = TokenVerifier.for_settings(settings, client, issuer)
        self._engine: OpsEngine | None = None

    async def record(self, entry: AuditRecord) -> None:
        """Append to the audit trail without blocking the event loop (each append is fsynced)."""
        await asyncio.to_thread(self.audit.append, entry)

    async def authorize(
        self,
        request: Request,
        needed: Role,
        action: str,
        token: str | None = None,
        **about: Unpack[Concerning],
    ) -> Principal:
        """The caller, if their token is valid and their role suffices; otherwise refuse.

        A valid token whose role is too low is audited as `denied` (who tried what, and why);
        a missing or invalid token is logged, not audited.
        """
        if token is None:
            scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        try:
            if not token:
                raise AuthError(401, "no_token", "send a bearer token (Authorization: Bearer …)")
            principal = await self.verifier.verify(token)
        except AuthError as exc:
            # No identity to hold to account, and an fsynced entry per anonymous request
            # would let anyone grow the trail and load the disk: the log has these.
            log.warning("ops.unauthenticated", action=action, code=exc.code, status=exc.status)
            raise
        await self.check(principal, needed, action, **about)
        return principal

    async def check(
        self, principal: Principal, needed: Role, action: str, **about: Unpack[Concerning]
    ) -> None:
        """Let `principal` do `action` if their role allows `needed`; the API and the console both
        ask here, so a refusal reads the same in the trail whichever of them was used.

        Raises:
            AuthError: 403 `role_too_low`, after the refusal is audited as `denied`.
        """
        if principal.role.allows(needed):
            return
        await self.record(
            audit_entry(
                principal,
                action,
                Outcome.DENIED,
                detail="role_too_low",
                **about,
            )
        )
        raise AuthError(
            403,
            "role_too_low",
            f"your role {principal.role.value} cannot {action}; {_article(needed)} {needed.value} can",
        )

    async def record_personal_view(
        self, principal: Principal, tracking_id: str, detail: str, *, step: str | None = None
    ) -> None:
        """Record that `principal` was shown a bundle's personal data (`view.personal_data`)."""
        await self.record(
            audit_entry(
                principal,
                "view.personal_data",
                Outcome.ACCEPTED,
                bundle=tracking_id,
                step=step,
                detail=detail,
            )
        )

    async def perform(
        self, request: Request, principal: Principal, tracking_id: str, action: OpsAction
    ) -> ActionOutcome:
        """One action on one bundle through the engine, audited `accepted` or `failed` with the
        state before and after (the caller has checked the role, `NEEDED[action.action]`).

        Raises:
            LookupError: no such bundle (audited as failed).
            RPCError: Temporal is out of reach (audited as failed).
        """
        entry = audit_entry(
            principal,
            action.action.value,
            Outcome.FAILED,
            bundle=tracking_id,
            step=action.step_id,
            reason=action.reason,
        )
        try:
            outcome = await self.engine(request).act(tracking_id, action)
        except LookupError:
            await self.record(entry.model_copy(update={"detail": "no such bundle"}))
            raise
        except RPCError as exc:
            await self.record(entry.model_copy(update={"detail": f"temporal: {exc.status.name}"}))
            raise
        await self.record(
            entry.model_copy(
                update={
                    "outcome": Outcome.ACCEPTED if outcome.accepted else Outcome.FAILED,
                    "before": {"state": outcome.before},
                    "after": {"state": outcome.after},
                    "detail": outcome.message,
                }
            )
        )
        return outcome

    async def perform_bulk(self, request: Request, principal: Principal, body: BulkRequest) -> BulkReport:
        """A bulk action (or its dry run) through the engine, audited as one entry per bundle as
        each is acted on (so a bundle's own history shows it, and an interrupted run keeps what
        it did) and one entry for the run, written last whatever happened: `bulk.<action>[.dry_run]`,
        the filter before, the counts after; `failed` with the cause if the run did not finish
        (the caller has checked `bulk_role`).

        Raises:
            ValueError: the action is amend (it has no bulk form).
            RPCError: Temporal could not list the targets (nothing was acted on; the run is
                audited as failed).
        """
        name = bulk_name(body.action, dry_run=body.dry_run)
        done: list[ActionOutcome] = []

        async def audited(outcome: ActionOutcome) -> None:
            done.append(outcome)
            await self.record(
                audit_entry(
                    principal,
                    body.action.value,
                    Outcome.ACCEPTED if outcome.accepted else Outcome.FAILED,
                    bundle=outcome.tracking_id,
                    step=outcome.step_id,
                    reason=body.reason,
                    before={"state": outcome.before},
                    after={"state": outcome.after},
                    detail=f"part of {name}" + (f": {outcome.message}" if outcome.message else ""),
                )
            )

        report: BulkReport | None = None
        failure: str | None = None
        try:
            report = await self.engine(request).bulk(
                body.filter,
                body.action,
                principal.subject,
                body.reason,
                dry_run=body.dry_run,
                rate_per_s=body.rate_per_s,
                only=body.targets,
                on_outcome=audited,
            )
        except RPCError as exc:
            failure = f"temporal: {exc.status.name}"
            raise
        except BaseException as exc:
            failure = f"interrupted: {type(exc).__name__}"
            raise
        finally:
            accepted = sum(1 for o in done if o.accepted)
            await self.record(
                audit_entry(
                    principal,
                    name,
                    Outcome.ACCEPTED if failure is None else Outcome.FAILED,
                    system=body.filter.system,
                    reason=body.reason,
                    before={"filter": body.filter.model_dump(mode="json", exclude_none=True)},
                    after={
                        "targets": len(report.targets) if report is not None else None,
                        "accepted": accepted,
                        "refused": len(done) - accepted,
                    },
                    detail=failure,
                )
            )
        return report

    async def control(
        self,
        request: Request,
        principal: Principal,
        action: Literal["pause", "resume"],
        system: str,
        reason: str,
        *,
        rate: float | None = None,
    ) -> SystemState:
        """Pause or resume calls to a legacy system, audited `accepted` with the control state
        after, or `failed` with why (the caller has checked for a supervisor).

        Raises:
            LookupError: no such system (nothing was attempted; not audited).
            ValueError: already paused, or not paused (audited as failed, in the engine's words).
            RPCError: Temporal is out of reach (audited as failed).
        """
        engine = self.engine(request)
        entry = audit_entry(
            principal,
            action,
            Outcome.FAILED,
            system=system,
            reason=reason,
        )
        try:
            if action == "pause":
                state = await engine.pause(system, principal.subject, reason)
            else:
                state = await engine.resume(system, principal.subject, reason, release_per_s=rate)
        except ValueError as exc:
            await self.record(entry.model_copy(update={"detail": str(exc)}))
            raise
        except RPCError as exc:
            await self.record(entry.model_copy(update={"detail": f"temporal: {exc.status.name}"}))
            raise
        await self.record(
            entry.model_copy(
                update={
                    "outcome": Outcome.ACCEPTED,
                    "after": state.model_dump(mode="json", exclude_none=True),
                }
            )
        )
        return state

    def engine(self, request: Request) -> OpsEngine:
        """The operations engine, made on first use from the API's Temporal client."""
        if self._engine is None:
            from infra.ops.engine import OpsEngine  # noqa: PLC0415 - the engine needs the intake's client

            intake = request.app.state.intake
            self._engine = OpsEngine(intake.client, self.settings, catalogue=intake.catalogue)
        return self._engine


OPS_RESPONSES = {
    401: "No bearer token, or one that is expired, malformed or not from the configured issuer.",
    403: "The token's role cannot do this (a viewer retrying, an operator pausing a system).",
    404: "No such bundle or legacy system.",
    409: "The system is already paused, or not paused.",
    422: "The request is invalid (a missing reason, an unknown action).",
    503: "Temporal or the token issuer is out of reach; try again in a few minutes.",
}


def _article(role: Role) -> str:
    return "an" if role is Role.OPERATOR else "a"


def mount_ops(app: FastAPI, settings: Settings) -> None:  # noqa: PLR0915 - one closure per route
    """Add the operations routes (and the codec endpoint) to the HTTP app.

    Raises:
        RuntimeError: in production without `TELLONCE_OIDC_ISSUER` (unless ops are disabled).
    """
    if not settings.ops_enabled:
        return
    if settings.environment == "production" and settings.oidc_issuer is None:
        raise RuntimeError(
            "the operations API needs TELLONCE_OIDC_ISSUER in production (or TELLONCE_OPS_ENABLED=false)"
        )
    # Imported here: infra.api imports this module while it is itself being imported.
    from infra.api import RESPONSE_DESCRIPTIONS, Problem, ProblemError, problem  # noqa: PLC0415

    descriptions = {**RESPONSE_DESCRIPTIONS, **OPS_RESPONSES}

    def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
        return {status: {"model": Problem, "description": descriptions[status]} for status in statuses}

    access = OpsAccess(app, settings)
    app.state.ops_access = access
    tags: list[str | Enum] = ["operations"]
    refusals = problem_responses(401, 403)

    @app.exception_handler(AuthError)
    async def _auth_refused(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.code}"'}
        title = {401: "Not authenticated", 403: "Forbidden"}.get(exc.status, "Authentication unavailable")
        fr = {
            401: "Authentifiez-vous avec un jeton valide.",
            403: "Votre rôle ne permet pas cette action.",
        }.get(exc.status, "Le service d'authentification est indisponible.")
        detail = _text(exc.message, fr)
        return problem(
            exc.status,
            title,
            detail,
            [FieldError(path="Authorization", code=exc.code, message=detail)],
            headers=headers if exc.status == 401 else None,
        )

    def not_found(tracking_id: str) -> ProblemError:
        return ProblemError(
            404, "Not found", _text(f"no bundle {tracking_id}", f"aucun dossier {tracking_id}")
        )

    def unavailable() -> ProblemError:
        return ProblemError(
            503,
            "Temporal unavailable",
            _text("Temporal is out of reach; try again", "Temporal est injoignable"),
        )

    if access.local_issuer is not None:
        issuer = access.local_issuer

        @app.get(LOCAL_ISSUER_PATH + DISCOVERY_PATH, tags=tags, include_in_schema=False)
        async def local_discovery() -> dict[str, Any]:
            """The local issuer's discovery document (dev and tests only)."""
            return issuer.discovery(settings.api_base_url + LOCAL_ISSUER_PATH + "/jwks.json")

        @app.get(LOCAL_ISSUER_PATH + "/jwks.json", tags=tags, include_in_schema=False)
        async def local_jwks() -> dict[str, Any]:
            """The local issuer's public keys (dev and tests only)."""
            return issuer.jwks()

    @app.get(f"{OPS_PREFIX}/whoami", tags=tags, responses=refusals)
    async def whoami(request: Request) -> WhoAmI:
        """Who the token says the caller is, and their role."""
        principal = await access.authorize(request, Role.VIEWER, "whoami")
        return WhoAmI(subject=principal.subject, role=principal.role)

    @app.get(f"{OPS_PREFIX}/stuck", tags=tags, responses=problem_responses(401, 403, 503))
    async def stuck(  # noqa: PLR0917 - one parameter per query field, as FastAPI reads them
        request: Request,
        bundle_id: Annotated[str | None, Query(max_length=64)] = None,
        jurisdiction: Annotated[str | None, Query(max_length=16)] = None,
        system: Annotated[str | None, Query(pattern=SYSTEM_PATTERN)] = None,
        reason: StuckReason | None = None,
        older_than: Annotated[
            timedelta | None, Query(description="Stuck at least this long: seconds or ISO 8601 (PT2H).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[StuckBundle]:
        """Stuck bundles (needing attention, retried too often, past a deadline, waiting too long)."""
        await access.authorize(request, Role.VIEWER, "stuck")
        selection = StuckFilter(
            bundle_id=bundle_id,
            jurisdiction=jurisdiction,
            system=system,
            reason=reason,
            older_than=older_than,
            limit=limit,
        )
        try:
            return await access.engine(request).stuck(selection)
        except RPCError:
            raise unavailable() from None

    @app.get(
        f"{OPS_PREFIX}/bundles/{{tracking_id}}", tags=tags, responses=problem_responses(401, 403, 404, 503)
    )
    async def show(
        request: Request,
        tracking_id: Annotated[str, Path(pattern=TRACKING_ID_PATTERN)],
        include_personal: Annotated[
            bool, Query(description="Also each step's data (operator or supervisor; audited).")
        ] = False,
    ) -> BundleTimeline:
        """A bundle's timeline: each step's attempts, last error, references, and operators' decisions."""
        action = "view.personal_data" if include_personal else "show"
        needed = Role.OPERATOR if include_personal else Role.VIEWER
        principal = await access.authorize(request, needed, action, bundle=tracking_id)
        try:
            timeline = await access.engine(request).show(tracking_id, include_personal=include_personal)
        except LookupError:
            raise not_found(tracking_id) from None
        except RPCError:
            raise unavailable() from None
        if include_personal:
            await access.record_personal_view(principal, tracking_id, "steps' data shown")
        return timeline

    @app.post(
        f"{OPS_PREFIX}/bundles/{{tracking_id}}/actions",
        tags=tags,
        responses=problem_responses(401, 403, 404, 409, 422, 503),
    )
    async def act(
        request: Request,
        tracking_id: Annotated[str, Path(pattern=TRACKING_ID_PATTERN)],
        body: ActionRequest,
    ) -> ActionOutcome:
        """Retry (now), amend, skip or fail one step, or withdraw the bundle; `reason` is required.

        Answers 200 with `accepted: false` and why when the bundle cannot take the action now
        (e.g. the step no longer needs attention); an amend's field errors are listed.
        """
        principal = await access.authorize(
            request,
            NEEDED[body.action],
            body.action.value,
            bundle=tracking_id,
            step=body.step_id,
            reason=body.reason,
        )
        action = OpsAction(
            action=body.action,
            step_id=body.step_id,
            actor=principal.subject,
            reason=body.reason,
            amended_fields=body.amended_fields,
        )
        try:
            return await access.perform(request, principal, tracking_id, action)
        except LookupError:
            raise not_found(tracking_id) from None
        except RPCError:
            raise unavailable() from None

    @app.post(f"{OPS_PREFIX}/bulk", tags=tags, responses=problem_responses(401, 403, 503))
    async def bulk(request: Request, body: BulkRequest) -> BulkReport:
        """One action on every stuck bundle the filter selects; `dry_run` (the default) changes nothing.

        A dry run needs an operator; the real thing a supervisor. Amend has no bulk form.
        """
        principal = await access.authorize(
            request,
            bulk_role(dry_run=body.dry_run),
            bulk_name(body.action, dry_run=body.dry_run),
            system=body.filter.system,
            reason=body.reason,
        )
        if body.action is OpsActionKind.AMEND:
            raise ProblemError(
                422,
                "Invalid request",
                _text(
                    "amend corrects one step's data: use the bundle's actions", "amend: un dossier à la fois"
                ),
                path="action",
            )
        try:
            return await access.perform_bulk(request, principal, body)
        except RPCError:
            raise unavailable() from None

    @app.get(f"{OPS_PREFIX}/systems", tags=tags, responses=problem_responses(401, 403, 503))
    async def systems(request: Request) -> list[SystemHealth]:
        """Each legacy system: in flight, retrying, needing attention, held, paused, breaker, error rate."""
        await access.authorize(request, Role.VIEWER, "systems")
        try:
            return await access.engine(request).systems()
        except RPCError:
            raise unavailable() from None

    @app.post(
        f"{OPS_PREFIX}/systems/{{system}}/pause", tags=tags, responses=problem_responses(401, 403, 404, 503)
    )
    async def pause(
        request: Request, system: Annotated[str, Path(pattern=SYSTEM_PATTERN)], body: PauseRequest
    ) -> SystemState:
        """Hold every call to a system (retries are not spent) until it is resumed."""
        principal = await access.authorize(request, CONTROL_ROLE, "pause", system=system, reason=body.reason)
        return await controlled(system, access.control(request, principal, "pause", system, body.reason))

    @app.post(
        f"{OPS_PREFIX}/systems/{{system}}/resume", tags=tags, responses=problem_responses(401, 403, 404, 503)
    )
    async def resume(
        request: Request, system: Annotated[str, Path(pattern=SYSTEM_PATTERN)], body: ResumeRequest
    ) -> SystemState:
        """Release a paused system; held calls drain at `rate_per_s` so it is not flooded."""
        principal = await access.authorize(request, CONTROL_ROLE, "resume", system=system, reason=body.reason)
        change = access.control(request, principal, "resume", system, body.reason, rate=body.rate_per_s)
        return await controlled(system, change)

    async def controlled(system: str, change: Awaitable[SystemState]) -> SystemState:
        """`OpsAccess.control`'s answer, its refusals as problem documents."""
        try:
            return await change
        except LookupError:
            raise ProblemError(
                404,
                "Not found",
                _text(f"no legacy system {system}", f"aucun système {system}"),
                path="system",
            ) from None
        except ValueError as exc:
            # Already paused, or not paused: the engine's words say which.
            raise ProblemError(409, "Conflict", _text(str(exc)), path="system") from None
        except RPCError:
            raise unavailable() from None

    @app.get(f"{OPS_PREFIX}/audit", tags=tags, responses=refusals)
    async def audit_export(
        request: Request,
        since: Annotated[datetime | None, Query(description="Only entries at or after this time.")] = None,
        format: Annotated[Literal["json", "jsonl"], Query()] = "jsonl",  # noqa: A002 - the query's name
    ) -> StreamingResponse:
        """The audit trail in chain order (supervisor): JSON lines by default, or one JSON array."""
        principal = await access.authorize(request, Role.SUPERVISOR, "audit.export")
        await access.record(
            audit_entry(
                principal,
                "audit.export",
                Outcome.ACCEPTED,
                detail=f"since {since.isoformat()}" if since else "everything",
            )
        )
        entries = await asyncio.to_thread(lambda: list(access.audit.entries(since)))
        return StreamingResponse(
            _export(entries, format),
            media_type="application/x-ndjson" if format == "jsonl" else "application/json",
            headers={"Cache-Control": "no-store"},
        )

    @app.get(f"{OPS_PREFIX}/audit/verify", tags=tags, responses=refusals)
    async def audit_verify(request: Request) -> VerifyReport:
        """Check the audit trail's hash chain from its first entry (supervisor)."""
        await access.authorize(request, Role.SUPERVISOR, "audit.verify")
        return await asyncio.to_thread(access.audit.verify)

    app.mount(CODEC_PATH, codec_app(settings, access.authorize, access.record))
    from infra.ops.console import mount_console  # noqa: PLC0415 - the console imports this module

    mount_console(app, settings)


async def _export(entries: list[AuditEntry], format: str) -> AsyncIterator[bytes]:  # noqa: A002
    if format == "jsonl":
        for entry in entries:
            yield entry.model_dump_json().encode() + b"\n"
        return
    yield json.dumps([entry.model_dump(mode="json") for entry in entries]).encode()
