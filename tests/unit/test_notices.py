"""Birth notices without a server: parsing, keys, differences, and the example files."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn

from bundles.notices import (
    FACT_LABELS,
    MAX_NOTICE_BYTES,
    NOTICE_SCHEMA,
    BirthFacts,
    NoticeInvalid,
    StatementInvalidError,
    correlation_key,
    differences,
    facts_from_notice,
    facts_from_statement,
    match_workflow_id,
    parse_notice,
    same_facility,
    unkeyed_notice_key,
)
from bundles.plan import project
from bundles.submissions.newborn import NewbornSubmission
from workflows.names import BIRTH_NOTICE_WORKFLOW_PREFIX

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "birth-notices"
SECRET = b"unit-test-secret"
HN = "0987654324"  # the examples' health number (valid Luhn), without version code


def raw_notice(**changes: Any) -> dict[str, Any]:
    notice: dict[str, Any] = {
        "schema": NOTICE_SCHEMA,
        "notice_id": "NLB-2026-0001234",
        "facility": {"kind": "hospital", "id": "3910", "name": "Bytown General Hospital"},
        "issued_at": "2026-11-10T09:15:00-05:00",
        "child": {"date_of_birth": "2026-11-10", "time_of_birth": "04:34", "sex": "F", "plurality": 1},
        "birth_parent": {"health_number": HN, "date_of_birth": "1992-03-14"},
    }
    notice.update(changes)
    return notice


def encode(data: object) -> bytes:
    return json.dumps(data).encode()


def reasons_of(raw: bytes) -> list[tuple[str, str]]:
    with pytest.raises(NoticeInvalid) as caught:
        parse_notice(raw)
    return [(r.code, r.path) for r in caught.value.reasons]


def facts(**overrides: Any) -> BirthFacts:
    base: dict[str, Any] = {
        "child_date_of_birth": date(2026, 11, 10),
        "child_time_of_birth": time(4, 32),
        "child_sex": "F",
        "plurality": 1,
        "birth_order": None,
        "birth_parent_date_of_birth": date(1992, 3, 14),
        "birth_parent_health_number": HN,
        "facility_name": "Bytown General Hospital",
    }
    return BirthFacts(**{**base, **overrides})


# ---------------------------------------------------------------------- parsing


def test_a_valid_notice_parses() -> None:
    notice = parse_notice(encode(raw_notice()))
    assert notice.notice_id == "NLB-2026-0001234"
    assert notice.birth_parent.health_number == HN
    assert notice.child.time_of_birth == time(4, 34)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe{}", "encoding"),
        (b'{"schema": ', "json"),
        (b"[1, 2]", "not_an_object"),
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
        (encode(raw_notice(schema="tellonce.birth-notice/v0")), "schema"),
        (encode({k: v for k, v in raw_notice().items() if k != "schema"}), "schema"),
    ],
)
def test_unreadable_notices_say_why(raw: bytes, code: str) -> None:
    assert [c for c, _ in reasons_of(raw)] == [code]


def test_deep_nesting_within_the_size_limit_is_refused_not_crashed() -> None:
    deep = b"[" * 30_000 + b"]" * 30_000
    assert len(deep) < MAX_NOTICE_BYTES
    assert [c for c, _ in reasons_of(deep)] == ["json"]


def test_field_errors_are_listed_with_paths_and_never_echo_values() -> None:
    bad = raw_notice(
        notice_id="Marie Belanger",
        child={"date_of_birth": "2026-13-40", "sex": "Female", "plurality": 2},
        birth_parent={"health_number": "1234-567-890", "date_of_birth": "1992-03-14"},
        mother_name="Marie-Ève Bélanger",
    )
    with pytest.raises(NoticeInvalid) as caught:
        parse_notice(encode(bad))
    found = {(r.code, r.path) for r in caught.value.reasons}
    assert ("string_pattern_mismatch", "notice_id") in found
    assert ("date_from_datetime_parsing", "child.date_of_birth") in found
    assert ("literal_error", "child.sex") in found
    assert ("health_number_checksum", "birth_parent.health_number") in found
    assert ("extra_forbidden", "mother_name") in found
    text = " ".join(f"{r.message} {r.path}" for r in caught.value.reasons) + str(caught.value)
    for value in ("Marie", "Belanger", "Bélanger", "2026-13-40", "Female", "1234", "567"):
        assert value not in text


def test_a_key_that_could_be_anything_is_not_repeated_in_the_path() -> None:
    bad = raw_notice(**{"Marie-Ève Bélanger": 1})
    assert ("extra_forbidden", "?") in reasons_of(encode(bad))


def test_a_multiple_birth_needs_a_birth_order() -> None:
    child = {"date_of_birth": "2026-11-10", "sex": "F", "plurality": 2}
    assert [c for c, _ in reasons_of(encode(raw_notice(child=child)))] == ["value_error"]


def test_a_notice_without_health_number_is_valid() -> None:
    notice = parse_notice(encode(raw_notice(birth_parent={"date_of_birth": "1992-03-14"})))
    assert notice.birth_parent.health_number is None
    assert correlation_key(facts_from_notice(notice), SECRET) is None


# ---------------------------------------------------------------------- keys


@pytest.mark.parametrize("written", ["0987654324", "0987-654-324", "0987 654 324 AB", "0987654324xy"])
def test_separators_and_version_code_do_not_change_the_key(written: str) -> None:
    notice = parse_notice(
        encode(raw_notice(birth_parent={"health_number": written, "date_of_birth": "1992-03-14"}))
    )
    assert correlation_key(facts_from_notice(notice), SECRET) == correlation_key(facts(), SECRET)


def test_the_key_is_a_keyed_digest_of_health_number_and_birth_date() -> None:
    key = correlation_key(facts(), SECRET)
    assert key is not None and len(key) == 64 and int(key, 16) >= 0
    assert HN not in key
    assert correlation_key(facts(), b"another secret") != key
    assert correlation_key(facts(child_date_of_birth=date(2026, 11, 11)), SECRET) != key
    # Facts that do not identify the birth do not move it to another matcher.
    assert correlation_key(facts(child_sex="M", child_time_of_birth=None), SECRET) == key
    assert match_workflow_id(key) == BIRTH_NOTICE_WORKFLOW_PREFIX + key


@given(
    body=st.text(alphabet="0123456789", min_size=9, max_size=9),
    version=st.sampled_from(["", "A", "AB", "zz"]),
    dashes=st.booleans(),
)
def test_any_way_of_writing_a_health_number_gives_one_key(body: str, version: str, dashes: bool) -> None:
    digits = body + luhn.calc_check_digit(body)
    written = f"{digits[:4]}-{digits[4:7]} {digits[7:]}{version}" if dashes else digits + version
    payload = {"child": {"date_of_birth": "2026-11-10"}, "birth_parent": {"health_number": written}}
    expected = correlation_key(
        BirthFacts(child_date_of_birth=date(2026, 11, 10), birth_parent_health_number=digits), SECRET
    )
    assert correlation_key(facts_from_statement(payload), SECRET) == expected


def test_a_notice_without_health_number_gets_an_operator_key() -> None:
    no_hn = facts(birth_parent_health_number=None, facility_id="3910")
    key = unkeyed_notice_key(no_hn, SECRET)
    assert key.startswith("nohn-") and "3910" not in key
    assert unkeyed_notice_key(no_hn, b"another secret") != key
    assert unkeyed_notice_key(no_hn.model_copy(update={"facility_id": "3911"}), SECRET) != key


# ---------------------------------------------------------------------- statement facts


def test_statement_facts_come_from_the_projected_registration_payload() -> None:
    example = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())
    submission = NewbornSubmission.model_validate(
        example["submission"], context={"today": date(2026, 11, 12)}
    ).model_dump(mode="json", exclude_none=True)
    fields = (
        "child.sex", "child.date_of_birth", "child.time_of_birth", "child.plurality",
        "child.birth_order", "child.place_of_birth", "birth_parent.date_of_birth",
        "birth_parent.health_number", "birth_parent.surname",
    )  # fmt: skip
    got = facts_from_statement(project(submission, fields))
    assert got == facts(facility_name="Bytown General Hospital")


def test_a_statement_without_birth_date_is_refused_without_values() -> None:
    with pytest.raises(StatementInvalidError) as caught:
        facts_from_statement({"child": {"sex": "F"}, "birth_parent": {"health_number": "1234567890"}})
    assert "child.date_of_birth" in str(caught.value) and "1234" not in str(caught.value)
    with pytest.raises(StatementInvalidError) as caught:
        facts_from_statement(
            {"child": {"date_of_birth": "2026-11-10"}, "birth_parent": {"health_number": "1234567890"}}
        )
    assert "birth_parent.health_number" in str(caught.value) and "1234" not in str(caught.value)


# ---------------------------------------------------------------------- differences


def test_same_facts_have_no_differences() -> None:
    assert differences(facts(), facts()) == []


@pytest.mark.parametrize(
    ("minutes", "differ"), [(0, False), (15, False), (-15, False), (16, True), (-60, True)]
)
def test_time_of_birth_has_a_tolerance_of_15_minutes(minutes: int, differ: bool) -> None:
    total = 4 * 60 + 32 + minutes
    other = facts(child_time_of_birth=time(total // 60, total % 60))
    assert (differences(other, facts()) == ["child.time_of_birth"]) is differ


def test_each_differing_fact_is_named_in_label_order() -> None:
    notice = facts(
        child_sex="M",
        plurality=2,
        birth_order=1,
        birth_parent_date_of_birth=date(1991, 3, 14),
        facility_name="Kingston General Hospital",
    )
    found = differences(notice, facts())
    assert found == [
        "child.sex",
        "child.plurality",
        "child.place_of_birth.facility_name",
        "birth_parent.date_of_birth",
    ]
    assert set(found) <= set(FACT_LABELS)
    assert all(label.en and label.fr for label in FACT_LABELS.values())


def test_facts_one_side_does_not_state_are_not_compared() -> None:
    unknown = facts(
        child_time_of_birth=None, child_sex=None, facility_name=None, birth_parent_date_of_birth=None
    )
    assert differences(unknown, facts(child_sex="M", birth_order=2)) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Bytown General Hospital", "Hôpital général de Bytown"),
        ("BYTOWN GENERAL HOSPITAL", "bytown general"),
        ("St. Michael's Hospital", "Saint Michael Hospital"),
        ("The Ottawa Hospital \u2013 Civic Campus", "Ottawa Hospital"),
        ("Hôpital Montfort", "Montfort Hospital"),
    ],
)
def test_facility_names_are_compared_without_noise(first: str, second: str) -> None:
    assert same_facility(first, second) is True


def test_different_facilities_differ_and_pure_noise_says_nothing() -> None:
    assert same_facility("Kingston General Hospital", "Bytown General Hospital") is False
    assert same_facility("Hospital", "Bytown General Hospital") is None


@given(st.text(max_size=40), st.text(max_size=40))
def test_facility_comparison_is_symmetric(first: str, second: str) -> None:
    assert same_facility(first, second) == same_facility(second, first)


@given(st.integers(min_value=0, max_value=23 * 60 + 59), st.integers(min_value=0, max_value=23 * 60 + 59))
def test_differences_are_symmetric_in_time(a: int, b: int) -> None:
    left, right = (
        facts(child_time_of_birth=time(a // 60, a % 60)),
        facts(child_time_of_birth=time(b // 60, b % 60)),
    )
    assert differences(left, right) == differences(right, left)
    assert (differences(left, right) == []) is (abs(a - b) <= 15)


# ---------------------------------------------------------------------- example files


def statement_of_complete_example() -> BirthFacts:
    example = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())
    return facts_from_statement(example["submission"])


def test_example_notice_matches_the_complete_newborn_example() -> None:
    notice = parse_notice((EXAMPLES / "matching.json").read_bytes())
    notice_facts, statement_facts = facts_from_notice(notice), statement_of_complete_example()
    assert differences(notice_facts, statement_facts) == []
    assert correlation_key(notice_facts, SECRET) == correlation_key(statement_facts, SECRET)


def test_example_conflicting_notice_shares_the_key_but_differs() -> None:
    notice = parse_notice((EXAMPLES / "conflicting.json").read_bytes())
    notice_facts, statement_facts = facts_from_notice(notice), statement_of_complete_example()
    assert correlation_key(notice_facts, SECRET) == correlation_key(statement_facts, SECRET)
    assert differences(notice_facts, statement_facts) == ["child.time_of_birth", "child.sex"]
