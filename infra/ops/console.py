"""The operations console: web pages under `/ops/` over the same engine, roles and audit as `/api/v1/ops`.

Operators sign in by pasting the bearer token they would give the API (the dev stack prints an
`ops-token:` line; production's OIDC code flow is the next step, see `docs/ops-console.md`). The
token is verified once, with the API's `TokenVerifier`, and never kept: the browser gets an
HttpOnly, SameSite=Strict cookie holding a session sealed with the deployment's keyring (subject,
role and an expiry no later than the token's). Every form is a POST carrying the CSRF token the
web protections check.

The rules are the API's own, in the API's code: pages ask `OpsAccess.check` for the role an
action needs (`NEEDED`, `bulk_role`, `CONTROL_ROLE`) and act through `OpsAccess.perform`,
`perform_bulk` and `control`, so every action, every refusal and every view of personal data is
written to the same audit trail, in the same shape, before the page answers. Viewers never see
a step's data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack
from urllib.parse import urlencode

import jwt
import structlog
from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.staticfiles import StaticFiles
from temporalio.service import RPCError

from infra.crypto import KeyringError
from infra.ops.audit import Outcome
from infra.ops.auth import AuthError, Principal, Role
from infra.ops.engine import known_systems
from infra.ops.http import (
    CONTROL_ROLE,
    NEEDED,
    BulkRequest,
    Concerning,
    OpsAccess,
    audit_entry,
    bulk_name,
    bulk_role,
)
from infra.ops.models import (
    ActionTarget,
    BreakerState,
    BundleTimeline,
    FieldError,
    OpsAction,
    OpsActionKind,
    StuckFilter,
    StuckReason,
    TargetRef,
)
from infra.portal.draft import portal_keyring
from infra.portal.i18n import jinja_environment, load_translations, localized
from infra.websecurity import csrf_token

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings

log = structlog.get_logger("tellonce.ops.console")

Language = Literal["en", "fr"]
LANGUAGES: tuple[Language, ...] = ("en", "fr")
HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
LOCALES = HERE / "locales"
STATIC = HERE / "static"
DOMAIN = "ops"
CONSOLE_PREFIX = "/ops"
STATIC_URL = "/assets/ops"

SESSION_COOKIE = "tellonce-ops-session"
SESSION_PURPOSE = "tellonce.ops.console.session"
SESSION_MAX = timedelta(hours=8)
"""A session ends after this long even if the token it came from lives longer."""

TRACKING_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SYSTEM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_REASON = 1000

N_ = str
"""Marks a message for extraction; it is translated where it is shown."""

REASON_WORDS: dict[StuckReason, str] = {
    StuckReason.NEEDS_ATTENTION: N_("A step needs a person to decide: the legacy system could not."),
    StuckReason.RETRIES_EXCEEDED: N_("A step was tried more often than its threshold allows."),
    StuckReason.PAST_DEADLINE: N_("A step is past its deadline."),
    StuckReason.REPLY_OVERDUE: N_("The legacy system's answer is overdue."),
    StuckReason.SYSTEM_PAUSED: N_("Calls to the legacy system are paused by operations."),
    StuckReason.BREAKER_OPEN: N_("Calls to the legacy system are held: too many recent errors."),
}
ACTION_WORDS: dict[OpsActionKind, str] = {
    OpsActionKind.RETRY: N_("Retry now"),
    OpsActionKind.AMEND: N_("Amend data"),
    OpsActionKind.SKIP: N_("Skip the step"),
    OpsActionKind.FAIL: N_("Fail the step"),
    OpsActionKind.WITHDRAW: N_("Withdraw the bundle"),
}
STEP_ACTIONS = (OpsActionKind.RETRY, OpsActionKind.SKIP, OpsActionKind.FAIL)
ACTIONABLE_STATES = frozenset({"needs_attention", "retrying"})
OPEN_BUNDLE_STATES = frozenset({"received", "in_progress", "needs_attention"})
REASON_REQUIRED = N_("Enter why: the reason is kept in the audit trail.")
REASON_TOO_LONG = N_("Keep the reason under 1000 characters.")

BULK_ACTIONS = (OpsActionKind.RETRY, OpsActionKind.SKIP, OpsActionKind.FAIL, OpsActionKind.WITHDRAW)
"""The actions with a bulk form (amend corrects one bundle's data at a time)."""
WOULD_WORDS: dict[OpsActionKind, str] = {
    OpsActionKind.RETRY: N_(
        "Send the step's request again now, with the same idempotency key: the system cannot apply it twice."
    ),
    OpsActionKind.SKIP: N_("End the step as skipped: nothing more is sent for it."),
    OpsActionKind.FAIL: N_(
        "End the step as failed: before the point of no return, the bundle is rolled back."
    ),
    OpsActionKind.WITHDRAW: N_(
        "Withdraw the bundle: nothing more is sent and steps that can be undone are undone."
    ),
}
BREAKER_WORDS: dict[BreakerState, str] = {
    BreakerState.CLOSED: N_("Breaker closed: calls go through."),
    BreakerState.OPEN: N_("Breaker open: calls are held after too many errors."),
    BreakerState.HALF_OPEN: N_("Breaker half-open: one trial call at a time."),
}
FILTER_FIELDS = ("bundle_id", "jurisdiction", "system", "reason", "hours")
"""The stuck list's filters: query parameters of its page, `filter_…` fields of the bulk forms."""
BULK_RATE = 10.0
"""Bundles acted on per second by a bulk run unless the supervisor says otherwise (the API's default)."""
MAX_RATE = 1000.0
RATE_INVALID = N_("Enter a number per second greater than 0 and at most 1000, such as 10 or 0.5.")


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Session:
    """A signed-in operator as the console's cookie holds them."""

    subject: str
    role: Role
    expires: float

    @property
    def principal(self) -> Principal:
        """The operator, as the API's rules take them."""
        return Principal(subject=self.subject, role=self.role)


class SessionSealer:
    """Seals sessions into the cookie and opens them (AES-GCM under the keyring, purpose-bound)."""

    def __init__(self, settings: Settings) -> None:
        self._keyring = portal_keyring(settings)

    def seal(self, session: Session) -> str:
        """The session as an opaque cookie value."""
        data = {"sub": session.subject, "role": session.role.value, "exp": session.expires}
        return self._keyring.seal(json.dumps(data).encode(), SESSION_PURPOSE)

    def open(self, value: str | None, *, at: float | None = None) -> Session | None:
        """The session in a cookie value, or None when it is missing, forged or expired."""
        if not value:
            return None
        try:
            data = json.loads(self._keyring.open_sealed(value, SESSION_PURPOSE))
            session = Session(subject=str(data["sub"]), role=Role(data["role"]), expires=float(data["exp"]))
        except (KeyringError, ValueError, KeyError, IndexError, TypeError):
            return None
        if session.expires <= (at or time.time()):
            return None
        return session


def token_expiry(token: str) -> float:
    """The `exp` of a token the verifier has already accepted (so its claims can be trusted)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"])


# --------------------------------------------------------------------------- translations


def environments() -> dict[Language, Environment]:
    """One Jinja environment per language with the console's catalogue (autoescaping on)."""
    envs: dict[Language, Environment] = {}
    for language in LANGUAGES:
        translations = load_translations(language, locales=LOCALES, domain=DOMAIN)
        env = jinja_environment(TEMPLATES, language, translations)
        env.globals["reason_words"] = REASON_WORDS
        env.globals["action_words"] = ACTION_WORDS
        env.filters["when"] = _when
        env.filters["number"] = lambda value, _lang=language: format_decimal(value, locale=_lang)
        env.filters["field_id"] = field_id
        env.filters["target_value"] = target_value
        # GCDS radios submit an option marked `checked`, not one given as their `value` attribute
        # until it is clicked: the preselected action is marked so.
        env.filters["action_options"] = lambda kinds, step, current="", _t=translations: [
            {
                "id": f"action-{step}-{kind}",
                "label": _t.gettext(ACTION_WORDS[OpsActionKind(kind)]),
                "value": kind,
                **({"checked": True} if kind == current else {}),
            }
            for kind in kinds
        ]
        env.globals["leaves"] = leaves
        envs[language] = env
    return envs


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def field_id(path: str) -> str:
    """The element id of an amend form's field (and its error-summary link's target)."""
    return "f-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


# --------------------------------------------------------------------------- amend fields


def leaves(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every scalar of a step's payload with its dotted path, in the payload's order."""
    found: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.extend(leaves(value, f"{path}."))
        elif not isinstance(value, list):
            found.append((path, value))
    return found


def _coerce(text: str, original: Any) -> Any:
    """A form's text as the type the payload held there (a number stays a number when it parses)."""
    if isinstance(original, bool):
        return text.strip().lower() in {"true", "yes", "oui", "1"}
    if isinstance(original, int):
        try:
            return int(text.strip())
        except ValueError:
            return text
    if original is None and text == "":
        return None
    return text


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def amended_fields(payload: Mapping[str, Any], form: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an amend form changed, nested like the payload (unchanged ones are left out)."""
    changed: dict[str, Any] = {}
    for path, original in leaves(payload):
        submitted = form.get(path)
        if not isinstance(submitted, str) or submitted == _shown(original):
            continue
        node = changed
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _coerce(submitted, original)
    return changed


# --------------------------------------------------------------------------- refusals


class SignInNeeded(Exception):  # noqa: N818 - answered with the sign-in page, not an error
    """No valid console session: the browser is sent to sign in."""

    def __init__(self, lang: Language) -> None:
        super().__init__(lang)
        self.lang = lang


class ConsoleRefused(Exception):  # noqa: N818 - answered as a page
    """A console page cannot be shown: a role too low (403), no such thing (404), Temporal away (503)."""

    def __init__(self, lang: Language, status: int, needed: Role | None = None) -> None:
        super().__init__(status)
        self.lang = lang
        self.status = status
        self.needed = needed


def language(lang: str) -> Language:
    """The page language of a path segment.

    Raises:
        ConsoleRefused: neither `en` nor `fr` (404).
    """
    if lang not in LANGUAGES:
        raise ConsoleRefused("en", 404)
    return "fr" if lang == "fr" else "en"


# --------------------------------------------------------------------------- the console


class Console:
    """The console's state for one app: its templates, the session sealer and the ops access."""

    def __init__(self, settings: Settings, access: OpsAccess) -> None:
        self.settings = settings
        self.access = access
        self.envs = environments()
        self.sessions = SessionSealer(settings)

    # --- rendering ---

    def render(
        self,
        request: Request,
        lang: Language,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        session: Session | None = None,
        lang_path: str | None = None,
    ) -> HTMLResponse:
        """A console page in one language, with the request's CSP nonce and CSRF token.

        `lang_path` is the page (under `/ops/{lang}`, with its query) the language toggle leads
        to, for pages that answer a POST and have no address of their own to reload.
        """
        other = "fr" if lang == "en" else "en"
        path = request.url.path
        if lang_path is not None:
            lang_href = f"{CONSOLE_PREFIX}/{other}{lang_path}"
        else:
            lang_href = path.replace(f"{CONSOLE_PREFIX}/{lang}/", f"{CONSOLE_PREFIX}/{other}/", 1)
            if request.url.query:
                lang_href += f"?{request.url.query}"
        page = (
            self.envs[lang]
            .get_template(template)
            .render(
                **context,
                csp_nonce=getattr(request.state, "csp_nonce", ""),
                csrf_token=csrf_token(request),
                lang_href=lang_href,
                base=f"{CONSOLE_PREFIX}/{lang}",
                here=path,
                session=session,
                roles=Role,
            )
        )
        return HTMLResponse(page, status_code=status)

    # --- sessions ---

    def session(self, request: Request) -> Session | None:
        """The signed-in operator of this request, if any."""
        return self.sessions.open(request.cookies.get(SESSION_COOKIE))

    def require(self, request: Request, lang: Language) -> Session:
        """The signed-in operator.

        Raises:
            SignInNeeded: nobody is signed in (or the session has expired).
        """
        session = self.session(request)
        if session is None:
            raise SignInNeeded(lang)
        return session

    async def allow(
        self,
        session: Session,
        lang: Language,
        needed: Role,
        action: str,
        **about: Unpack[Concerning],
    ) -> Principal:
        """The operator, if their role suffices (the API's check); otherwise the refusal is audited.

        Raises:
            ConsoleRefused: 403, the role is too low.
        """
        try:
            await self.access.check(session.principal, needed, action, **about)
        except AuthError:
            raise ConsoleRefused(lang, 403, needed) from None
        return session.principal

    async def timeline(
        self, request: Request, lang: Language, tracking_id: str, *, include_personal: bool = False
    ) -> BundleTimeline:
        """A bundle's timeline from the engine.

        Raises:
            ConsoleRefused: 404 (no such bundle) or 503 (Temporal out of reach).
        """
        try:
            return await self.access.engine(request).show(tracking_id, include_personal=include_personal)
        except LookupError:
            raise ConsoleRefused(lang, 404) from None
        except RPCError:
            raise ConsoleRefused(lang, 503) from None


def console_of(request: Request) -> Console:
    """The app's console."""
    console: Console = request.app.state.ops_console
    return console


def _reason_error(reason: str) -> str | None:
    if not reason.strip():
        return REASON_REQUIRED
    if len(reason) > MAX_REASON:
        return REASON_TOO_LONG
    return None


def _tracking_id(lang: Language, value: str) -> str:
    if not TRACKING_ID.match(value):
        raise ConsoleRefused(lang, 404)
    return value


def _step_id(lang: Language, value: str) -> str:
    if not STEP_ID.match(value):
        raise ConsoleRefused(lang, 404)
    return value


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _form_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def router() -> APIRouter:  # noqa: PLR0915 - one closure per page
    """The console's pages."""
    pages = APIRouter(include_in_schema=False)

    @pages.get(CONSOLE_PREFIX)
    @pages.get(f"{CONSOLE_PREFIX}/")
    async def home() -> RedirectResponse:
        return _see_other(f"{CONSOLE_PREFIX}/en/")

    # --- sign-in ---

    @pages.get(f"{CONSOLE_PREFIX}/{{lang}}/sign-in")
    async def sign_in_page(request: Request, lang: str) -> HTMLResponse:
        language_ = language(lang)
        console = console_of(request)
        return console.render(request, language_, "sign_in.html", {"error": None})

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/sign-in")
    async def sign_in(request: Request, lang: str) -> Response:
        language_ = language(lang)
        console = console_of(request)
        form = await request.form()
        token = _form_text(form, "token").strip()
        try:
            # The API's own check: a refusal is audited there, with the subject when it is known.
            principal = await console.access.authorize(request, Role.VIEWER, "console.sign_in", token=token)
        except AuthError as exc:
            error = (
                N_("Paste your operations token.")
                if exc.code == "no_token"
                else N_("This token was refused. Get a new one and try again.")
            )
            status = 503 if exc.status == 503 else 401 if exc.status == 401 else 403
            return console.render(request, language_, "sign_in.html", {"error": error}, status=status)
        expires = min(token_expiry(token), time.time() + SESSION_MAX.total_seconds())
        await console.access.record(
            audit_entry(
                principal,
                "console.sign_in",
                Outcome.ACCEPTED,
            )
        )
        response = _see_other(f"{CONSOLE_PREFIX}/{language_}/")
        response.set_cookie(
            SESSION_COOKIE,
            console.sessions.seal(Session(principal.subject, principal.role, expires)),
            max_age=max(1, int(expires - time.time())),
            path=CONSOLE_PREFIX,
            httponly=True,
            samesite="strict",
            secure=bool(request.scope.get("tellonce.secure")) or request.url.scheme == "https",
        )
        return response

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/sign-out")
    async def sign_out(request: Request, lang: str) -> Response:
        language_ = language(lang)
        response = _see_other(f"{CONSOLE_PREFIX}/{language_}/sign-in")
        response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX, httponly=True, samesite="strict")
        return response

    # --- the stuck list ---

    @pages.get(f"{CONSOLE_PREFIX}/{{lang}}/")
    async def stuck_list(request: Request, lang: str) -> HTMLResponse:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        await console.allow(session, language_, Role.VIEWER, "stuck")
        query = request.query_params
        filters, errors = _filters(query)
        bundles = []
        if not errors:
            try:
                bundles = await console.access.engine(request).stuck(filters)
            except RPCError:
                raise ConsoleRefused(language_, 503) from None
        values = {name: query.get(name, "") for name in FILTER_FIELDS}
        return console.render(
            request,
            language_,
            "stuck.html",
            {
                "bundles": bundles,
                "values": values,
                "filter_query": _filter_query(values),
                "can_bulk": session.role.allows(bulk_role(dry_run=True)),
                "errors": errors,
                "reasons": list(StuckReason),
                "systems": known_systems(console.settings),
                "at": datetime.now(UTC),
            },
            status=422 if errors else 200,
            session=session,
        )

    # --- a bundle's timeline and its actions ---

    @pages.get(f"{CONSOLE_PREFIX}/{{lang}}/bundles/{{tracking_id}}")
    async def timeline(request: Request, lang: str, tracking_id: str) -> HTMLResponse:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        tracking_id = _tracking_id(language_, tracking_id)
        personal = request.query_params.get("personal") == "1"
        if personal:
            principal = await console.allow(
                session, language_, Role.OPERATOR, "view.personal_data", bundle=tracking_id
            )
        else:
            principal = await console.allow(session, language_, Role.VIEWER, "show", bundle=tracking_id)
        shown = await console.timeline(request, language_, tracking_id, include_personal=personal)
        if personal:
            await console.access.record_personal_view(principal, tracking_id, "steps' data shown (console)")
        return _timeline_page(request, console, lang=language_, session=session, shown=shown, extra={})

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/bundles/{{tracking_id}}/actions")
    async def act(request: Request, lang: str, tracking_id: str) -> Response:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        tracking_id = _tracking_id(language_, tracking_id)
        form = await request.form()
        try:
            kind = OpsActionKind(_form_text(form, "action"))
        except ValueError:
            raise ConsoleRefused(language_, 404) from None
        step_id = _form_text(form, "step_id") or None
        if step_id is not None:
            step_id = _step_id(language_, step_id)
        if kind is OpsActionKind.AMEND and step_id is not None:
            return _see_other(f"{CONSOLE_PREFIX}/{language_}/bundles/{tracking_id}/steps/{step_id}/amend")
        reason = _form_text(form, "reason").strip()
        principal = await console.allow(
            session,
            language_,
            NEEDED[kind],
            kind.value,
            bundle=tracking_id,
            step=step_id,
            reason=reason or None,
        )
        problem = _reason_error(reason)
        refusal: str | None = None
        if problem is None and kind is not OpsActionKind.AMEND:
            try:
                outcome = await console.access.perform(
                    request,
                    principal,
                    tracking_id,
                    OpsAction(action=kind, step_id=step_id, actor=principal.subject, reason=reason),
                )
            except LookupError:
                raise ConsoleRefused(language_, 404) from None
            except RPCError:
                raise ConsoleRefused(language_, 503) from None
            if outcome.accepted:
                return _see_other(f"{CONSOLE_PREFIX}/{language_}/bundles/{tracking_id}?done={kind.value}")
            # The engine's and the workflow's words are English and not in the catalogue: the
            # page says it in its language and shows them apart, marked English.
            problem, refusal = N_("The bundle cannot take this action now."), outcome.message
        shown = await console.timeline(request, language_, tracking_id)
        form_key = step_id or "bundle"
        return _timeline_page(
            request,
            console,
            lang=language_,
            session=session,
            shown=shown,
            extra={"failed_form": form_key, "problem": problem, "refusal": refusal, "reason": reason},
            status=422,
        )

    @pages.get(f"{CONSOLE_PREFIX}/{{lang}}/bundles/{{tracking_id}}/steps/{{step_id}}/amend")
    async def amend_page(request: Request, lang: str, tracking_id: str, step_id: str) -> HTMLResponse:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        tracking_id = _tracking_id(language_, tracking_id)
        step_id = _step_id(language_, step_id)
        principal = await console.allow(
            session, language_, Role.OPERATOR, "view.personal_data", bundle=tracking_id, step=step_id
        )
        shown = await console.timeline(request, language_, tracking_id, include_personal=True)
        step = next((s for s in shown.steps if s.status.id == step_id), None)
        if step is None:
            raise ConsoleRefused(language_, 404)
        await console.access.record_personal_view(
            principal, tracking_id, f"step {step_id}'s data shown to amend it"
        )
        fields = [(path, _shown(value)) for path, value in leaves(step.payload or {})]
        return console.render(
            request,
            language_,
            "amend.html",
            {"bundle": shown, "step": step, "fields": fields, "errors": {}, "reason": "", "general": []},
            session=session,
        )

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/bundles/{{tracking_id}}/steps/{{step_id}}/amend")
    async def amend(request: Request, lang: str, tracking_id: str, step_id: str) -> Response:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        tracking_id = _tracking_id(language_, tracking_id)
        step_id = _step_id(language_, step_id)
        form = await request.form()
        reason = _form_text(form, "reason").strip()
        principal = await console.allow(
            session,
            language_,
            NEEDED[OpsActionKind.AMEND],
            OpsActionKind.AMEND.value,
            bundle=tracking_id,
            step=step_id,
            reason=reason or None,
        )
        shown = await console.timeline(request, language_, tracking_id, include_personal=True)
        step = next((s for s in shown.steps if s.status.id == step_id), None)
        if step is None:
            raise ConsoleRefused(language_, 404)
        payload = step.payload or {}
        errors: dict[str, str] = {}
        general: list[str] = []
        reason_problem = _reason_error(reason)
        if reason_problem:
            errors["reason"] = reason_problem
        else:
            changes = amended_fields(payload, form)
            try:
                outcome = await console.access.perform(
                    request,
                    principal,
                    tracking_id,
                    OpsAction(
                        action=OpsActionKind.AMEND,
                        step_id=step_id,
                        actor=principal.subject,
                        reason=reason,
                        amended_fields=changes,
                    ),
                )
            except LookupError:
                raise ConsoleRefused(language_, 404) from None
            except RPCError:
                raise ConsoleRefused(language_, 503) from None
            if outcome.accepted:
                return _see_other(f"{CONSOLE_PREFIX}/{language_}/bundles/{tracking_id}?done=amend")
            errors, general = _field_errors(outcome.errors, language_)
            if not outcome.errors:
                general.append(outcome.message or N_("The bundle cannot take this action now."))
        paths = {path for path, _ in leaves(payload)}
        fields = [
            (path, form[path] if isinstance(form.get(path), str) else _shown(value))
            for path, value in leaves(payload)
        ]
        # An error about a field the form does not show goes to the summary, linked to the first field.
        for path in list(errors):
            if path not in paths and path != "reason":
                general.append(f"{path}: {errors.pop(path)}")
        # The page comes back filled with the step's stored data, not only what was posted: a view
        # of personal data like the amend page's, audited the same way.
        await console.access.record_personal_view(
            principal, tracking_id, f"step {step_id}'s data shown again after a refused amend", step=step_id
        )
        return console.render(
            request,
            language_,
            "amend.html",
            {
                "bundle": shown,
                "step": step,
                "fields": fields,
                "errors": errors,
                "reason": reason,
                "general": general,
            },
            status=422,
            session=session,
        )

    # --- bulk actions (supervisors) ---

    @pages.get(f"{CONSOLE_PREFIX}/{{lang}}/bulk")
    async def bulk_page(request: Request, lang: str) -> HTMLResponse:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        if not session.role.allows(bulk_role(dry_run=True)):
            # Only a form is asked for, not an action: refused, with nothing to audit.
            raise ConsoleRefused(language_, 403, bulk_role(dry_run=True))
        values = {name: request.query_params.get(name, "").strip() for name in FILTER_FIELDS}
        _, filter_errors = _filters(values)
        return _bulk_form(
            request, console, lang=language_, session=session, values=values, filter_errors=filter_errors
        )

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/bulk/preview")
    async def bulk_preview(request: Request, lang: str) -> Response:
        return await _bulk(request, lang, dry_run=True)

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/bulk/run")
    async def bulk_run(request: Request, lang: str) -> Response:
        return await _bulk(request, lang, dry_run=False)

    async def _bulk(request: Request, lang: str, *, dry_run: bool) -> Response:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        form = await request.form()
        # The filter travels in the body, as the stuck list's query had it: nothing personal in it.
        values = {name: _form_text(form, f"filter_{name}").strip() for name in FILTER_FIELDS}
        filters, filter_errors = _filters(values)
        try:
            kind = OpsActionKind(_form_text(form, "action"))
        except ValueError:
            raise ConsoleRefused(language_, 404) from None
        reason = _form_text(form, "reason").strip()
        rate_text = _form_text(form, "rate").strip()
        # A run acts only on what its preview listed (sent back in the body), not on whatever the
        # filter selects by the time the supervisor confirms.
        pinned = None if dry_run else _targets(language_, form.getlist("target"))
        principal = await console.allow(
            session,
            language_,
            bulk_role(dry_run=dry_run),
            bulk_name(kind, dry_run=dry_run),
            system=filters.system,
            reason=reason or None,
        )
        errors: dict[str, str] = {}
        if kind not in BULK_ACTIONS:
            errors["action-bulk"] = N_("Choose retry, skip, fail or withdraw: amend is one bundle at a time.")
        if problem := _reason_error(reason):
            errors["reason-bulk"] = problem
        rate, rate_problem = _rate(rate_text, BULK_RATE)
        if rate_problem:
            errors["rate"] = rate_problem
        if errors or filter_errors or rate is None:
            return _bulk_form(
                request,
                console,
                lang=language_,
                session=session,
                values=values,
                filter_errors=filter_errors,
                chosen=kind,
                reason=reason,
                rate=rate_text,
                errors=errors,
                status=422,
            )
        try:
            body = BulkRequest(
                action=kind, filter=filters, reason=reason, dry_run=dry_run, rate_per_s=rate, targets=pinned
            )
            report = await console.access.perform_bulk(request, principal, body)
        except RPCError:
            raise ConsoleRefused(language_, 503) from None
        return console.render(
            request,
            language_,
            "bulk_preview.html" if dry_run else "bulk_report.html",
            {
                "report": report,
                "bundles": len({t.tracking_id for t in report.targets}),
                "values": values,
                "filter_query": _filter_query(values),
                "limit": filters.limit,
                "kind": kind,
                "reason": reason,
                "rate": rate,
                "would_words": WOULD_WORDS,
                "can_run": session.role.allows(bulk_role(dry_run=False)),
            },
            session=session,
            lang_path=f"/bulk?{_filter_query(values)}" if dry_run else f"/?{_filter_query(values)}",
        )

    # --- legacy systems' health, pause and resume ---

    @pages.get(f"{CONSOLE_PREFIX}/{{lang}}/systems")
    async def systems_page(request: Request, lang: str) -> HTMLResponse:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        await console.allow(session, language_, Role.VIEWER, "systems")
        done = request.query_params.get("done")
        system = request.query_params.get("system", "")
        shown = (
            (done, system)
            if done in {"pause", "resume"} and system in known_systems(console.settings)
            else None
        )
        return await _systems(request, console, lang=language_, session=session, extra={"done": shown})

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/systems/pause")
    async def pause(request: Request, lang: str) -> Response:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        form = await request.form()
        system = _system_id(language_, _form_text(form, "system").strip())
        reason = _form_text(form, "reason").strip()
        principal = await console.allow(
            session, language_, CONTROL_ROLE, "pause", system=system, reason=reason or None
        )
        errors: dict[str, str] = {}
        if system is None:
            errors["pause-system"] = N_("Choose the legacy system to pause.")
        if problem := _reason_error(reason):
            errors["pause-reason"] = problem
        if errors or system is None:
            extra = {"errors": errors, "pause_system": system, "pause_reason": reason}
            return await _systems(request, console, lang=language_, session=session, extra=extra, status=422)
        conflict = {"pause-system": N_("This system is already paused.")}
        return await _control(
            request, console, language_, session, principal, "pause", system, reason, conflict
        )

    @pages.post(f"{CONSOLE_PREFIX}/{{lang}}/systems/resume")
    async def resume(request: Request, lang: str) -> Response:
        language_ = language(lang)
        console = console_of(request)
        session = console.require(request, language_)
        form = await request.form()
        system = _system_id(language_, _form_text(form, "system").strip())
        if system is None:
            raise ConsoleRefused(language_, 404)
        # The API's default when no reason is given.
        reason = _form_text(form, "reason").strip() or "resumed"
        rate_text = _form_text(form, "rate").strip()
        principal = await console.allow(
            session, language_, CONTROL_ROLE, "resume", system=system, reason=reason
        )
        errors: dict[str, str] = {}
        rate, rate_problem = _rate(rate_text, None)
        if rate_problem:
            errors[f"resume-{system}-rate"] = rate_problem
        if problem := _reason_error(reason):
            errors[f"resume-{system}-reason"] = problem
        if errors:
            extra: dict[str, Any] = {
                "errors": errors,
                "resume_values": {"system": system, "rate": rate_text, "reason": reason},
            }
            return await _systems(request, console, lang=language_, session=session, extra=extra, status=422)
        conflict = {"health": N_("This system is not paused.")}
        return await _control(
            request, console, language_, session, principal, "resume", system, reason, conflict, rate=rate
        )

    return pages


async def _control(  # noqa: PLR0917 - the page's state, then what to do
    request: Request,
    console: Console,
    lang: Language,
    session: Session,
    principal: Principal,
    action: Literal["pause", "resume"],
    system: str,
    reason: str,
    conflict: Mapping[str, str],
    *,
    rate: float | None = None,
) -> Response:
    """Pause or resume through the API's `control`, then back to the systems page: with
    `conflict` (the form's error) when the system is already in that state."""
    try:
        await console.access.control(request, principal, action, system, reason, rate=rate)
    except LookupError:
        raise ConsoleRefused(lang, 404) from None
    except ValueError as exc:
        extra = {"conflict": str(exc), "errors": conflict}
        return await _systems(request, console, lang=lang, session=session, extra=extra, status=409)
    except RPCError:
        raise ConsoleRefused(lang, 503) from None
    return _see_other(f"{CONSOLE_PREFIX}/{lang}/systems?done={action}&system={system}")


def _filter_query(values: Mapping[str, str]) -> str:
    """The stuck list's query string for a filter (its empty fields left out)."""
    return urlencode({name: value for name, value in values.items() if value})


def target_value(target: ActionTarget | TargetRef) -> str:
    """A bulk target as the preview's confirm form holds it: `tracking id` or `tracking id/step`."""
    return target.tracking_id + (f"/{target.step_id}" if target.step_id else "")


def _targets(lang: Language, values: list[Any]) -> list[TargetRef]:
    """The previewed targets a confirmed run resends.

    Raises:
        ConsoleRefused: 404, a value that is not a tracking id with an optional step.
    """
    found: list[TargetRef] = []
    for value in values:
        tracking_id, _, step_id = (value if isinstance(value, str) else "").partition("/")
        found.append(
            TargetRef(
                tracking_id=_tracking_id(lang, tracking_id),
                step_id=_step_id(lang, step_id) if step_id else None,
            )
        )
    return found


def _rate(text: str, default: float | None) -> tuple[float | None, str | None]:
    """A rate per second from a form (a French decimal comma is fine), or what is wrong with it."""
    if not text:
        return default, None
    try:
        rate = float(text.replace(",", "."))
    except ValueError:
        return None, RATE_INVALID
    if not 0 < rate <= MAX_RATE:  # also refuses nan and infinity
        return None, RATE_INVALID
    return rate, None


def _system_id(lang: Language, value: str) -> str | None:
    """A legacy system's id from a form: None when blank.

    Raises:
        ConsoleRefused: 404, not the shape of a system id.
    """
    if not value:
        return None
    if not SYSTEM_ID.match(value):
        raise ConsoleRefused(lang, 404)
    return value


def _bulk_form(
    request: Request,
    console: Console,
    *,
    lang: Language,
    session: Session,
    values: Mapping[str, str],
    filter_errors: Mapping[str, str],
    chosen: OpsActionKind = OpsActionKind.RETRY,
    reason: str = "",
    rate: str = "",
    errors: Mapping[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    query = _filter_query(values)
    return console.render(
        request,
        lang,
        "bulk.html",
        {
            "values": values,
            "filter_query": query,
            "filter_errors": filter_errors,
            "actions": [kind.value for kind in BULK_ACTIONS],
            "chosen": chosen.value if chosen in BULK_ACTIONS else OpsActionKind.RETRY.value,
            "reason": reason,
            "rate": rate,
            "default_rate": BULK_RATE,
            "errors": errors or {},
            "would_words": WOULD_WORDS,
        },
        status=status,
        session=session,
        lang_path=f"/bulk?{query}",
    )


async def _systems(
    request: Request,
    console: Console,
    *,
    lang: Language,
    session: Session,
    extra: Mapping[str, Any],
    status: int = 200,
) -> HTMLResponse:
    """The system-health page; a form that failed is shown again with its errors."""
    try:
        health = await console.access.engine(request).systems()
    except RPCError:
        raise ConsoleRefused(lang, 503) from None
    return console.render(
        request,
        lang,
        "systems.html",
        {
            "health": health,
            "can_control": session.role.allows(CONTROL_ROLE),
            "breaker_words": BREAKER_WORDS,
            "done": None,
            "errors": {},
            "conflict": None,
            "pause_system": None,
            "pause_reason": "",
            "resume_values": {},
            "at": datetime.now(UTC),
            **extra,
        },
        status=status,
        session=session,
        lang_path="/systems",
    )


def _field_errors(found: list[FieldError], lang: Language) -> tuple[dict[str, str], list[str]]:
    errors: dict[str, str] = {}
    general: list[str] = []
    for error in found:
        message = localized(error.message, lang)
        if error.path:
            errors.setdefault(error.path, message)
        else:
            general.append(message)
    return errors, general


def _filters(query: Mapping[str, str]) -> tuple[StuckFilter, dict[str, str]]:
    """The stuck list's filters from the query string, and what is wrong with them."""
    errors: dict[str, str] = {}
    bundle_id = query.get("bundle_id", "").strip() or None
    jurisdiction = query.get("jurisdiction", "").strip() or None
    system = query.get("system", "").strip() or None
    if system is not None and not SYSTEM_ID.match(system):
        errors["system"] = N_("Choose a legacy system from the list.")
        system = None
    reason: StuckReason | None = None
    if query.get("reason"):
        try:
            reason = StuckReason(query["reason"])
        except ValueError:
            errors["reason"] = N_("Choose a reason from the list.")
    older_than: timedelta | None = None
    hours = query.get("hours", "").strip()
    if hours:
        try:
            older_than = timedelta(hours=float(hours))
            if older_than < timedelta(0) or older_than > timedelta(days=3650):
                raise ValueError(hours)
        except ValueError:
            errors["hours"] = N_("Enter a number of hours, such as 2 or 0.5.")
            older_than = None
    if bundle_id is not None and len(bundle_id) > 64:
        errors["bundle_id"] = N_("A bundle id is at most 64 characters.")
        bundle_id = None
    if jurisdiction is not None and len(jurisdiction) > 16:
        errors["jurisdiction"] = N_("A jurisdiction is at most 16 characters, such as CA-ON.")
        jurisdiction = None
    return (
        StuckFilter(
            bundle_id=bundle_id,
            jurisdiction=jurisdiction,
            system=system,
            reason=reason,
            older_than=older_than,
        ),
        errors,
    )


def _timeline_page(
    request: Request,
    console: Console,
    *,
    lang: Language,
    session: Session,
    shown: BundleTimeline,
    extra: Mapping[str, Any],
    status: int = 200,
) -> HTMLResponse:
    done = request.query_params.get("done")
    return console.render(
        request,
        lang,
        "timeline.html",
        {
            "bundle": shown,
            "done": ACTION_WORDS.get(OpsActionKind(done)) if done in set(OpsActionKind) else None,
            "step_actions": STEP_ACTIONS,
            "actionable": ACTIONABLE_STATES,
            "open_states": OPEN_BUNDLE_STATES,
            "can_act": session.role.allows(Role.OPERATOR),
            "failed_form": None,
            "problem": None,
            "reason": "",
            **extra,
        },
        status=status,
        session=session,
    )


def mount_console(app: FastAPI, settings: Settings) -> None:
    """Add the console's pages (and its stylesheet) to the HTTP app; needs `mount_ops` first."""
    access: OpsAccess | None = getattr(app.state, "ops_access", None)
    if access is None:
        return  # operations are disabled: no API, no console
    console = Console(settings, access)
    app.state.ops_console = console
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="ops-static")
    app.include_router(router())

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        return _see_other(f"{CONSOLE_PREFIX}/{exc.lang}/sign-in")

    @app.exception_handler(ConsoleRefused)
    async def _refused(request: Request, exc: ConsoleRefused) -> HTMLResponse:
        return console.render(
            request,
            exc.lang,
            "refused.html",
            {"status": exc.status, "needed": exc.needed},
            status=exc.status,
            session=console.session(request),
        )


__all__ = ["CONSOLE_PREFIX", "Console", "Session", "SessionSealer", "mount_console"]
