"""Redaction of personal data from log events: the last structlog processor before rendering.

Two nets catch what a log line must never carry. Fields whose *name* says they hold personal
data (`PERSONAL_FIELDS`, at any depth of the event) lose their value whatever it looks like.
Every string that remains (event text, rendered tracebacks, exception messages, reprs) is
searched for identifiers by their *shape*: Luhn-valid SINs and Ontario health numbers, bank
account triples, Canadian postal codes, email addresses, dates next to a birth word, and
``key=value`` / ``"key": value`` / ``<key>value</key>`` pairs whose key is a personal field.

What is found becomes ``[redacted:<kind>]``, so an operator sees that something was there and
what it was, never its value. The processor never raises: if redaction itself fails, the whole
event is replaced by a marker that carries nothing from it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel
from stdnum import luhn
from structlog.processors import format_exc_info
from structlog.typing import EventDict, WrappedLogger

# --- Personal field names ----------------------------------------------------------------

PERSONAL_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "sin": ("sin", "social_insurance_number", "numero_assurance_sociale", "nas", "ssn"),
    "health_number": (
        "health_number",
        "health_card",
        "health_card_number",
        "health_insurance_number",
        "ohip",
        "ohip_number",
        "hcn",
        "phn",
    ),
    "bank_account": (
        "bank_account",
        "bank_account_number",
        "account_number",
        "transit_number",
        "institution_number",
        "branch_number",
        "routing_number",
        "iban",
    ),
    "date_of_birth": (
        "date_of_birth",
        "birth_date",
        "birthdate",
        "birthday",
        "dob",
        "time_of_birth",
        "birth_time",
        "date_naissance",
        "date_de_naissance",
    ),
    "place_of_birth": (
        "place_of_birth",
        "birth_place",
        "birthplace",
        "birth_city",
        "birth_municipality",
        "lieu_de_naissance",
    ),
    "name": (
        "name",
        "nom",
        "first_name",
        "last_name",
        "given_name",
        "given_names",
        "middle_name",
        "middle_names",
        "family_name",
        "surname",
        "full_name",
        "legal_name",
        "maiden_name",
        "surname_at_birth",
        "last_name_at_birth",
        "name_at_birth",
        "prenom",
        "nom_de_famille",
    ),
    "email": ("email", "email_address", "e_mail", "courriel"),
    "phone": ("phone", "phone_number", "telephone", "tel", "mobile", "cell", "cellphone", "fax"),
    "address": (
        "address",
        "street",
        "street_address",
        "address_line",
        "mailing_address",
        "home_address",
        "adresse",
    ),
    "postal_code": ("postal_code", "postcode", "zip", "zip_code", "code_postal"),
    "licence": (
        "driver_licence",
        "driver_licence_number",
        "drivers_licence",
        "driver_license",
        "driver_license_number",
        "licence_number",
        "license_number",
    ),
    "document": ("document_number", "document_last4", "last4", "passport_number", "permit_number"),
    "personal": ("sex", "gender", "marital_status", "status_in_canada"),
    "secret": (
        "password",
        "passwd",
        "passphrase",
        "secret",
        "client_secret",
        "secret_key",
        "private_key",
        "signing_key",
        "encryption_key",
        "api_key",
        "apikey",
        "access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "access_code",
        "authorization",
        "cookie",
        "set_cookie",
        "credentials",
    ),
}
"""Field names that hold personal data (or secrets), by the kind the redaction marker names.

A name matches a key that *ends* with it once both are normalised to lower-case words (case,
camelCase, dashes, underscores, dots and spaces do not matter; a trailing index such as the
``1`` of ``address_line_1`` and a trailing ``number``/``no`` are ignored): ``parent_sin``,
``ParentSIN``, ``child-birth-date`` and ``mailing_address.address_line_1`` all match. The names
come from the submission schemas (`bundles.submissions`), the legacy systems' mappings
(`adapters`, `adapters/layouts`, `adapters/wsdl`) and common spellings elsewhere.
"""

WHOLE_KEY_ONLY: Final = frozenset({"name", "nom"})
"""Names too common as a suffix (``step_name``, ``facility_name``) to match anything but a whole key."""

_GENERIC_TAILS: Final = frozenset({"number", "no", "num", "nbr"})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> tuple[str, ...]:
    words = [w for w in _NON_ALNUM.split(_CAMEL_BOUNDARY.sub("_", key).lower()) if w]
    while words and words[-1].isdigit():
        words.pop()
    return tuple(words)


_SUFFIXES: Final[dict[tuple[str, ...], str]] = {
    _words(name): kind
    for kind, names in PERSONAL_FIELDS.items()
    for name in names
    if name not in WHOLE_KEY_ONLY
}
_WHOLE_KEYS: Final[dict[tuple[str, ...], str]] = {
    _words(name): kind for kind, names in PERSONAL_FIELDS.items() for name in names if name in WHOLE_KEY_ONLY
}
_LONGEST_SUFFIX: Final = max(len(words) for words in _SUFFIXES)


_DIGIT_RUN = re.compile(r"\d{5}")


def personal_field_kind(key: str) -> str | None:
    """The kind of personal data a field of this name holds, or None for any other field.

    Args:
        key: A field name as it appears in an event, a mapping, a JSON or XML text.

    Returns:
        A key of `PERSONAL_FIELDS`, or None.
    """
    # Field names repeat, so their answers are kept; a key that looks like data (a mapping
    # keyed by SIN) is classified afresh rather than kept in memory.
    if len(key) > 64 or _DIGIT_RUN.search(key):
        return _classify(key)
    return _classify_name(key)


def _classify(key: str) -> str | None:
    words = _words(key)
    if not words:
        return None
    if words in _WHOLE_KEYS:
        return _WHOLE_KEYS[words]
    candidates = [words]
    if len(words) > 1 and words[-1] in _GENERIC_TAILS:
        candidates.append(words[:-1])
    for candidate in candidates:
        for size in range(min(len(candidate), _LONGEST_SUFFIX), 0, -1):
            kind = _SUFFIXES.get(candidate[-size:])
            if kind is not None:
                return kind
    return None


_classify_name = functools.lru_cache(maxsize=4096)(_classify)


# --- Patterns in text ----------------------------------------------------------------------

MARKER_PREFIX: Final = "[redacted:"


def marker(kind: str) -> str:
    """The text that stands where personal data of this kind was."""
    return f"{MARKER_PREFIX}{kind}]"


# Identifiers stand alone: no letter or digit may touch them, so a digit run inside a hex
# digest, a UUID segment or a base64 blob is never taken for a SIN.
_ALONE_BEFORE = r"(?<![0-9A-Za-z])"
_ALONE_AFTER = r"(?![0-9A-Za-z])"
_IDENTIFIERS = re.compile(
    _ALONE_BEFORE
    + r"(?:"
    # Transit (5) - institution (3) - account (7 to 12), the order on a void cheque.
    + r"(?P<bank>\d{5}[ -]\d{3}[ -]\d{7,12})"
    # Ontario health number, grouped 4-3-3 or not, with its version code attached or hyphenated.
    + r"|(?P<health>\d{4}[ -]?\d{3}[ -]?\d{3})(?:-?[A-Z]{1,2})?"
    + r"|(?P<sin>\d{3}[ -]?\d{3}[ -]?\d{3})"
    # Canada Post never uses D F I O Q U, nor W or Z first.
    + r"|(?P<postal>(?i:[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ -]?\d[ABCEGHJ-NPRSTV-Z]\d))"
    + r")"
    + _ALONE_AFTER
)
_NON_DIGIT = re.compile(r"\D")
_DIGIT = re.compile(r"\d")

# Parts bounded as RFC 5321 bounds them, which also keeps a long run of letters cheap to scan.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}+@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)

# A date within a few characters after a word that says birth, in English or French. The gap
# holds no digit, so the date found is the first number after the word.
_BIRTH_WORDS: Final = ("birth", "born", "naissance", "dob", "né")
_BIRTH_DATE = re.compile(
    r"(?P<context>(?:birth|born|naissance|\bdob\b|\bnée?\b)[^\n\d]{0,40}?)"
    r"(?<!\d)(?P<date>\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}/\d{1,2}/\d{4}"
    r"|(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"|date(?:time)?\(\d{4}, ?\d{1,2}, ?\d{1,2}(?!\d))(?!\d)",
    re.IGNORECASE,
)

# `key=value`, `key: value` (a space after the colon, so `host:port` and `a:b:c` ids are not
# pairs), and quoted keys as in JSON and Python reprs (`"key": value`, `'key': value`).
_KEY_VALUE = re.compile(
    r"""(?:(?P<qkey>["'])(?P<quoted>[A-Za-z_][\w.-]{0,60})(?P=qkey)[ \t]*[:=]"""
    r"""|(?<![\w.-])(?P<bare>[A-Za-z_][\w.-]{0,60}+)[ \t]*(?:=|:(?=[ \t])))[ \t]*"""
    r"""(?P<value>"[^"\n]{0,500}"|'[^'\n]{0,500}'|[^\s,;&'"<>()\[\]{}]+)"""
)
# In prose a name has no separator before it: "no match for surname O'Neil-Bélanger". After a
# name field's words, one to four capitalised words (or a quoted text) are taken for the name.
# A name with no such words before it ("Bélanger called") cannot be told from other words.
_CAPITALISED = "[A-ZÀ-ÖØ-Þ][^\\W\\d_]*(?:['\u2019-][^\\W\\d_]+)*"
_NAME_IN_PROSE = re.compile(
    r"(?<![\w-])(?i:"
    + "|".join(
        sorted(
            # "name" alone is too common a word ("Name Mismatch") to announce a name.
            (
                r"[ _-]".join(name.split("_"))
                for name in PERSONAL_FIELDS["name"]
                if name not in WHOLE_KEY_ONLY
            ),
            key=len,
            reverse=True,
        )
    )
    + r")[ \t]+(?P<value>'[^'\n]{1,100}'|\"[^\"\n]{1,100}\"|"
    + _CAPITALISED
    + r"(?: "
    + _CAPITALISED
    + r"){0,3})"
)
_XML_ELEMENT = re.compile(
    r"<(?P<tag>[A-Za-z_][\w.:-]{0,80})(?:\s[^<>]{0,500})?>(?P<value>[^<]{1,500})</(?P=tag)>"
)

# Values that leave a pair alone: nothing personal, and redacting them would only hide meaning.
_HARMLESS_VALUES: Final = frozenset({"none", "null", "true", "false", "''", '""'})

# A network address ("address": "127.0.0.1:7233") is an operator's, not a resident's.
_NETWORK_ADDRESS = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://\S+"
    r"|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?"
    r"|[A-Za-z0-9.-]+:\d{1,5}"
    r"|(?:\d{1,3}\.){3}\d{1,3}"
    r"|localhost)$"
)

_SHORTEST_FINDING: Final = 5
"""No finding is shorter than a 3-letter field with its value (``sin=1``): shorter text is left as is."""


def _identifier(match: re.Match[str]) -> str:
    if match["bank"] is not None:
        return marker("bank_account")
    if match["postal"] is not None:
        return marker("postal_code")
    digits = _NON_DIGIT.sub("", match["health"] or match["sin"])
    if not luhn.is_valid(digits):
        return match[0]
    return marker("health_number" if match["health"] is not None else "sin")


def _birth_date(match: re.Match[str]) -> str:
    return match["context"] + marker("date_of_birth")


def _pair(match: re.Match[str]) -> str:
    key = match["quoted"] or match["bare"]
    kind = personal_field_kind(key)
    value = match["value"]
    if (
        kind is None
        or value.lower() in _HARMLESS_VALUES
        or value.strip("\"'").startswith(MARKER_PREFIX)
        # The value was already found by its shape, right after a prefix (`datetime.`).
        or match.string.startswith(MARKER_PREFIX, match.end())
    ):
        return match[0]
    quote = value[0] if value[0] in "\"'" else ""
    if kind == "address" and _NETWORK_ADDRESS.match(value.strip("\"'")):
        return match[0]
    start = match.start("value") - match.start()
    return match[0][:start] + quote + marker(kind) + quote


def _name_in_prose(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else ""
    start = match.start("value") - match.start()
    return match[0][:start] + quote + marker("name") + quote


def _element(match: re.Match[str]) -> str:
    tag = match["tag"]
    kind = personal_field_kind(tag.rsplit(":", 1)[-1])
    value = match["value"]
    if kind is None or not value.strip() or value.startswith(MARKER_PREFIX):
        return match[0]
    start = match.start("value") - match.start()
    return match[0][:start] + marker(kind) + f"</{tag}>"


def redact_text(text: str) -> str:
    """Replace every personal identifier found in a text by its marker.

    Args:
        text: Any text: a message, a rendered traceback, a repr.

    Returns:
        The text with each finding replaced by ``[redacted:<kind>]``.
    """
    if len(text) < _SHORTEST_FINDING:
        return text
    # Each pass runs only where its cheapest necessary sign is present: most texts are ids.
    lowered = text.lower()
    if _DIGIT.search(text):
        text = _IDENTIFIERS.sub(_identifier, text)
        if any(word in lowered for word in _BIRTH_WORDS):
            text = _BIRTH_DATE.sub(_birth_date, text)
    if "@" in text:
        text = _EMAIL.sub(marker("email"), text)
    if "=" in text or ":" in text:
        text = _KEY_VALUE.sub(_pair, text)
    if "nam" in lowered or "nom" in lowered:
        text = _NAME_IN_PROSE.sub(_name_in_prose, text)
    if "</" in text:
        text = _XML_ELEMENT.sub(_element, text)
    return text


# --- Structures ------------------------------------------------------------------------------

MAX_DEPTH: Final = 12
"""Deeper than this, a value is replaced whole: no real event nests so far, and a cycle ends here."""


def _redact_field(key: object, value: Any, depth: int) -> Any:
    kind = personal_field_kind(key) if isinstance(key, str) else None
    if kind is None:
        return redact_value(value, depth)
    if value is None or isinstance(value, bool) or value == "":
        return value
    if kind == "address" and isinstance(value, str) and _NETWORK_ADDRESS.match(value):
        return redact_text(value)
    return marker(kind)


def redact_value(value: Any, depth: int = 0) -> Any:  # noqa: PLR0911 - one return per kind of value
    """A copy of a value with personal data redacted, in a form every renderer can show.

    Strings are searched; mappings and sequences are walked (a personal field loses its value);
    pydantic models and dataclasses are walked as their fields; anything else becomes its
    searched ``repr``, which is what the renderers would show of it.

    Args:
        value: Any value of an event.
        depth: How deep in the event the value sits.

    Returns:
        The redacted copy.
    """
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= MAX_DEPTH:
        return marker("nested")
    if isinstance(value, Mapping):
        return {
            redact_text(key) if isinstance(key, str) else key: _redact_field(key, item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        items = [redact_value(item, depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, (set, frozenset)):
        return [redact_value(item, depth + 1) for item in value]
    try:
        if isinstance(value, BaseModel):
            return redact_value(value.model_dump(mode="json"), depth + 1)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return redact_value(dataclasses.asdict(value), depth + 1)
        return redact_text(repr(value))
    except Exception:  # a value that cannot show itself is shown as nothing
        return marker("unrepresentable")


# --- The processor -------------------------------------------------------------------------

REDACTION_FAILED: Final = "log.redaction_failed"
"""The event of the marker that replaces an event whose redaction failed."""

_LEVELS: Final = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception", "fatal"})
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:\d{2})?$")


def _failure_marker(event_dict: EventDict, error: BaseException) -> EventDict:
    # Only what cannot hold personal data survives: a known level and a well-formed timestamp.
    safe: EventDict = {"event": REDACTION_FAILED, "error_type": type(error).__name__}
    try:
        level = event_dict.get("level")
        if isinstance(level, str) and level in _LEVELS:
            safe["level"] = level
        timestamp = event_dict.get("timestamp")
        if isinstance(timestamp, str) and _TIMESTAMP.match(timestamp):
            safe["timestamp"] = timestamp
    except Exception:  # noqa: S110 - the marker stands without them
        pass
    return safe


def redact_personal_data(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact personal data from an event, just before it is rendered.

    Place it after `structlog.processors.format_exc_info` (a traceback is redacted as the text
    it renders to); an exception still unrendered is rendered here first for the same reason.
    It never raises: if redaction fails, the event is replaced by one whose ``event`` is
    `REDACTION_FAILED` and which carries only the level, timestamp and the error's type.

    Args:
        logger: The wrapped logger (unused).
        method_name: The log method's name.
        event_dict: The event.

    Returns:
        A redacted copy of the event.
    """
    try:
        if event_dict.get("exc_info"):
            event_dict = format_exc_info(logger, method_name, event_dict)
        return {key: _redact_field(key, value, 0) for key, value in event_dict.items() if key != "exc_info"}
    except Exception as error:  # a log call must never fail, nor leak instead
        return _failure_marker(event_dict, error)
