"""Reusable validators for Canadian identity and contact data, usable as pydantic annotations.

Each check raises `pydantic_core.PydanticCustomError` with a stable code from
`bundles.messages.CUSTOM_MESSAGES`, so forms, the API and the CLI can show the same specific
bilingual message. No error message ever repeats the value that was checked.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, StringConstraints, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError
from stdnum import luhn
from stdnum.ca import sin as stdnum_sin
from stdnum.exceptions import InvalidChecksum, InvalidComponent, ValidationError

from bundles.messages import CUSTOM_MESSAGES
from bundles.models import LocalizedText

TORONTO = ZoneInfo("America/Toronto")

# Ontario asks parents to register within 30 days; online registration closes after 12 months.
REGISTRATION_DEADLINE_DAYS = 30
EARLIEST_BIRTH_DATE = date(1900, 1, 1)


def custom_error(code: str) -> PydanticCustomError:
    """Build the error for a tellonce code, with its English message as pydantic's `msg`.

    Args:
        code: A key of `bundles.messages.CUSTOM_MESSAGES`.

    Returns:
        The error to raise from a validator.
    """
    # Braces would be read as placeholders by pydantic-core; no message uses them.
    return PydanticCustomError(code, CUSTOM_MESSAGES[code].en)


# --- Social Insurance Number -------------------------------------------------------------


def normalize_sin(value: str) -> str:
    """Validate a Social Insurance Number and return its 9 digits.

    Spaces and hyphens are removed; the number must have 9 digits, must not start with 0 or 8
    (never issued) and must pass the Luhn check. A SIN starting with 9 (temporary resident)
    is valid: use `is_temporary_sin` to flag it.

    Args:
        value: The SIN as typed, e.g. ``"123 456 782"``.

    Returns:
        The 9 digits, e.g. ``"123456782"``.

    Raises:
        PydanticCustomError: ``sin_format``, ``sin_first_digit`` or ``sin_checksum``.
    """
    try:
        return str(stdnum_sin.validate(value.strip()))
    except InvalidComponent:
        raise custom_error("sin_first_digit") from None
    except InvalidChecksum:
        raise custom_error("sin_checksum") from None
    except ValidationError:
        # Wrong length or non-digits; `from None` keeps the value out of the traceback chain.
        raise custom_error("sin_format") from None


def is_temporary_sin(value: str) -> bool:
    """Tell whether a (valid) SIN was issued to a temporary resident: it starts with 9.

    Args:
        value: A SIN, with or without separators.

    Returns:
        True for a temporary resident's SIN.
    """
    return value.strip().startswith("9")


# --- Provinces and postal codes ----------------------------------------------------------

PROVINCES: dict[str, LocalizedText] = {
    "AB": LocalizedText(en="Alberta", fr="Alberta"),
    "BC": LocalizedText(en="British Columbia", fr="Colombie-Britannique"),
    "MB": LocalizedText(en="Manitoba", fr="Manitoba"),
    "NB": LocalizedText(en="New Brunswick", fr="Nouveau-Brunswick"),
    "NL": LocalizedText(en="Newfoundland and Labrador", fr="Terre-Neuve-et-Labrador"),
    "NS": LocalizedText(en="Nova Scotia", fr="Nouvelle-Écosse"),
    "NT": LocalizedText(en="Northwest Territories", fr="Territoires du Nord-Ouest"),
    "NU": LocalizedText(en="Nunavut", fr="Nunavut"),
    "ON": LocalizedText(en="Ontario", fr="Ontario"),
    "PE": LocalizedText(en="Prince Edward Island", fr="Île-du-Prince-Édouard"),
    "QC": LocalizedText(en="Quebec", fr="Québec"),
    "SK": LocalizedText(en="Saskatchewan", fr="Saskatchewan"),
    "YT": LocalizedText(en="Yukon", fr="Yukon"),
}

# First letter of a postal code (the postal district) -> provinces it serves.
POSTAL_DISTRICTS: dict[str, frozenset[str]] = {
    "A": frozenset({"NL"}),
    "B": frozenset({"NS"}),
    "C": frozenset({"PE"}),
    "E": frozenset({"NB"}),
    "G": frozenset({"QC"}),
    "H": frozenset({"QC"}),
    "J": frozenset({"QC"}),
    "K": frozenset({"ON"}),
    "L": frozenset({"ON"}),
    "M": frozenset({"ON"}),
    "N": frozenset({"ON"}),
    "P": frozenset({"ON"}),
    "R": frozenset({"MB"}),
    "S": frozenset({"SK"}),
    "T": frozenset({"AB"}),
    "V": frozenset({"BC"}),
    "X": frozenset({"NT", "NU"}),
    "Y": frozenset({"YT"}),
}

# Canada Post never uses D F I O Q U, and never W or Z as the first letter.
POSTAL_CODE_PATTERN = re.compile(r"^[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d$")


def normalize_province(value: str) -> str:
    """Validate a province or territory code (ISO 3166-2:CA without the country).

    Args:
        value: A code such as ``"ON"`` (case-insensitive).

    Returns:
        The upper-case code.

    Raises:
        PydanticCustomError: ``province_code``.
    """
    code = value.strip().upper()
    if code not in PROVINCES:
        raise custom_error("province_code")
    return code


def normalize_postal_code(value: str) -> str:
    """Validate a Canadian postal code and return it as ``A1A 1A1``.

    Args:
        value: The code as typed; case, spaces and a hyphen in the middle are tolerated.

    Returns:
        The upper-case code with one space in the middle.

    Raises:
        PydanticCustomError: ``postal_code_format``.
    """
    compact = re.sub(r"[\s-]", "", value).upper()
    if not POSTAL_CODE_PATTERN.match(compact):
        raise custom_error("postal_code_format")
    return f"{compact[:3]} {compact[3:]}"


def postal_code_matches_province(postal_code: str, province: str) -> bool:
    """Tell whether a (valid, normalised) postal code belongs to a province or territory.

    Args:
        postal_code: A normalised postal code.
        province: A province or territory code.

    Returns:
        True when the postal district serves the province.
    """
    return province in POSTAL_DISTRICTS.get(postal_code[:1], frozenset())


def check_postal_code_province(postal_code: str, province: str) -> None:
    """Raise when a postal code is not in the given province or territory.

    Args:
        postal_code: A normalised postal code.
        province: A province or territory code.

    Raises:
        PydanticCustomError: ``postal_code_province_mismatch``.
    """
    if not postal_code_matches_province(postal_code, province):
        raise custom_error("postal_code_province_mismatch")


# --- Ontario health number ---------------------------------------------------------------

_HEALTH_NUMBER = re.compile(r"^(\d{10})([A-Z]{0,2})$")


def normalize_ontario_health_number(value: str) -> str:
    """Validate an Ontario health number: 10 digits (Luhn over all 10) and a 0-2 letter version code.

    Args:
        value: The number as on the card, e.g. ``"1234-567-897-AB"``.

    Returns:
        The digits followed by the upper-case version code, e.g. ``"1234567897AB"``.

    Raises:
        PydanticCustomError: ``health_number_format`` or ``health_number_checksum``.
    """
    match = _HEALTH_NUMBER.match(re.sub(r"[\s-]", "", value).upper())
    if match is None:
        raise custom_error("health_number_format")
    if not luhn.is_valid(match.group(1)):
        raise custom_error("health_number_checksum")
    return match.group(1) + match.group(2)


# --- Error locations ---------------------------------------------------------------------

SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_]{1,40}$")
"""A path segment that may be repeated in an error, a log or a DLQ reason: a plain identifier."""

PATH_PLACEHOLDER = "?"


def safe_path(loc: Iterable[int | str]) -> str:
    """A dotted path for a validation error's location, any unsafe segment replaced by `?`.

    Keys come from the sender; one that is not a plain identifier could be anything, even a
    name, so only integers (list indexes) and `SAFE_SEGMENT` identifiers are kept. A key of
    digits only is replaced too: no field is named by digits, but a SIN or health number is.
    """
    return ".".join(
        str(p) if isinstance(p, int) or (SAFE_SEGMENT.match(p) and not p.isdigit()) else PATH_PLACEHOLDER
        for p in loc
    )


# --- Personal names ----------------------------------------------------------------------

# The English and French alphabets, as Ontario's registrar accepts them.
_NAME_LETTERS = "A-Za-zàâäçéèêëîïôöùûüÿœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸŒÆ"
_NAME_ALLOWED = re.compile(rf"^[{_NAME_LETTERS} .'\-]+$")
_NAME_FIRST = re.compile(rf"^[{_NAME_LETTERS}]")
_NAME_SEPARATORS = frozenset(" -'.")


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value).replace("\u2019", "'")


def normalize_person_name(value: str) -> str:
    """Validate a personal name (given names or surname).

    The name is NFC-normalised and a typographic apostrophe becomes ``'``. Letters of the
    English and French alphabets, spaces, hyphens, apostrophes and periods are allowed; the
    name starts with a letter, never has two separators in a row (except ``". "`` as in
    ``"J. Robert"``) and does not end with a hyphen or apostrophe.

    Args:
        value: The name, already stripped of surrounding spaces.

    Returns:
        The normalised name.

    Raises:
        PydanticCustomError: ``name_characters``, ``name_start`` or ``name_punctuation``.
    """
    name = _nfc(value)
    if not _NAME_ALLOWED.match(name):
        raise custom_error("name_characters")
    if not _NAME_FIRST.match(name):
        raise custom_error("name_start")
    for first, second in itertools.pairwise(name):
        if first in _NAME_SEPARATORS and second in _NAME_SEPARATORS and (first, second) != (".", " "):
            raise custom_error("name_punctuation")
    if name[-1] in "-'":
        raise custom_error("name_punctuation")
    return name


def check_single_line(value: str) -> str:
    """Reject control characters (line breaks, tabs) in a one-line text such as a street.

    Args:
        value: The text.

    Returns:
        The text unchanged.

    Raises:
        PydanticCustomError: ``text_characters``.
    """
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise custom_error("text_characters")
    return unicodedata.normalize("NFC", value)


# --- Contact -----------------------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")


def normalize_email(value: str) -> str:
    """Check an email address's structure (local part, ``@``, dotted domain); lower-case the domain.

    Deliverability is not checked: that needs the network.

    Args:
        value: The address.

    Returns:
        The address with its domain in lower case.

    Raises:
        PydanticCustomError: ``email_format``.
    """
    address = value.strip()
    if len(address) > 254 or not _EMAIL.match(address):
        raise custom_error("email_format")
    local, domain = address.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def normalize_phone(value: str) -> str:
    """Validate a 10-digit North American phone number and return it in E.164 (``+1XXXXXXXXXX``).

    Args:
        value: The number as typed, e.g. ``"(613) 555-0123"`` or ``"+1 613 555 0123"``.

    Returns:
        The E.164 form, e.g. ``"+16135550123"``.

    Raises:
        PydanticCustomError: ``phone_format``.
    """
    digits = re.sub(r"[\s().\-]", "", value)
    if digits.startswith("+"):
        digits = digits[1:]
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    # NANP: area code and exchange never start with 0 or 1.
    if not re.fullmatch(r"[2-9]\d{2}[2-9]\d{6}", digits):
        raise custom_error("phone_format")
    return f"+1{digits}"


# --- Dates -------------------------------------------------------------------------------


def toronto_today() -> date:
    """Today's date in Ontario (America/Toronto), whatever the server's time zone."""
    return datetime.now(TORONTO).date()


def today_from(info: ValidationInfo | None) -> date:
    """The "today" to validate against: ``context["today"]`` when given (tests), else Toronto's.

    Args:
        info: The validation info of the validator asking, if any.

    Returns:
        The date to treat as today.
    """
    context = info.context if info is not None else None
    today = context.get("today") if isinstance(context, dict) else None
    if isinstance(today, datetime):
        # A datetime is a date too, but comparing one with a date raises TypeError.
        return today.date()
    if isinstance(today, date):
        return today
    return toronto_today()


def one_year_before(day: date) -> date:
    """The same calendar day a year earlier (28 February for 29 February)."""
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


def check_past_date(value: date, info: ValidationInfo) -> date:
    """Accept a birth date that is neither in the future nor before 1900.

    Raises:
        PydanticCustomError: ``date_in_future`` or ``date_too_old``.
    """
    if value > today_from(info):
        raise custom_error("date_in_future")
    if value < EARLIEST_BIRTH_DATE:
        raise custom_error("date_too_old")
    return value


def check_child_birth_date(value: date, info: ValidationInfo) -> date:
    """Accept a child's birth date that can still be registered online.

    The date must not be in the future and must be within 12 months of today; a date more
    than 30 days ago is accepted but late (see `is_late_registration`).

    Raises:
        PydanticCustomError: ``date_in_future`` or ``birth_too_old_for_online``.
    """
    today = today_from(info)
    if value > today:
        raise custom_error("date_in_future")
    if value < one_year_before(today):
        raise custom_error("birth_too_old_for_online")
    return value


def is_late_registration(date_of_birth: date, today: date) -> bool:
    """Tell whether a birth is registered after the 30-day legal deadline.

    Args:
        date_of_birth: The child's birth date.
        today: The registration date.

    Returns:
        True when more than 30 days have passed since the birth.
    """
    return (today - date_of_birth).days > REGISTRATION_DEADLINE_DAYS


# --- Annotated types for models ----------------------------------------------------------

SocialInsuranceNumber = Annotated[
    str,
    AfterValidator(normalize_sin),
    WithJsonSchema({"type": "string", "pattern": r"^\d{3}[ -]?\d{3}[ -]?\d{3}$"}),
]
PostalCode = Annotated[
    str,
    AfterValidator(normalize_postal_code),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z]\d[A-Za-z] ?\d[A-Za-z]\d$"}),
]
ProvinceCode = Annotated[
    str, AfterValidator(normalize_province), WithJsonSchema({"type": "string", "enum": sorted(PROVINCES)})
]
OntarioHealthNumber = Annotated[str, AfterValidator(normalize_ontario_health_number)]
PersonName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(normalize_person_name),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(check_single_line),
]
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(check_single_line),
]
Email = Annotated[str, AfterValidator(normalize_email), WithJsonSchema({"type": "string", "format": "email"})]
Phone = Annotated[str, AfterValidator(normalize_phone)]
PastBirthDate = Annotated[date, AfterValidator(check_past_date)]
ChildBirthDate = Annotated[date, AfterValidator(check_child_birth_date)]
