"""Property tests of submission validation, through the entry point the API and Kafka intake share.

Whatever a sender puts in a submission (any JSON value, or a valid example with parts broken),
`validate_submission` either accepts it or raises `SubmissionInvalid`, never anything else, and
every error names a safe field path and carries both an English and a French message. Valid
submissions built from the examples (accented names, dates across their windows, any
check-valid SIN and health number, in any of the usual spellings) are accepted and normalised.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stdnum import luhn

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.models import BundleDefinition
from bundles.plan import resolve_plan
from bundles.submissions import SubmissionInvalid, ValidatedSubmission, validate_submission
from bundles.submissions.validation import add_months
from bundles.validators import one_year_before

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = Catalogue.load(known_adapters=KNOWN_ADAPTERS)
TODAY = date(2026, 11, 20)
"""Pinned so the examples (a child born 2026-11-10, a move on 2026-11-30) stay in their windows."""

EXAMPLE_OF_SCHEMA = {
    "newborn/v1": "newborn-on/complete.json",
    "address_change/v1": "address-change-on/complete.json",
}
BUNDLE_IDS = sorted(CATALOGUE.definitions)
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAFE_PATH = re.compile(r"^(?:[A-Za-z0-9_]+|\?)(?:\.(?:[A-Za-z0-9_]+|\?))*$")
"""What an error path may look like: identifiers, indexes and `?` for a key that is not safe."""

HOSTILE_TEXT = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(document.cookie)",
    "Robert'); DROP TABLE students;--",
    "{0.__class__}",
    "%s%s%s%n",
    "\x00\x07\x1b[31m",
    "A\u202eevil",
    "e\u0301\u0301\u0301",
    "\ud800",
    "١٢٣ ٤٥٦ ٧٨٢",
    "\uff2f\u2019\uff2e\uff45\uff49\uff4c",  # O'Neil in full-width letters
    "x" * 5000,
)


def definition(bundle_id: str) -> BundleDefinition:
    return CATALOGUE.get(bundle_id)


def example_for(bundle_id: str) -> dict[str, Any]:
    name = EXAMPLE_OF_SCHEMA[definition(bundle_id).submission_schema]
    data: dict[str, Any] = json.loads((ROOT / "examples" / name).read_text())["submission"]
    return data


# --- arbitrary input ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.sampled_from(HOSTILE_TEXT), children, max_size=4)
    ),
    max_leaves=20,
)


def node_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The location of every node of a JSON tree below its root."""
    paths: list[tuple[str | int, ...]] = []
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    )
    for key, child in children:
        paths.append((*prefix, key))
        paths.extend(node_paths(child, (*prefix, key)))
    return paths


def parent_of(tree: Any, path: tuple[str | int, ...]) -> Any:
    node = tree
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """A valid example with one to four of its nodes deleted, replaced, retyped or given a sibling."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = node_paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = parent_of(tree, path), path[-1]
        operation = draw(st.sampled_from(["delete", "replace", "hostile", "stringify", "wrap", "sibling"]))
        if operation == "delete":
            del parent[key]
        elif operation == "replace":
            parent[key] = draw(json_values)
        elif operation == "hostile":
            parent[key] = draw(st.sampled_from(HOSTILE_TEXT))
        elif operation == "stringify":
            parent[key] = json.dumps(parent[key])
        elif operation == "wrap":
            parent[key] = [parent[key]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12) | st.sampled_from(HOSTILE_TEXT))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return tree


def strings_in(value: Any) -> set[str]:
    """Every string of a JSON tree, keys included."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {s for k, v in value.items() for s in strings_in(k) | strings_in(v)}
    if isinstance(value, list):
        return {s for item in value for s in strings_in(item)}
    return set()


def personal_strings(bundle_id: str) -> set[str]:
    """The example's values that are not plain words: numbers, dates, compound names, addresses."""
    return {s for s in strings_in(example_for(bundle_id)) if len(s) > 3 and not s.isidentifier()}


def check_outcome(bundle_id: str, raw: Any) -> ValidatedSubmission | None:
    """Validate; if refused, check the refusal is one the API and the DLQ can show as it is."""
    try:
        return validate_submission(definition(bundle_id), raw, today=TODAY)
    except SubmissionInvalid as exc:
        refused = exc
    assert refused.errors, "refused without saying why"
    for error in refused.errors:
        assert error.code
        assert error.message.en.strip() and error.message.fr.strip()
        # '' is the whole form: not an object, or an object whose keys cannot be read.
        assert error.path == "" or SAFE_PATH.match(error.path), error.path
        if not isinstance(raw, dict):
            assert error.path == ""
    # Nothing the sender wrote comes back: no hostile text, no personal value.
    shown = json.dumps([e.model_dump() for e in refused.errors], ensure_ascii=False) + str(refused)
    secrets = (set(HOSTILE_TEXT) | personal_strings(bundle_id)) & strings_in(raw)
    assert not {s for s in secrets if s in shown}
    return None


@PROPERTIES
@given(bundle_id=st.sampled_from(BUNDLE_IDS), raw=json_values)
def test_any_json_value_is_accepted_or_refused_with_field_errors(bundle_id: str, raw: Any) -> None:
    assert check_outcome(bundle_id, raw) is None


@PROPERTIES
@given(data=st.data(), bundle_id=st.sampled_from(BUNDLE_IDS))
def test_any_mutation_of_a_valid_example_is_accepted_or_refused_with_field_errors(
    data: st.DataObject, bundle_id: str
) -> None:
    raw = data.draw(mutated(example_for(bundle_id)))
    validated = check_outcome(bundle_id, raw)
    if validated is not None:
        # What intake does next must not fail either.
        resolve_plan(definition(bundle_id), validated.data, validated.consents)
        assert not any("<" in text or ">" in text for text in strings_in(validated.data))


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
def test_the_examples_themselves_are_valid(bundle_id: str) -> None:
    validated = check_outcome(bundle_id, example_for(bundle_id))
    assert validated is not None


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
@pytest.mark.parametrize("hostile", [t for t in HOSTILE_TEXT if t[:1] in '<"j'])
def test_a_script_in_any_name_is_refused_by_the_name_rule(bundle_id: str, hostile: str) -> None:
    base = example_for(bundle_id)
    for path in node_paths(base):
        if path[-1] not in ("given_names", "surname", "surname_at_birth"):
            continue
        raw = copy.deepcopy(base)
        parent_of(raw, path)[path[-1]] = hostile
        with pytest.raises(SubmissionInvalid) as refused:
            validate_submission(definition(bundle_id), raw, today=TODAY)
        dotted = ".".join(str(p) for p in path)
        assert [(e.path, e.code) for e in refused.value.errors] == [(dotted, "name_characters")]


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
@pytest.mark.parametrize("hostile", ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "a<b"])
def test_markup_in_any_free_text_is_refused_at_its_field(bundle_id: str, hostile: str) -> None:
    """Streets, municipalities, emails, a promoter's name: none needs `<` or `>`, so none stores them."""
    base = example_for(bundle_id)
    texts = [p for p in node_paths(base) if isinstance(read_path(base, p), str) and p[0] != "language"]
    assert len(texts) > 15
    for path in texts:
        raw = copy.deepcopy(base)
        parent_of(raw, path)[path[-1]] = hostile
        with pytest.raises(SubmissionInvalid) as refused:
            validate_submission(definition(bundle_id), raw, today=TODAY)
        dotted = ".".join(str(p) for p in path)
        assert [e.path for e in refused.value.errors] == [dotted], refused.value.errors
        assert hostile not in str(refused.value) + refused.value.errors[0].model_dump_json()


@pytest.mark.parametrize("bundle_id", BUNDLE_IDS)
@pytest.mark.parametrize("invisible", ["\u200b", "\u202e", "\ufeff", "\u00ad", "\U000e0001"])
def test_invisible_characters_in_free_text_are_refused_at_their_field(bundle_id: str, invisible: str) -> None:
    """A zero-width space pasted with a street would pass intake and then break a batch file."""
    base = example_for(bundle_id)
    free_text = [
        p
        for p in node_paths(base)
        if isinstance(read_path(base, p), str) and p[-1] in ("street", "municipality", "email", "promoter")
    ]
    assert free_text
    for path in free_text:
        raw = copy.deepcopy(base)
        parent_of(raw, path)[path[-1]] = f"ex{invisible}ample" + (
            "@example.ca" if path[-1] == "email" else ""
        )
        with pytest.raises(SubmissionInvalid) as refused:
            validate_submission(definition(bundle_id), raw, today=TODAY)
        dotted = ".".join(str(p) for p in path)
        assert [(e.path, e.code) for e in refused.value.errors] == [(dotted, "text_characters")]


def read_path(tree: Any, path: tuple[str | int, ...]) -> Any:
    return parent_of(tree, path)[path[-1]]


# --- valid input ----------------------------------------------------------------------------------

NAME_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzàâäçéèêëîïôöùûüÿœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸŒÆ"


@st.composite
def names(draw: st.DrawFn) -> tuple[str, str]:
    """(as typed, as stored): words of French and English letters joined by one separator each.

    As typed, the name may be decomposed (NFD), use a typographic apostrophe and carry spaces
    around it; as stored it is NFC with a straight apostrophe and no outer spaces.
    """
    words = draw(st.lists(st.text(NAME_LETTERS, min_size=1, max_size=10), min_size=1, max_size=4))
    stored = words[0]
    for word in words[1:]:
        stored += draw(st.sampled_from([" ", "-", "'", ". "])) + word
    typed = stored
    if draw(st.booleans()):
        typed = typed.replace("'", "\u2019")
    if draw(st.booleans()):
        typed = unicodedata.normalize("NFD", typed)
    typed = draw(st.sampled_from(["", " ", "  "])) + typed + draw(st.sampled_from(["", " "]))
    return typed, unicodedata.normalize("NFC", stored)


@st.composite
def sins(draw: st.DrawFn) -> tuple[str, str]:
    """(as typed, its 9 digits): any check-valid SIN that can be issued (not starting 0 or 8)."""
    first = draw(st.sampled_from("1234567 9".replace(" ", "")))
    body = first + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=7, max_size=7)))
    digits = body + luhn.calc_check_digit(body)
    separator = draw(st.sampled_from(["", " ", "-"]))
    return separator.join((digits[:3], digits[3:6], digits[6:])), digits


@st.composite
def health_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(as typed, as stored): 10 digits passing Luhn and a version code of 0 to 2 letters."""
    body = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=9, max_size=9)))
    digits = body + luhn.calc_check_digit(body)
    version = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=2))
    separator = draw(st.sampled_from(["", " ", "-"]))
    typed = separator.join(p for p in (digits[:4], digits[4:7], digits[7:], version) if p)
    return (typed.lower() if draw(st.booleans()) else typed), digits + version


def days_between(start: date, end: date) -> st.SearchStrategy[date]:
    return st.integers(min_value=0, max_value=(end - start).days).map(lambda n: start + timedelta(days=n))


ONTARIO_POSTAL_CODES = st.from_regex(
    r"[KLMNP][0-9][ABCEGHJ-NPRSTV-Z] [0-9][ABCEGHJ-NPRSTV-Z][0-9]", fullmatch=True
)
TODAYS = st.dates(min_value=date(2001, 1, 1), max_value=date(2099, 12, 31))


def assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node[key]
    node[leaf] = value


def read(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for key in dotted.split("."):
        node = node[key]
    return node


def varied(
    draw: st.DrawFn, base: dict[str, Any], name_paths: list[str], expected: dict[str, Any]
) -> dict[str, Any]:
    """The example with every name re-drawn; `expected` gets each name as it must be stored."""
    raw = copy.deepcopy(base)
    for path in name_paths:
        typed, stored = draw(names())
        assign(raw, path, typed)
        expected[path] = stored
    return raw


@st.composite
def valid_newborn(draw: st.DrawFn) -> tuple[str, date, dict[str, Any], dict[str, Any]]:
    bundle_id = draw(st.sampled_from([b for b in BUNDLE_IDS if b.startswith("newborn")]))
    expected: dict[str, Any] = {}
    names_at = [
        "child.given_names",
        "child.surname",
        "birth_parent.given_names",
        "birth_parent.surname",
        "birth_parent.surname_at_birth",
        "other_parent.given_names",
        "other_parent.surname",
    ]
    raw = varied(draw, example_for(bundle_id), names_at, expected)
    today = draw(TODAYS)
    born = draw(days_between(one_year_before(today), today))
    raw["child"]["date_of_birth"] = born.isoformat()
    for parent in ("birth_parent", "other_parent"):
        raw[parent]["date_of_birth"] = draw(
            days_between(date(1900, 1, 1), born - timedelta(days=1))
        ).isoformat()
    raw["birth_parent"]["sin"], expected["birth_parent.sin"] = draw(sins())
    raw["birth_parent"]["health_number"], expected["birth_parent.health_number"] = draw(health_numbers())
    raw["birth_parent"]["mailing_address"]["postal_code"] = draw(ONTARIO_POSTAL_CODES)
    raw["consents"] = {purpose: draw(st.booleans()) for purpose in raw["consents"]}
    return bundle_id, today, raw, expected


@st.composite
def valid_address_change(draw: st.DrawFn) -> tuple[str, date, dict[str, Any], dict[str, Any]]:
    bundle_id = draw(st.sampled_from([b for b in BUNDLE_IDS if b.startswith("address-change")]))
    expected: dict[str, Any] = {}
    raw = varied(draw, example_for(bundle_id), ["resident.given_names", "resident.surname"], expected)
    today = draw(TODAYS)
    raw["effective_date"] = draw(days_between(add_months(today, -12), add_months(today, 6))).isoformat()
    raw["resident"]["date_of_birth"] = draw(days_between(date(1900, 1, 1), today)).isoformat()
    raw["resident"]["sin"], expected["resident.sin"] = draw(sins())
    raw["resident"]["health_number"], expected["resident.health_number"] = draw(health_numbers())
    old, new = draw(ONTARIO_POSTAL_CODES), draw(ONTARIO_POSTAL_CODES)
    assume(old != new)
    raw["old_address"]["postal_code"] = raw["identity"]["old_postal_code"] = old
    raw["new_address"]["postal_code"] = new
    raw["consents"] = {purpose: draw(st.booleans()) for purpose in raw["consents"]}
    return bundle_id, today, raw, expected


ValidCase = tuple[str, date, dict[str, Any], dict[str, Any]]


@pytest.mark.parametrize("cases", [valid_newborn, valid_address_change], ids=["newborn", "address_change"])
@PROPERTIES
@given(data=st.data())
def test_generated_valid_submissions_are_accepted_and_normalised(
    cases: Callable[[], st.SearchStrategy[ValidCase]], data: st.DataObject
) -> None:
    bundle_id, today, raw, expected = data.draw(cases())
    try:
        validated = validate_submission(definition(bundle_id), raw, today=today)
    except SubmissionInvalid as exc:
        pytest.fail(f"refused: {[(e.path, e.code) for e in exc.errors]}")
    for path, value in expected.items():
        assert read(validated.data, path) == value, path
    assert validated.consents == raw["consents"]
    plan = resolve_plan(definition(bundle_id), validated.data, validated.consents)
    assert plan.bundle_id == bundle_id
