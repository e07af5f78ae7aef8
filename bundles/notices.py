"""Hospital and midwife birth notices: the feed's model, the facts a notice and a parent's statement
share, the keyed digest that lets them find each other, and the messages of the matcher workflow.

Pure: no I/O and no clock, so `workflows.birth_notice` imports it directly. Ontario registers a
birth only when the Notice of Live Birth (hospital or midwife) matches the parents' Statement of
Live Birth; see docs/birth-notices.md for how tellonce pairs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from bundles.models import LocalizedText
from bundles.validators import (
    LongText,
    OntarioHealthNumber,
    normalize_ontario_health_number,
    safe_path,
)
from workflows.names import BIRTH_NOTICE_WORKFLOW_PREFIX

NOTICE_SCHEMA = "tellonce.birth-notice/v1"
"""The `schema` every notice on `vital-events.birth-notices` carries."""

MAX_NOTICE_BYTES = 64 * 1024
"""A notice is a few hundred bytes; anything far larger is not one, and is refused unread."""

TIME_OF_BIRTH_TOLERANCE = timedelta(minutes=15)
"""Times of birth this close count as the same: the hospital records the minute, a parent often
rounds it or remembers it a little off. Twins born closer together are told apart by birth order."""

# Signal and activity names of the matcher (`workflows.birth_notice.BirthNoticeMatchWorkflow`).
OFFER_BIRTH_STATEMENT = "offer_birth_statement"
"""Activity the bundle's registration step calls to hand its statement to the matcher."""
STATEMENT_UNREADABLE = "StatementUnreadable"
"""`ApplicationError.type` (non-retryable) of an offer whose payload lacks what matching needs."""
REPORT_UNMATCHED_NOTICE = "report_unmatched_notice"
"""Activity the matcher calls to tell operations about a notice that needs a person."""
NOTICE_SIGNAL = "notice"
STATEMENT_SIGNAL = "statement"
WITHDRAW_STATEMENT_SIGNAL = "withdraw_statement"
STATE_QUERY = "state"

NOTICE_ID_PATTERN = r"^[A-Z0-9][A-Z0-9-]{3,39}$"
"""A notice number as hospital systems issue it (e.g. ``NLB-2026-0001234``): upper-case letters,
digits and hyphens only, so it can never carry a name, and is safe in logs and operator views."""
FACILITY_ID_PATTERN = r"^[A-Z0-9][A-Z0-9-]{1,19}$"
"""A facility's or midwifery practice's registry number (e.g. Ontario's master number ``3910``)."""

NoticeId = Annotated[str, StringConstraints(pattern=NOTICE_ID_PATTERN)]
FacilityId = Annotated[str, StringConstraints(pattern=FACILITY_ID_PATTERN)]
Sex = Literal["F", "M", "X"]


class _Part(BaseModel):
    # Frozen, closed to unknown keys, and never echoing input in error text (it may be a health number).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


# ---------------------------------------------------------------------- the feed


class NoticeFacility(_Part):
    """Who sends the notice: a hospital, a birth centre, or a midwifery practice.

    A midwifery practice's name is not a place of birth (its midwives attend births at home and in
    hospitals), so it is never compared with the place the parents name.
    """

    kind: Literal["hospital", "birth_centre", "midwifery_practice"] = "hospital"
    id: FacilityId
    name: LongText


class NoticeChild(_Part):
    """The newborn as the hospital recorded it; no name, which a notice need not carry."""

    date_of_birth: date
    time_of_birth: time | None = None
    sex: Sex
    plurality: int = Field(default=1, ge=1, le=8, description="Children born of this pregnancy.")
    birth_order: int | None = Field(default=None, ge=1, le=8, description="Order in a multiple birth.")

    @model_validator(mode="after")
    def _birth_order_fits_plurality(self) -> NoticeChild:
        if self.plurality > 1 and self.birth_order is None:
            raise ValueError("A multiple birth needs the child's birth order")
        if self.birth_order is not None and self.birth_order > self.plurality:
            raise ValueError("The birth order is greater than the number of children born")
        return self


class NoticeBirthParent(_Part):
    """The parent who gave birth, as far as matching needs."""

    health_number: OntarioHealthNumber | None = Field(
        default=None, description="Ontario health number; a newcomer may not have one yet."
    )
    date_of_birth: date


class BirthNotice(_Part):
    """One Notice of Live Birth (`tellonce.birth-notice/v1`) from a hospital's or midwife's system.

    Only what matching needs: a notice with extra fields is refused rather than silently stored.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )

    # `schema` would shadow a (deprecated) BaseModel method, hence the alias.
    schema_: Literal["tellonce.birth-notice/v1"] = Field(alias="schema")
    notice_id: NoticeId = Field(description="The hospital's notice number; not personal data.")
    facility: NoticeFacility
    issued_at: AwareDatetime
    child: NoticeChild
    birth_parent: NoticeBirthParent


class Reason(BaseModel):
    """Why a notice was refused: a stable code, where, and a message that never repeats a value."""

    model_config = ConfigDict(frozen=True)

    code: str
    path: str
    message: str


class NoticeInvalid(ValueError):  # noqa: N818 - the name others code against
    """A notice that cannot be read; `reasons` says why, for the dead-letter queue."""

    def __init__(self, reasons: list[Reason]) -> None:
        self.reasons = reasons
        # The message lists codes and paths only: it may end up in a log or a DLQ header.
        super().__init__("; ".join(f"{r.code} at {r.path or '<root>'}" for r in reasons))


def parse_notice(raw: bytes) -> BirthNotice:
    """Read one notice from the bytes of a Kafka message.

    Args:
        raw: The message value: UTF-8 JSON with ``"schema": "tellonce.birth-notice/v1"``.

    Returns:
        The validated notice.

    Raises:
        NoticeInvalid: With every reason found (``too_large``, ``encoding``, ``json``,
            ``not_an_object``, ``schema``, or pydantic's error type per field); no reason repeats
            a value from the notice.
    """
    if len(raw) > MAX_NOTICE_BYTES:
        raise NoticeInvalid(
            [Reason(code="too_large", path="", message=f"A notice is at most {MAX_NOTICE_BYTES} bytes.")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NoticeInvalid(
            [Reason(code="encoding", path="", message="The notice is not valid UTF-8.")]
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # Position only: `exc.msg` is a fixed phrase, `exc.doc` (never used) holds the notice.
        message = f"The notice is not valid JSON ({exc.msg}, line {exc.lineno}, column {exc.colno})."
        raise NoticeInvalid([Reason(code="json", path="", message=message)]) from None
    except RecursionError:
        raise NoticeInvalid(
            [Reason(code="json", path="", message="The notice is nested too deeply.")]
        ) from None
    if not isinstance(data, dict):
        raise NoticeInvalid([Reason(code="not_an_object", path="", message="A notice is a JSON object.")])
    if data.get("schema") != NOTICE_SCHEMA:
        # Checked first and alone: a notice of another schema would otherwise list every field.
        raise NoticeInvalid(
            [Reason(code="schema", path="schema", message=f"The schema must be {NOTICE_SCHEMA}.")]
        )
    try:
        return BirthNotice.model_validate(data)
    except ValidationError as exc:
        reasons = [
            Reason(code=err["type"], path=safe_path(err["loc"]), message=err["msg"])
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise NoticeInvalid(reasons) from None


# ---------------------------------------------------------------------- facts both sides carry


class BirthFacts(BaseModel):
    """The facts a notice and a statement can be compared on; `None` when a side does not say.

    Holds a health number and dates of birth: keep it in workflow payloads (encrypted by the
    codec), never in logs, ids, search attributes or failure messages.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    child_date_of_birth: date
    child_time_of_birth: time | None = None
    child_sex: Sex | None = None
    plurality: int | None = None
    birth_order: int | None = None
    birth_parent_date_of_birth: date | None = None
    birth_parent_health_number: str | None = Field(
        default=None, description="The 10 digits, without version code or separators."
    )
    facility_id: str | None = None
    facility_name: str | None = Field(
        default=None, description="Name of the place of birth, as written (normalised when compared)."
    )


def _health_digits(value: str | None) -> str | None:
    # The version code changes when a card is replaced; the 10 digits identify the person.
    return normalize_ontario_health_number(value)[:10] if value else None


def facts_from_notice(notice: BirthNotice) -> BirthFacts:
    """The comparable facts of a notice."""
    return BirthFacts(
        child_date_of_birth=notice.child.date_of_birth,
        child_time_of_birth=notice.child.time_of_birth,
        child_sex=notice.child.sex,
        plurality=notice.child.plurality,
        birth_order=notice.child.birth_order,
        birth_parent_date_of_birth=notice.birth_parent.date_of_birth,
        birth_parent_health_number=_health_digits(notice.birth_parent.health_number),
        facility_id=notice.facility.id,
        facility_name=notice.facility.name if notice.facility.kind != "midwifery_practice" else None,
    )


class _StatementPlace(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)
    facility_name: str | None = None


class _StatementChild(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)
    date_of_birth: date
    time_of_birth: time | None = None
    sex: Sex | None = None
    plurality: int = 1
    birth_order: int | None = None
    place_of_birth: _StatementPlace | None = None


class _StatementParent(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)
    health_number: str | None = None
    date_of_birth: date | None = None


class _Statement(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)
    child: _StatementChild
    birth_parent: _StatementParent | None = None


class StatementInvalidError(ValueError):
    """A registration payload lacking what matching needs (a bug upstream: it was validated)."""


def facts_from_statement(payload: dict[str, Any]) -> BirthFacts:
    """The comparable facts of a Statement of Live Birth.

    Args:
        payload: The `birth_registration` step's projected payload: the submission's nested
            fields (``child.sex``, ``birth_parent.health_number``, ...), JSON-shaped.

    Returns:
        Its facts; the health number reduced to its 10 digits.

    Raises:
        StatementInvalidError: The payload has no child's birth date or a malformed fact; the
            message names the fields, never their values.
    """
    try:
        statement = _Statement.model_validate(payload)
        digits = _health_digits(statement.birth_parent.health_number if statement.birth_parent else None)
    except ValidationError as exc:
        fields = sorted({safe_path(err["loc"]) for err in exc.errors(include_input=False)})
        raise StatementInvalidError(f"statement facts unreadable: {', '.join(fields)}") from None
    except ValueError:
        # normalize_ontario_health_number raises a pydantic custom error, a ValueError.
        raise StatementInvalidError("statement facts unreadable: birth_parent.health_number") from None
    child = statement.child
    return BirthFacts(
        child_date_of_birth=child.date_of_birth,
        child_time_of_birth=child.time_of_birth,
        child_sex=child.sex,
        plurality=child.plurality,
        birth_order=child.birth_order,
        birth_parent_date_of_birth=statement.birth_parent.date_of_birth if statement.birth_parent else None,
        birth_parent_health_number=digits,
        facility_name=child.place_of_birth.facility_name if child.place_of_birth else None,
    )


# ---------------------------------------------------------------------- keys


def _digest(secret: bytes, purpose: str, *parts: str) -> str:
    # The purpose tag keeps these digests apart from anything else keyed with the same secret.
    message = "\x1f".join((purpose, *parts)).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def correlation_key(facts: BirthFacts, secret: bytes) -> str | None:
    """The keyed digest a notice and a statement of the same birth share.

    HMAC-SHA256 (64 hex digits) of the birth parent's health number (its 10 digits: dashes,
    spaces and the version code do not count) and the child's birth date. Without the secret
    nobody can tell whose birth a digest stands for.

    Args:
        facts: Facts of a notice or a statement.
        secret: `Settings.correlation_secret`, as bytes.

    Returns:
        The key, or None when there is no health number to key on.
    """
    if not facts.birth_parent_health_number:
        return None
    return _digest(
        secret,
        "tellonce.birth-notice.v1",
        facts.birth_parent_health_number,
        facts.child_date_of_birth.isoformat(),
    )


def unkeyed_notice_key(facts: BirthFacts, secret: bytes) -> str:
    """The key of a notice without a health number, which no statement can compute.

    A digest of facility id, child's and birth parent's birth dates, prefixed ``nohn-``: it groups
    redeliveries and corrections of that notice in one matcher, which reports it to operations at
    once for a person to pair with its bundle.
    """
    return "nohn-" + _digest(
        secret,
        "tellonce.birth-notice.no-health-number.v1",
        facts.facility_id or "",
        facts.child_date_of_birth.isoformat(),
        facts.birth_parent_date_of_birth.isoformat() if facts.birth_parent_date_of_birth else "",
    )


def match_workflow_id(key: str) -> str:
    """Workflow id of the matcher for a key."""
    return BIRTH_NOTICE_WORKFLOW_PREFIX + key


# ---------------------------------------------------------------------- differences

FACT_LABELS: dict[str, LocalizedText] = {
    "child.date_of_birth": LocalizedText(en="Child's date of birth", fr="Date de naissance de l'enfant"),
    "child.time_of_birth": LocalizedText(en="Child's time of birth", fr="Heure de naissance de l'enfant"),
    "child.sex": LocalizedText(en="Child's sex", fr="Sexe de l'enfant"),
    "child.plurality": LocalizedText(
        en="Number of children born of this pregnancy", fr="Nombre d'enfants nés de cette grossesse"
    ),
    "child.birth_order": LocalizedText(
        en="Child's order in a multiple birth", fr="Rang de l'enfant dans une naissance multiple"
    ),
    "child.place_of_birth.facility_name": LocalizedText(
        en="Hospital or birth centre", fr="Hôpital ou maison de naissance"
    ),
    "birth_parent.date_of_birth": LocalizedText(
        en="Birth parent's date of birth", fr="Date de naissance du parent biologique"
    ),
    "birth_parent.health_number": LocalizedText(
        en="Birth parent's health number", fr="Numéro de carte Santé du parent biologique"
    ),
}
"""Bilingual name of each fact `differences` can report, for residents' and operators' messages."""

# Words that name the kind of place rather than which one ("Hôpital général de Bytown" is
# "Bytown General Hospital"), and common abbreviations spelled out.
_FACILITY_NOISE = frozenset(
    {
        "hospital", "hopital", "hosp", "hospitalier", "hospitaliere", "general", "generale", "gen",
        "centre", "center", "ctr", "health", "sante", "sciences", "regional", "regionale",
        "site", "campus", "the", "of", "and", "et", "de", "du", "des", "la", "le", "les", "l",
        "d", "s", "inc", "corporation", "corp",
    }
)  # fmt: skip
_FACILITY_ABBREVIATIONS = {"st": "saint", "ste": "sainte", "mt": "mount"}


def facility_tokens(name: str) -> frozenset[str]:
    """The words that tell one facility from another: accents, case, punctuation and noise removed."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    words = re.findall(r"[a-z0-9]+", plain)
    return frozenset(_FACILITY_ABBREVIATIONS.get(w, w) for w in words) - _FACILITY_NOISE


def same_facility(first: str, second: str) -> bool | None:
    """Whether two facility names name the same place; None when either says nothing distinctive.

    One name's words may be a part of the other's ("Ottawa Hospital" and "The Ottawa Hospital,
    Civic Campus"): parents rarely write a campus, and the health number already ties the two.
    """
    a, b = facility_tokens(first), facility_tokens(second)
    if not a or not b:
        return None
    return a <= b or b <= a


def _minutes(value: time) -> int:
    return value.hour * 60 + value.minute


def time_gap(first: time | None, second: time | None) -> int | None:
    """Minutes between two times of birth on the same day, or None when either is unknown."""
    if first is None or second is None:
        return None
    return abs(_minutes(first) - _minutes(second))


def differences(notice_facts: BirthFacts, statement_facts: BirthFacts) -> list[str]:
    """Names of the facts on which a notice and a statement disagree (never their values).

    A fact counts only when both sides state it. Times of birth within
    `TIME_OF_BIRTH_TOLERANCE` agree; facility names are compared by `same_facility`.

    Returns:
        Keys of `FACT_LABELS`, in its order; empty when they match.
    """
    n, s = notice_facts, statement_facts
    found: list[str] = []

    def differ(name: str, left: object, right: object) -> None:
        if left is not None and right is not None and left != right:
            found.append(name)

    differ("child.date_of_birth", n.child_date_of_birth, s.child_date_of_birth)
    gap = time_gap(n.child_time_of_birth, s.child_time_of_birth)
    if gap is not None and gap > TIME_OF_BIRTH_TOLERANCE.total_seconds() // 60:
        found.append("child.time_of_birth")
    differ("child.sex", n.child_sex, s.child_sex)
    differ("child.plurality", n.plurality, s.plurality)
    differ("child.birth_order", n.birth_order, s.birth_order)
    if n.facility_name and s.facility_name and same_facility(n.facility_name, s.facility_name) is False:
        found.append("child.place_of_birth.facility_name")
    differ("birth_parent.date_of_birth", n.birth_parent_date_of_birth, s.birth_parent_date_of_birth)
    differ("birth_parent.health_number", n.birth_parent_health_number, s.birth_parent_health_number)
    return found


# ---------------------------------------------------------------------- matcher messages


class _Message(BaseModel):
    # Unknown keys ignored so old and new workers interoperate (like workflows.models.Model).
    model_config = ConfigDict(extra="ignore")


class BirthNoticeMatchInput(_Message):
    """What starts a matcher; whichever of notice and statement comes first starts it."""

    key: str = Field(description="The correlation key (not personal: a keyed digest).")
    jurisdiction: str = "CA-ON"
    notice_wait: timedelta = Field(
        default=timedelta(days=30),
        description="How long a notice waits for its statement before operations are told.",
    )
    final_limit: timedelta = Field(
        default=timedelta(days=365),
        description="How long the matcher waits for a late bundle at all (online registration limit).",
    )
    linger: timedelta = Field(
        default=timedelta(days=7),
        description=(
            "How long a matcher with nothing left open stays, to recognise redeliveries and a "
            "hospital's resent notice instead of reporting them as unmatched a month later."
        ),
    )
    operator_only: bool = Field(
        default=False,
        description="A notice without a health number: report at once; an operator pairs it.",
    )
    upsert_search_attributes: bool = Field(
        default=True,
        description="Off only on the time-skipping test server, which cannot register them.",
    )


class NoticeArrival(_Message):
    """A notice delivered to its matcher (signal `notice`)."""

    notice: BirthNotice
    received_at: datetime


class StatementArrival(_Message):
    """A bundle's statement offered to its matcher (signal `statement`); facts only, no names."""

    bundle_workflow_id: str
    step_id: str
    facts: BirthFacts
    offered_at: datetime
    wait: timedelta = Field(description="How long the bundle listens for the result.")


class StatementWithdrawal(_Message):
    """The bundle withdrew, was amended or stopped waiting (signal `withdraw_statement`)."""

    bundle_workflow_id: str
    step_id: str


class StatementOfferCall(_Message):
    """Input of the `offer_birth_statement` activity."""

    bundle_workflow_id: str
    step_id: str
    payload: dict[str, Any]
    wait: timedelta


class OfferResult(_Message):
    """Where the statement went: the matcher's id, or None and why (``no_health_number``)."""

    match_workflow_id: str | None
    reason: str | None = None


ReportReason = Literal["unmatched", "no_health_number", "corrected_after_match"]


class UnmatchedNoticeReport(_Message):
    """Input of `report_unmatched_notice`: ids and times only."""

    match_workflow_id: str
    notice_id: str
    facility_id: str
    reason: ReportReason
    since: datetime


class NoticeView(_Message):
    """An open notice, as the `state` query shows it."""

    notice_id: str
    facility_id: str
    received_at: datetime
    report_at: datetime
    reported: bool = False


class StatementView(_Message):
    """An open statement, as the `state` query shows it."""

    bundle_workflow_id: str
    step_id: str
    offered_at: datetime
    expires_at: datetime
    conflict_with: str | None = Field(default=None, description="Notice id of the last conflict reported.")
    differences: list[str] = Field(default_factory=list)


class MatchedPair(_Message):
    """A notice paired with a statement."""

    notice_id: str
    bundle_workflow_id: str
    step_id: str
    at: datetime


class MatchState(_Message):
    """Result of the `state` query and of the matcher itself."""

    state: Literal["in_progress", "needs_attention", "completed", "completed_with_exceptions"]
    operator_only: bool = False
    notices_seen: int = 0
    open_notices: list[NoticeView] = Field(default_factory=list)
    open_statements: list[StatementView] = Field(default_factory=list)
    matched: list[MatchedPair] = Field(default_factory=list)
    final_at: datetime | None = None
