"""The resident portal's pages: start, form pages, consent, review, confirmation, status, withdrawal.

Every page exists in English (`/en/…`) and French (`/fr/…`). A journey's answers travel in a
sealed hidden field (`infra.portal.draft`), so every form is a POST to one address per bundle
and no personal data is ever in a URL. Validation is the API's own (`validate_submission`);
submission and withdrawal go through the same `Intake` and workflow update as `/api/v1`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.datastructures import FormData
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from bundles.models import BundleDefinition, LocalizedText
from bundles.plan import resolve_plan, steps_after_pivot
from bundles.submissions import FieldError, SubmissionInvalid, validate_submission
from infra.intake import IdempotencyConflict, Intake
from infra.portal.draft import Draft, DraftInvalid, DraftSealer
from infra.portal.forms import (
    N_,
    OWNER_LABELS,
    FieldSpec,
    Journey,
    Page,
    errors_by_field,
    journey_for,
    submission_from,
)
from infra.portal.i18n import LANGUAGES, Language, localized, other_language, translator
from infra.records import RecordStoreUnavailable, open_record_store, public_record
from infra.settings import Settings
from infra.websecurity import csrf_token
from workflows.bundle import BundleWorkflow
from workflows.models import WithdrawRequest

log = structlog.get_logger("tellonce.portal")

TRACKING_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATUS_COOKIE = "tellonce_status"
STATUS_COOKIE_SECONDS = 12 * 60 * 60
STATUS_COOKIE_MAX_IDS = 10
REFRESH_SECONDS = 5
CONSENT_PAGE = "consent"
REVIEW_PAGE = "review"
FINAL_STATES = frozenset({"completed", "completed_with_exceptions", "failed", "withdrawn"})

BUNDLE_STATES: dict[str, str] = {
    "received": N_("Received"),
    "in_progress": N_("In progress"),
    "needs_attention": N_("Being reviewed by our staff"),
    "completed": N_("Completed"),
    "completed_with_exceptions": N_("Completed, with exceptions"),
    "failed": N_("Could not be completed"),
    "withdrawn": N_("Withdrawn"),
}
STEP_STATES: dict[str, str] = {
    "pending": N_("Not started yet"),
    "running": N_("Being sent"),
    "retrying": N_("Being sent again (the program's system did not answer)"),
    "waiting_reply": N_("Waiting for the program's answer"),
    "needs_attention": N_("Being reviewed by our staff"),
    "done": N_("Done"),
    "skipped": N_("Not sent"),
    "rejected": N_("Refused by the program"),
    "failed": N_("Could not be sent"),
    "compensating": N_("Being cancelled"),
    "compensated": N_("Cancelled"),
}
CONSENT_REQUIRED = N_("Choose yes or no for this program")
STATUS_NOT_FOUND = N_("No request matches this tracking number and access code. Check both and try again.")
TRACKING_ID_FORMAT = N_("Enter the tracking number exactly as it was given to you")
ACCESS_CODE_REQUIRED = N_("Enter the access code")


@dataclass
class PageResult:
    """A rendered page's template and its context, before the response is made."""

    template: str
    context: dict[str, Any]
    status: int = 200


class Portal:
    """The portal's state for one app: its templates, the draft sealer, the status-cookie key."""

    def __init__(self, settings: Settings, envs: Mapping[Language, Environment], sealer: DraftSealer) -> None:
        self.settings = settings
        self.envs = envs
        self.sealer = sealer
        self._cookie_key = hashlib.sha256(
            b"tellonce portal status cookie\x00" + settings.access_code_secret.get_secret_value().encode()
        ).digest()

    # --- rendering -----------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        lang: Language,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        lang_href: str | None = None,
    ) -> HTMLResponse:
        """A page in one language, with the request's CSP nonce and CSRF token."""
        env = self.envs[lang]
        page = env.get_template(template).render(
            **context,
            csp_nonce=getattr(request.state, "csp_nonce", ""),
            csrf_token=csrf_token(request),
            lang_href=lang_href or swap_language(request.url.path, lang),
            path=request.url.path,
        )
        return HTMLResponse(page, status_code=status)

    def both(self, message: str) -> LocalizedText:
        """A portal message (by id) in both languages, shaped like a validation message."""
        return LocalizedText(en=translator(self.envs["en"])(message), fr=translator(self.envs["fr"])(message))

    # --- status cookie -------------------------------------------------------------------------

    def granted(self, request: Request) -> list[str]:
        """The tracking ids this browser proved it holds the access code of (this session)."""
        raw = request.cookies.get(STATUS_COOKIE, "")
        body, _, mac = raw.rpartition(".")
        expected = hmac.new(self._cookie_key, body.encode(), hashlib.sha256).hexdigest()
        if not body or not hmac.compare_digest(mac, expected):
            return []
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return []
        if not isinstance(data, dict) or data.get("exp", 0) < time.time():
            return []
        ids = data.get("ids", [])
        return [i for i in ids if isinstance(i, str) and TRACKING_ID.match(i)]

    def grant(self, request: Request, response: Response, tracking_id: str) -> None:
        """Let this browser see a tracking id's status for the session (HttpOnly, SameSite=Strict, signed)."""
        ids = [tracking_id, *(i for i in self.granted(request) if i != tracking_id)][:STATUS_COOKIE_MAX_IDS]
        payload = json.dumps({"ids": ids, "exp": time.time() + STATUS_COOKIE_SECONDS}).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        mac = hmac.new(self._cookie_key, body.encode(), hashlib.sha256).hexdigest()
        response.set_cookie(
            STATUS_COOKIE,
            f"{body}.{mac}",
            httponly=True,
            samesite="strict",
            secure=self.settings.environment == "production",
            path="/",
        )


def swap_language(path: str, lang: Language) -> str:
    """The same page's path in the other language (`/en/x` ↔ `/fr/x`)."""
    other = other_language(lang)
    prefix = f"/{lang}/"
    if path.startswith(prefix):
        return f"/{other}/{path[len(prefix) :]}"
    return f"/{other}/"


def intake_of(request: Request) -> Intake:
    """The app's intake (the same one the API submits through)."""
    intake: Intake = request.app.state.intake
    return intake


def portal_of(request: Request) -> Portal:
    """The app's portal state."""
    portal: Portal = request.app.state.portal
    return portal


class PortalNotFound(Exception):  # noqa: N818 - becomes the portal's HTML 404 page
    """An address of the portal that names no page (bad language, unknown bundle)."""


def language(lang: str) -> Language:
    """The page language of a path segment.

    Raises:
        PortalNotFound: neither `en` nor `fr`.
    """
    for known in LANGUAGES:
        if lang == known:
            return known
    raise PortalNotFound(lang)


def definition_of(request: Request, bundle_id: str) -> BundleDefinition:
    """A bundle of the catalogue that has pages.

    Raises:
        PortalNotFound: an unknown bundle, or one whose schema has no pages.
    """
    catalogue = intake_of(request).catalogue
    if bundle_id not in catalogue:
        raise PortalNotFound(bundle_id)
    definition = catalogue.get(bundle_id)
    try:
        journey_for(definition)
    except KeyError:
        raise PortalNotFound(bundle_id) from None
    return definition


# --- the consent page's account of who receives what ---------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One program of a bundle, as the consent page describes it."""

    step_id: str
    program: LocalizedText
    organization: LocalizedText
    level: str
    data: tuple[str, ...]
    """Message ids (or already-localized names) of the data the program receives."""
    references: tuple[LocalizedText, ...]
    optional: bool
    without_consent: LocalizedText | None
    not_applicable: LocalizedText | None
    on_failure: str = "continues"
    """If the program cannot act: `continues` (optional), `staff` (an agent follows up) or `undone`."""


@dataclass(frozen=True)
class ConsentChoice:
    """One consent purpose and the programs it lets receive data."""

    purpose: str
    label: LocalizedText
    notice: LocalizedText
    recipients: tuple[Recipient, ...]

    @property
    def field_id(self) -> str:
        """Element id of the choice (and of its error link)."""
        return f"consents-{self.purpose}".replace("_", "-")


def data_labels(journey: Journey, paths: tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    """(owner, label) message ids of the data at these paths, e.g. ("Child", "Given names")."""
    found: list[tuple[str | None, str]] = []
    for path in paths:
        label = journey.labels.get(path)
        if label is None:
            continue
        owner = (
            OWNER_LABELS.get(path.split(".", 1)[0]) if "." in path and path not in _SECTION_PATHS else None
        )
        found.append((owner, label))
    return tuple(found)


_SECTION_PATHS = frozenset(
    {
        "child.place_of_birth",
        "birth_parent.place_of_birth",
        "other_parent.place_of_birth",
        "birth_parent.mailing_address",
    }
)


def recipients(
    definition: BundleDefinition, journey: Journey, data: Mapping[str, Any] | None
) -> tuple[list[Recipient], list[ConsentChoice]]:
    """Programs that always receive the request, and one choice per consent purpose.

    With valid answers, the plan is resolved as if every purpose were given, so the page names
    the organization that would actually receive each request (e.g. the new address's
    municipality) and says when a program does not apply to the resident at all.
    """
    planned: dict[str, Any] = {}
    if data is not None:
        plan = resolve_plan(definition, dict(data), dict.fromkeys(definition.consent_purposes, True))
        planned = {step.id: step for step in plan.steps}
    always: list[Recipient] = []
    by_purpose: dict[str, list[Recipient]] = {}
    after_pivot = steps_after_pivot(definition)
    for step in definition.steps:
        if step.optional:
            on_failure = "continues"
        elif definition.roll_back_on_failure == "always" or step.id not in after_pivot:
            on_failure = "undone"
        else:
            on_failure = "staff"
        plan_step = planned.get(step.id)
        not_applicable = plan_step.skip_message if plan_step is not None and plan_step.skip else None
        recipient = Recipient(
            step_id=step.id,
            program=plan_step.program if plan_step is not None else step.program,
            organization=plan_step.organization if plan_step is not None else step.organization,
            level=step.level.value,
            data=tuple(step.fields),
            references=tuple(definition.step(ref).program for ref in step.references),
            optional=step.optional,
            without_consent=step.without_consent,
            not_applicable=not_applicable,
            on_failure=on_failure,
        )
        if step.consent is None:
            always.append(recipient)
        else:
            by_purpose.setdefault(step.consent, []).append(recipient)
    choices = [
        ConsentChoice(purpose, spec.label, spec.notice, tuple(by_purpose.get(purpose, ())))
        for purpose, spec in definition.consent_purposes.items()
    ]
    return always, choices


# --- the journey ---------------------------------------------------------------------------------


def page_ids(journey: Journey) -> list[str]:
    """Every page of a journey in order: the form pages, then consent, then review."""
    return [*(p.id for p in journey.pages), CONSENT_PAGE, REVIEW_PAGE]


def display_value(spec: FieldSpec, value: str) -> str:
    """A value as the review page shows it: a choice's label (message id) or the value itself."""
    for choice, label in spec.choices:
        if choice == value:
            return label
    return value


class Journeys:
    """Renders and advances a bundle's form journey."""

    def __init__(self, request: Request, lang: Language, definition: BundleDefinition) -> None:
        self.request = request
        self.lang = lang
        self.definition = definition
        self.journey = journey_for(definition)
        self.portal = portal_of(request)
        self.pages = page_ids(self.journey)

    def render(
        self,
        page_id: str,
        draft: Draft,
        errors: list[FieldError] | None = None,
        *,
        lang: Language | None = None,
        status: int = 200,
        notice: str | None = None,
    ) -> HTMLResponse:
        """One page of the journey, with the draft sealed into its form."""
        lang = lang or self.lang
        errors = errors or []
        by_field, general = errors_by_field(self.journey, errors)
        consent_errors = {e.path: e for e in errors if e.path.startswith("consents.")}
        context: dict[str, Any] = {
            "definition": self.definition,
            "journey": self.journey,
            "page_id": page_id,
            "page_number": self.pages.index(page_id) + 1,
            "page_count": len(self.pages),
            "action": f"/{lang}/{self.definition.id}/form",
            # Sending posts to `…/submit`, so it (and only it) spends the web layer's submission budget.
            "submit_action": f"/{lang}/{self.definition.id}/submit",
            "sealed_draft": self.portal.sealer.seal(draft, self.definition.id),
            "values": draft.values,
            "consents": draft.consents or {},
            "field_errors": by_field,
            "consent_errors": consent_errors,
            "general_errors": [e for e in general if not e.path.startswith("consents.")],
            "error_count": len(by_field) + len(consent_errors) + len(general),
            "notice": notice,
            "can_go_back": self.pages.index(page_id) > 0,
        }
        if page_id == CONSENT_PAGE:
            always, choices = recipients(self.definition, self.journey, self._valid_data(draft))
            context.update(
                always=always, choices=choices, data_labels=lambda r: data_labels(self.journey, r.data)
            )
            template = "consent.html"
        elif page_id == REVIEW_PAGE:
            _, choices = recipients(self.definition, self.journey, None)
            context.update(choices=choices, display_value=display_value)
            template = "review.html"
        else:
            context["page"] = self.journey.page(page_id)
            template = "step.html"
        # The form's own address in the other language: the toggle there POSTs the draft (portal.js).
        lang_href = f"/{other_language(lang)}/{self.definition.id}/"
        return self.portal.render(self.request, lang, template, context, status=status, lang_href=lang_href)

    def _valid_data(self, draft: Draft) -> dict[str, Any] | None:
        raw = submission_from(self.journey, draft.values, {}, language=self.lang)
        try:
            return validate_submission(self.definition, raw).data
        except SubmissionInvalid:
            return None

    def check(self, draft: Draft, page_id: str) -> list[FieldError]:
        """The errors a page shows: its own fields' (form pages), choices and data rules (consent)."""
        if page_id == CONSENT_PAGE:
            missing = [
                FieldError(
                    path=f"consents.{purpose}",
                    code="consent_required",
                    message=self.portal.both(CONSENT_REQUIRED),
                )
                for purpose in self.definition.consent_purposes
                if draft.consents is None or purpose not in draft.consents
            ]
            return missing or self.full_errors(draft)
        index = self.pages.index(page_id)
        raw = submission_from(self.journey, draft.values, {}, language=self.lang, upto=index)
        try:
            validate_submission(self.definition, raw)
        except SubmissionInvalid as exc:
            page = self.journey.page(page_id)
            return [e for e in exc.errors if (spec := self.journey.field_for(e.path)) and spec in page.fields]
        return []

    def full_errors(self, draft: Draft) -> list[FieldError]:
        """Every error of the whole submission, with its consents."""
        try:
            validate_submission(self.definition, self.submission(draft))
        except SubmissionInvalid as exc:
            return exc.errors
        return []

    def submission(self, draft: Draft) -> dict[str, Any]:
        """The JSON the API would receive for this draft."""
        return submission_from(self.journey, draft.values, draft.consents or {}, language=self.lang)

    def first_page_with(self, errors: list[FieldError]) -> str:
        """The page that can fix the first of these errors."""
        for error in errors:
            if error.path.startswith("consents."):
                return CONSENT_PAGE
            spec = self.journey.field_for(error.path)
            if spec is not None:
                return self.journey.page_of(spec).id
        return REVIEW_PAGE


def read_answers(journey: Journey, page: Page, form: FormData) -> dict[str, str]:
    """The values a form page posted, for its own fields only (anything else is ignored)."""
    answers: dict[str, str] = {}
    for spec in page.fields:
        value = form.get(spec.path)
        answers[spec.path] = value.strip() if isinstance(value, str) else ""
    return answers


def read_consents(
    definition: BundleDefinition, form: FormData, known: Mapping[str, bool] | None
) -> dict[str, bool]:
    """The consent choices posted (`yes`/`no` per purpose); unanswered ones are left out."""
    consents = dict(known or {})
    for purpose in definition.consent_purposes:
        value = form.get(f"consents.{purpose}")
        if value in ("yes", "no"):
            consents[purpose] = value == "yes"
    return consents


def router() -> APIRouter:  # noqa: PLR0915 - one place lists every page of the portal
    """Every page of the portal."""
    pages = APIRouter(include_in_schema=False)

    @pages.get("/", response_class=HTMLResponse)
    async def splash(request: Request) -> HTMLResponse:
        """The bilingual splash page: choose English or French."""
        return portal_of(request).render(
            request, "en", "splash.html", {"fr_env": portal_of(request).envs["fr"]}
        )

    # Status routes come first: `/{lang}/status/...` must not be read as a bundle's address.
    @pages.get("/{lang}/status", response_class=HTMLResponse)
    async def status_access(request: Request, lang: str, tracking_id: str = "") -> HTMLResponse:
        """The "check your request" form: tracking number and access code."""
        page_lang = language(lang)
        prefill = tracking_id if TRACKING_ID.match(tracking_id) else ""
        return portal_of(request).render(request, page_lang, "status_access.html", {"tracking_id": prefill})

    @pages.post("/{lang}/status", response_class=HTMLResponse)
    async def status_check(request: Request, lang: str) -> Response:
        """Check a tracking number and access code; on success the browser may see that status."""
        page_lang = language(lang)
        form = await request.form()
        tracking_id = str(form.get("tracking_id", "")).strip().lower()
        code = str(form.get("access_code", "")).strip()
        errors: dict[str, str] = {}
        if not TRACKING_ID.match(tracking_id):
            errors["tracking-id"] = TRACKING_ID_FORMAT
        if not code:
            errors["access-code"] = ACCESS_CODE_REQUIRED
        if not errors and not intake_of(request).check_access(tracking_id, code):
            errors["tracking-id"] = STATUS_NOT_FOUND
        portal = portal_of(request)
        if errors:
            shown = tracking_id if TRACKING_ID.match(tracking_id) else ""
            return portal.render(
                request, page_lang, "status_access.html", {"tracking_id": shown, "errors": errors}, status=400
            )
        response = RedirectResponse(f"/{page_lang}/status/{tracking_id}", status_code=303)
        portal.grant(request, response, tracking_id)
        return response

    @pages.get("/{lang}/status/{tracking_id}", response_class=HTMLResponse)
    async def status_page(request: Request, lang: str, tracking_id: str) -> Response:
        """A request's progress at each program (for a browser that proved the access code)."""
        page_lang = language(lang)
        if tracking_id not in portal_of(request).granted(request):
            return RedirectResponse(f"/{page_lang}/status?tracking_id={tracking_id}", status_code=303)
        view = await status_view(request, tracking_id, page_lang)
        if view is None:
            return unavailable(request, page_lang)
        return portal_of(request).render(
            request, page_lang, "status.html", {"status": view, "refresh_seconds": REFRESH_SECONDS}
        )

    @pages.get("/{lang}/status/{tracking_id}/live")
    async def status_live(request: Request, lang: str, tracking_id: str) -> JSONResponse:
        """The status page's data, for its script to update the page without a reload."""
        page_lang = language(lang)
        if tracking_id not in portal_of(request).granted(request):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        view = await status_view(request, tracking_id, page_lang)
        if view is None:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse(view, headers={"Cache-Control": "no-store"})

    @pages.get("/{lang}/status/{tracking_id}/withdraw", response_class=HTMLResponse)
    async def withdraw_confirm(request: Request, lang: str, tracking_id: str) -> Response:
        """Ask the resident to confirm the withdrawal."""
        page_lang = language(lang)
        if tracking_id not in portal_of(request).granted(request):
            return RedirectResponse(f"/{page_lang}/status?tracking_id={tracking_id}", status_code=303)
        return portal_of(request).render(request, page_lang, "withdraw.html", {"tracking_id": tracking_id})

    @pages.post("/{lang}/status/{tracking_id}/withdraw", response_class=HTMLResponse)
    async def withdraw(request: Request, lang: str, tracking_id: str) -> Response:
        """Withdraw the request, through the same workflow update as the API."""
        page_lang = language(lang)
        if tracking_id not in portal_of(request).granted(request):
            return RedirectResponse(f"/{page_lang}/status?tracking_id={tracking_id}", status_code=303)
        handle = intake_of(request).handle(tracking_id)
        outcome = "withdrawn"
        try:
            await handle.execute_update(BundleWorkflow.withdraw, WithdrawRequest(), id="withdraw")
        except WorkflowUpdateFailedError:
            outcome = "refused"
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                log.warning("portal.withdraw_unavailable", bundle=tracking_id, rpc_status=exc.status.name)
                return unavailable(request, page_lang)
            outcome = "refused"
        log.info("portal.withdraw", bundle=tracking_id, outcome=outcome)
        return portal_of(request).render(
            request,
            page_lang,
            "withdrawn.html",
            {"tracking_id": tracking_id, "outcome": outcome},
            status=200 if outcome == "withdrawn" else 409,
        )

    @pages.get("/{lang}/", response_class=HTMLResponse)
    async def home(request: Request, lang: str) -> HTMLResponse:
        """Every service the resident can use."""
        page_lang = language(lang)
        bundles = [d for d in intake_of(request).catalogue.all() if _has_pages(d)]
        return portal_of(request).render(request, page_lang, "home.html", {"bundles": bundles})

    @pages.get("/{lang}/{bundle_id}/", response_class=HTMLResponse)
    async def start(request: Request, lang: str, bundle_id: str) -> HTMLResponse:
        """A bundle's start page: what happens, who receives what, how long, what you need."""
        page_lang = language(lang)
        definition = definition_of(request, bundle_id)
        journey = journey_for(definition)
        always, choices = recipients(definition, journey, None)
        return portal_of(request).render(
            request,
            page_lang,
            "start.html",
            {
                "definition": definition,
                "journey": journey,
                "always": always,
                "choices": choices,
                "data_labels": lambda r: data_labels(journey, r.data),
            },
        )

    @pages.get("/{lang}/{bundle_id}/form", response_class=HTMLResponse)
    async def form_start(request: Request, lang: str, bundle_id: str) -> HTMLResponse:
        """The first page of the form, with a new journey."""
        journeys = Journeys(request, language(lang), definition_of(request, bundle_id))
        return journeys.render(journeys.pages[0], Draft())

    @pages.post("/{lang}/{bundle_id}/form", response_class=HTMLResponse)
    @pages.post("/{lang}/{bundle_id}/submit", response_class=HTMLResponse)
    async def form_step(request: Request, lang: str, bundle_id: str) -> Response:
        """Every move in the journey: continue, back, change, switch language, submit."""
        page_lang = language(lang)
        journeys = Journeys(request, page_lang, definition_of(request, bundle_id))
        form = await request.form()
        try:
            draft = portal_of(request).sealer.open(_text(form, "draft"), bundle_id)
        except DraftInvalid:
            return portal_of(request).render(
                request, page_lang, "expired.html", {"definition": journeys.definition}, status=400
            )
        page_id = _text(form, "page")
        if page_id not in journeys.pages:
            page_id = journeys.pages[0]
        return await advance(journeys, draft, page_id, form)

    return pages


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _has_pages(definition: BundleDefinition) -> bool:
    try:
        journey_for(definition)
    except KeyError:
        return False
    return True


async def advance(journeys: Journeys, draft: Draft, page_id: str, form: FormData) -> Response:  # noqa: PLR0911 - one answer per move
    """Apply one POST of the journey to the draft and answer with the page that follows."""
    pages = journeys.pages
    index = pages.index(page_id)
    if page_id == CONSENT_PAGE:
        draft.consents = read_consents(journeys.definition, form, draft.consents)
    elif page_id != REVIEW_PAGE:
        draft.values.update(read_answers(journeys.journey, journeys.journey.page(page_id), form))
    action = _text(form, "action") or "continue"
    goto = _text(form, "goto")
    if action == "language":
        return journeys.render(page_id, draft, lang=other_language(journeys.lang))
    if goto in pages and pages.index(goto) <= draft.reached + 1:
        return journeys.render(goto, draft)
    if action == "back":
        return journeys.render(pages[max(index - 1, 0)], draft)
    if index > draft.reached + 1:
        # A page posted out of order (an old tab, a forged page id): the first page not done yet.
        return journeys.render(pages[draft.reached + 1], draft)
    if page_id == REVIEW_PAGE:
        return await submit(journeys, draft)
    errors = journeys.check(draft, page_id)
    if errors:
        target = page_id if page_id != CONSENT_PAGE else journeys.first_page_with(errors)
        shown = errors if target == page_id else [e for e in errors if _on_page(journeys, e, target)]
        return journeys.render(target, draft, shown, status=422)
    draft.reached = max(draft.reached, index)
    # Back from a change on the review page: straight to the review again.
    following = REVIEW_PAGE if draft.reached >= pages.index(CONSENT_PAGE) else pages[index + 1]
    return journeys.render(following, draft)


def _on_page(journeys: Journeys, error: FieldError, page_id: str) -> bool:
    if page_id in (CONSENT_PAGE, REVIEW_PAGE):
        return True
    spec = journeys.journey.field_for(error.path)
    return spec is not None and journeys.journey.page_of(spec).id == page_id


async def submit(journeys: Journeys, draft: Draft) -> Response:
    """Submit the journey through the intake; the draft's idempotency key makes a resend the same bundle."""
    request = journeys.request
    intake = intake_of(request)
    try:
        accepted = await intake.submit(
            journeys.definition.id,
            journeys.submission(draft),
            channel="api",
            idempotency_key=draft.idempotency_key(),
        )
    except SubmissionInvalid as exc:
        target = journeys.first_page_with(exc.errors)
        shown = [e for e in exc.errors if _on_page(journeys, e, target)]
        return journeys.render(target, draft, shown, status=422)
    except IdempotencyConflict:
        # This journey was already sent with other answers: a second bundle would tell every
        # program twice, so the resident withdraws the first or starts a new form.
        log.info("portal.already_sent", bundle_id=journeys.definition.id)
        return journeys.render(REVIEW_PAGE, draft, status=409, notice="already_sent")
    except (RPCError, RecordStoreUnavailable) as exc:
        log.warning("portal.submit_unavailable", bundle_id=journeys.definition.id, error=type(exc).__name__)
        return journeys.render(REVIEW_PAGE, draft, status=503, notice="unavailable")
    log.info("portal.submitted", bundle=accepted.tracking_id, bundle_id=journeys.definition.id)
    portal = portal_of(request)
    response = portal.render(
        request,
        journeys.lang,
        "confirmation.html",
        {
            "definition": journeys.definition,
            "tracking_id": accepted.tracking_id,
            "access_code": accepted.access_code,
            "notices": accepted.notices,
        },
        lang_href=f"/{other_language(journeys.lang)}/status/{accepted.tracking_id}",
    )
    portal.grant(request, response, accepted.tracking_id)
    return response


async def status_view(request: Request, tracking_id: str, lang: Language) -> dict[str, Any] | None:
    """A request's status as the page shows it (plain-language states), or None when out of reach."""
    intake = intake_of(request)
    env = portal_of(request).envs[lang]
    gettext = translator(env)
    try:
        status = await intake.handle(tracking_id).query(BundleWorkflow.status)
        data: dict[str, Any] = {
            "bundle_id": status.bundle_id,
            "state": status.state,
            "removed": False,
            "steps": [s.model_dump(mode="json") for s in status.steps],
        }
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            log.warning("portal.status_unavailable", bundle=tracking_id, rpc_status=exc.status.name)
            return None
        try:
            record = await open_record_store(intake.settings).get(tracking_id)
        except RecordStoreUnavailable:
            return None
        if record is None:
            return None
        public = public_record(record)
        data = {
            "bundle_id": public["bundle_id"],
            "state": public["state"],
            "removed": True,
            "steps": [
                {**s, "program": s["program"].model_dump(), "organization": s["organization"].model_dump()}
                for s in public["steps"]
            ],
        }
    catalogue = intake.catalogue
    title = catalogue.get(data["bundle_id"]).title if data["bundle_id"] in catalogue else None
    return {
        "tracking_id": tracking_id,
        "title": localized(title, lang) if title else "",
        "state": str(data["state"]),
        "state_label": gettext(BUNDLE_STATES[str(data["state"])]),
        "final": str(data["state"]) in FINAL_STATES,
        "removed": data["removed"],
        "steps": [
            {
                "id": step["id"],
                "program": localized(step["program"], lang),
                "organization": localized(step["organization"], lang),
                "state": str(step["state"]),
                "state_label": gettext(STEP_STATES[str(step["state"])]),
                "message": localized(step.get("message"), lang),
                "reference": step.get("reference") or "",
                "details": _details(localized(step.get("message"), lang), step.get("reference"), gettext),
            }
            for step in data["steps"]
        ],
    }


def _details(message: str, reference: str | None, gettext: Callable[[str], str]) -> str:
    if not reference:
        return message
    label = gettext("Reference:")
    return f"{message} ({label} {reference})".strip()


def unavailable(request: Request, lang: Language) -> HTMLResponse:
    """The page shown when Temporal (or the records) cannot be reached: try again shortly."""
    return portal_of(request).render(request, lang, "error.html", {"kind": "unavailable"}, status=503)
