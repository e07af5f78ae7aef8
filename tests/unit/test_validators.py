"""Validators for Canadian data and the bilingual message catalogue behind their error codes."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError
from stdnum import luhn

from bundles import validators as v
from bundles.messages import BUILTIN_MESSAGES, CUSTOM_MESSAGES, FALLBACK_MESSAGE, NOTICES, message_for

TODAY = date(2026, 11, 23)


def code_of(func: Any, *args: Any) -> str:
    """The custom error code a validator raises for these arguments."""
    with pytest.raises(PydanticCustomError) as caught:
        func(*args)
    return caught.value.type


def adapter_code(annotation: Any, value: Any, *, today: date = TODAY) -> str:
    """The single error code an annotated type gives for a value."""
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(annotation).validate_python(value, context={"today": today})
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return str(errors[0]["type"])


# --- SIN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("123 456 782", "123456782"), ("123-456-782", "123456782"), (" 123456782 ", "123456782")],
)
def test_valid_sin_is_normalised_to_nine_digits(raw: str, expected: str) -> None:
    assert v.normalize_sin(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("123 456 789", "sin_checksum"),
        ("823 456 785", "sin_first_digit"),
        ("046 454 286", "sin_first_digit"),  # Luhn-valid, but 0 is never issued
        ("12345678", "sin_format"),
        ("1234567890", "sin_format"),
        ("12345678a", "sin_format"),
        ("", "sin_format"),
    ],
)
def test_invalid_sin_gives_a_specific_code(raw: str, code: str) -> None:
    assert code_of(v.normalize_sin, raw) == code


def test_temporary_resident_sin_is_valid_and_flagged() -> None:
    assert v.normalize_sin("912 345 675") == "912345675"
    assert v.is_temporary_sin("912 345 675")
    assert not v.is_temporary_sin("123 456 782")


_SIN_FIRST = st.sampled_from("1234567" + "9")


@given(first=_SIN_FIRST, body=st.text("0123456789", min_size=7, max_size=7))
def test_every_luhn_valid_sin_with_an_issued_first_digit_passes(first: str, body: str) -> None:
    partial = first + body
    number = partial + luhn.calc_check_digit(partial)
    assert v.normalize_sin(f"{number[:3]} {number[3:6]} {number[6:]}") == number
    assert v.is_temporary_sin(number) == (first == "9")


@given(first=_SIN_FIRST, body=st.text("0123456789", min_size=7, max_size=7), delta=st.integers(1, 9))
def test_every_wrong_check_digit_is_a_checksum_error(first: str, body: str, delta: int) -> None:
    partial = first + body
    wrong = (int(luhn.calc_check_digit(partial)) + delta) % 10
    assert code_of(v.normalize_sin, f"{partial}{wrong}") == "sin_checksum"


# --- postal codes and provinces ----------------------------------------------------------

_FIRST = "ABCEGHJKLMNPRSTVXY"
_OTHER = "ABCEGHJKLMNPRSTVWXYZ"
_DIGIT = "0123456789"

postal_codes = st.builds(
    lambda a, b, c, d, e, f: f"{a}{b}{c} {d}{e}{f}",
    *(st.sampled_from(alphabet) for alphabet in (_FIRST, _DIGIT, _OTHER, _DIGIT, _OTHER, _DIGIT)),
)


@given(code=postal_codes, variant=st.sampled_from(["as-is", "lower", "compact", "hyphen", "padded"]))
def test_every_valid_postal_code_round_trips_normalisation(code: str, variant: str) -> None:
    typed = {
        "as-is": code,
        "lower": code.lower(),
        "compact": code.replace(" ", ""),
        "hyphen": code.replace(" ", "-"),
        "padded": f"  {code.lower()} ",
    }[variant]
    assert v.normalize_postal_code(typed) == code
    assert v.normalize_postal_code(v.normalize_postal_code(typed)) == code


@given(code=postal_codes)
def test_every_valid_postal_code_belongs_to_some_province(code: str) -> None:
    provinces = [p for p in v.PROVINCES if v.postal_code_matches_province(code, p)]
    assert provinces
    assert set(provinces) == set(v.POSTAL_DISTRICTS[code[0]])


@pytest.mark.parametrize(
    "raw", ["W1A 1A1", "Z1A 1A1", "K1A 0D1", "K1A 0B", "D1A 1A1", "K1O 1A1", "KKA 1A1", ""]
)
def test_invalid_postal_codes_are_rejected(raw: str) -> None:
    assert code_of(v.normalize_postal_code, raw) == "postal_code_format"


@pytest.mark.parametrize(
    ("postal_code", "province"),
    [
        ("K1A 0B1", "ON"),
        ("M5V 2T6", "ON"),
        ("H2X 1Y4", "QC"),
        ("G1R 4P5", "QC"),
        ("X0A 0H0", "NU"),
        ("X1A 2L9", "NT"),
        ("A1C 5M2", "NL"),
        ("Y1A 2C6", "YT"),
        ("V6B 4Y8", "BC"),
    ],
)
def test_postal_code_in_its_province_passes(postal_code: str, province: str) -> None:
    v.check_postal_code_province(postal_code, province)


@pytest.mark.parametrize(
    ("postal_code", "province"), [("H2X 1Y4", "ON"), ("K1A 0B1", "QC"), ("X0A 0H0", "YT")]
)
def test_postal_code_outside_its_province_is_an_error(postal_code: str, province: str) -> None:
    assert code_of(v.check_postal_code_province, postal_code, province) == "postal_code_province_mismatch"


def test_thirteen_provinces_and_territories_with_both_names() -> None:
    assert sorted(v.PROVINCES) == [
        "AB",
        "BC",
        "MB",
        "NB",
        "NL",
        "NS",
        "NT",
        "NU",
        "ON",
        "PE",
        "QC",
        "SK",
        "YT",
    ]
    assert v.PROVINCES["QC"].fr == "Québec"
    assert v.PROVINCES["PE"].fr == "Île-du-Prince-Édouard"
    assert {p for group in v.POSTAL_DISTRICTS.values() for p in group} == set(v.PROVINCES)


def test_province_codes_are_case_insensitive_and_closed() -> None:
    assert v.normalize_province(" on ") == "ON"
    assert code_of(v.normalize_province, "ONT") == "province_code"
    assert code_of(v.normalize_province, "XX") == "province_code"


# --- Ontario health number ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1234567897", "1234567897"), ("1234-567-897-ab", "1234567897AB"), ("0987 654 324 A", "0987654324A")],
)
def test_valid_ontario_health_numbers(raw: str, expected: str) -> None:
    assert v.normalize_ontario_health_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("1234567890", "health_number_checksum"),
        ("123456789", "health_number_format"),
        ("12345678901", "health_number_format"),
        ("1234567897ABC", "health_number_format"),
        ("1234567897A1", "health_number_format"),
    ],
)
def test_invalid_ontario_health_numbers(raw: str, code: str) -> None:
    assert code_of(v.normalize_ontario_health_number, raw) == code


@given(
    body=st.text(_DIGIT, min_size=9, max_size=9), version=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=2)
)
def test_every_luhn_valid_health_number_with_a_version_code_passes(body: str, version: str) -> None:
    number = body + luhn.calc_check_digit(body)
    assert v.normalize_ontario_health_number(number + version.lower()) == number + version


# --- names -------------------------------------------------------------------------------

PersonName = TypeAdapter(v.PersonName)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Zoë-Chloé O'Neil-Bélanger", "Zoë-Chloé O'Neil-Bélanger"),
        ("O\u2019Neil", "O'Neil"),
        ("Zoe\u0308", "Zoë"),  # decomposed input is composed (NFC)
        ("  Anne  ", "Anne"),
        ("J. Robert", "J. Robert"),
        ("Jr.", "Jr."),
        ("Œuvre Æsir", "Œuvre Æsir"),
        ("X", "X"),
    ],
)
def test_valid_names_are_normalised(raw: str, expected: str) -> None:
    assert PersonName.validate_python(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("Zoë2", "name_characters"),
        ("Anne_Marie", "name_characters"),
        ("Łukasz", "name_characters"),
        ("Anne!", "name_characters"),
        ("-Anne", "name_start"),
        ("'Anne", "name_start"),
        ("Anne--Marie", "name_punctuation"),
        ("Anne  Marie", "name_punctuation"),
        ("Anne -Marie", "name_punctuation"),
        ("O''Neil", "name_punctuation"),
        ("Anne-", "name_punctuation"),
        ("", "string_too_short"),
        ("   ", "string_too_short"),
        ("A" * 101, "string_too_long"),
        (42, "string_type"),
    ],
)
def test_invalid_names_give_specific_codes(raw: Any, code: str) -> None:
    assert adapter_code(v.PersonName, raw) == code


@given(st.text("abcdefghijklmnopqrstuvwxyzàâäçéèêëîïôöùûüÿœæ", min_size=1, max_size=50))
def test_every_run_of_allowed_letters_is_a_valid_name(name: str) -> None:
    assert PersonName.validate_python(name.capitalize()) == name.capitalize()


# --- contact -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("marie@Example.CA", "marie@example.ca"), (" a.b+c@sub.example.org ", "a.b+c@sub.example.org")],
)
def test_valid_email(raw: str, expected: str) -> None:
    assert v.normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["marie.example.ca", "marie@", "@example.ca", "marie@example", "a b@example.ca"]
)
def test_invalid_email(raw: str) -> None:
    assert code_of(v.normalize_email, raw) == "email_format"


@pytest.mark.parametrize("raw", ["(613) 555-0123", "613.555.0123", "+1 613 555 0123", "1-613-555-0123"])
def test_phone_numbers_are_normalised_to_e164(raw: str) -> None:
    assert v.normalize_phone(raw) == "+16135550123"


@pytest.mark.parametrize(
    "raw", ["555-0123", "013-555-0123", "613-155-0123", "+44 20 7946 0123", "613-555-01234"]
)
def test_invalid_phone_numbers(raw: str) -> None:
    assert code_of(v.normalize_phone, raw) == "phone_format"


# --- dates -------------------------------------------------------------------------------


def test_child_birth_date_today_and_one_year_ago_are_accepted() -> None:
    child_date = TypeAdapter(v.ChildBirthDate)
    assert child_date.validate_python(TODAY, context={"today": TODAY}) == TODAY
    assert child_date.validate_python(date(2025, 11, 23), context={"today": TODAY}) == date(2025, 11, 23)


@pytest.mark.parametrize(
    ("value", "code"),
    [(TODAY + timedelta(days=1), "date_in_future"), (date(2025, 11, 22), "birth_too_old_for_online")],
)
def test_child_birth_date_errors(value: date, code: str) -> None:
    assert adapter_code(v.ChildBirthDate, value) == code


def test_a_datetime_in_the_context_counts_as_its_date() -> None:
    now = datetime(2026, 11, 23, 23, 59, tzinfo=v.TORONTO)
    assert TypeAdapter(v.ChildBirthDate).validate_python(TODAY, context={"today": now}) == TODAY


def test_without_a_context_today_is_torontos() -> None:
    assert v.today_from(None) == v.toronto_today() == datetime.now(v.TORONTO).date()
    assert TypeAdapter(v.ChildBirthDate).validate_python(v.toronto_today()) == v.toronto_today()


@pytest.mark.parametrize(
    ("value", "code"), [(TODAY + timedelta(days=1), "date_in_future"), (date(1899, 12, 31), "date_too_old")]
)
def test_parent_birth_date_errors(value: date, code: str) -> None:
    assert adapter_code(v.PastBirthDate, value) == code


def test_late_registration_starts_after_thirty_days() -> None:
    assert not v.is_late_registration(TODAY - timedelta(days=30), TODAY)
    assert v.is_late_registration(TODAY - timedelta(days=31), TODAY)


def test_one_year_before_a_leap_day_is_the_28th() -> None:
    assert v.one_year_before(date(2028, 2, 29)) == date(2027, 2, 28)
    assert v.one_year_before(TODAY) == date(2025, 11, 23)


# --- the message catalogue ---------------------------------------------------------------


def _codes_raised_in_source() -> set[str]:
    sources = [*Path(v.__file__).parent.glob("*.py"), *Path(v.__file__).parent.glob("submissions/*.py")]
    text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
    return set(re.findall(r'custom_error\("([a-z_]+)"\)', text)) | set(
        re.findall(r'\),\s*"([a-z_]+)"\)', text)  # (loc, "code") pairs of cross-field rules
    )


def test_every_code_raised_in_the_source_has_a_message() -> None:
    raised = _codes_raised_in_source()
    assert "sin_checksum" in raised
    assert "sin_required_for_ccb" in raised
    assert raised <= set(CUSTOM_MESSAGES)


@pytest.mark.parametrize(
    "code",
    [
        "missing",
        "string_type",
        "string_too_short",
        "string_too_long",
        "date_parsing",
        "date_from_datetime_parsing",
        "literal_error",
        "enum",
        "int_parsing",
        "greater_than_equal",
        "less_than_equal",
        "extra_forbidden",
        "bool_parsing",
        "too_long",
        "value_error",
        "time_parsing",
        "model_type",
    ],
)
def test_common_builtin_errors_have_their_own_message(code: str) -> None:
    assert code in BUILTIN_MESSAGES
    assert message_for(code, {"min_length": 2, "max_length": 9, "ge": 1, "le": 8, "expected": "'a'"}).en


def test_every_message_is_bilingual_and_distinct() -> None:
    for text in [*CUSTOM_MESSAGES.values(), *BUILTIN_MESSAGES.values(), *NOTICES.values()]:
        assert text.en.strip()
        assert text.fr.strip()
        assert text.en != text.fr


def test_the_sin_checksum_message_is_the_specified_one() -> None:
    message = message_for("sin_checksum")
    assert message.en == "Enter a 9-digit Social Insurance Number; the check digit does not match"
    assert message.fr == (
        "Entrez un numéro d'assurance sociale de 9 chiffres; le chiffre de contrôle ne correspond pas"
    )


def test_constraints_are_interpolated_and_choices_read_in_french() -> None:
    assert message_for("string_too_long", {"max_length": 100}).fr == "Entrez au plus 100 caractères"
    assert message_for("string_too_short", {"min_length": 1}).en == "This field cannot be empty"
    assert message_for("literal_error", {"expected": "'F', 'M' or 'X'"}).fr.endswith("'F', 'M' ou 'X'")


def test_context_that_may_echo_input_is_never_interpolated() -> None:
    message = message_for("value_error", {"error": "123 456 789 is wrong", "input": "123 456 789"})
    assert "123" not in message.en + message.fr
    assert message_for("no_such_code") == FALLBACK_MESSAGE
