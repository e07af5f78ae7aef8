"""The fixed-width codec: any valid record survives a round trip; what does not fit is refused."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fixedwidth import FieldSpec, FileLayout, LayoutError, Problem, Value, fold_accents, load_layout

REQUEST = load_layout("esdc_sin_request")
REPLY = load_layout("esdc_sin_reply")


def layout(encoding: str = "cp1252", line_ending: str = "\r\n", **detail: Any) -> FileLayout:
    """A small layout with one field of every kind and justification."""
    fields = detail.get(
        "fields",
        [
            {"name": "key", "width": 20, "required": True},
            {"name": "name", "width": 12},
            {"name": "amount", "kind": "numeric", "width": 7},
            {"name": "spaced", "kind": "numeric", "width": 4, "pad": " "},
            {"name": "born", "kind": "date", "width": 8},
            {"name": "sex", "kind": "code", "width": 1, "allowed": ["F", "M", "X"]},
            {"name": "right", "width": 6, "justify": "right", "pad": "*"},
            {"name": "postal", "width": 6, "pattern": r"[A-Z][0-9][A-Z][0-9][A-Z][0-9]", "start": 70},
        ],
    )
    return FileLayout.model_validate(
        {
            "name": "test",
            "encoding": encoding,
            "record_length": 90,
            "line_ending": line_ending,
            "header": {
                "record_type": "H",
                "fields": [
                    {"name": "batch_id", "width": 20},
                    {"name": "created_on", "kind": "date", "width": 8},
                ],
            },
            "detail": {"record_type": "D", "fields": fields},
            "trailer": {
                "record_type": "T",
                "fields": [{"name": "record_count", "kind": "numeric", "width": 6}],
            },
        }
    )


def encodable_text(spec: FieldSpec, encoding: str) -> st.SearchStrategy[str]:
    """Text a field may hold: representable, no control characters, no padding at its padded edge."""

    def fits(value: str) -> bool:
        try:
            value.encode(encoding)
        except UnicodeEncodeError:
            return False
        edge = value[-1] if spec.justify_side == "left" else value[0]
        return edge != spec.pad_char and bool(value.strip())

    alphabet = st.characters(codec=encoding, exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn"))
    if spec.transliterate:
        # Folding is lossy by design: only text it leaves unchanged round-trips.
        alphabet = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    return st.text(alphabet, min_size=1, max_size=spec.width).filter(fits)


def value_of(spec: FieldSpec, encoding: str) -> st.SearchStrategy[Value]:
    if spec.kind == "numeric":
        return st.integers(min_value=0, max_value=10**spec.width - 1)
    if spec.kind == "date":
        return st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
    if spec.allowed is not None:
        return st.sampled_from(spec.allowed)
    if spec.pattern is not None:
        return st.from_regex(spec.pattern, fullmatch=True).filter(lambda v: 0 < len(v) <= spec.width)
    return encodable_text(spec, encoding)


def records(target: FileLayout) -> st.SearchStrategy[dict[str, Value | None]]:
    """Any valid detail record of a layout: every field, absent ones as None."""
    strategies: dict[str, st.SearchStrategy[Value | None]] = {}
    for spec in target.detail.fields:
        value = value_of(spec, target.encoding)
        strategies[spec.name] = value if spec.required else st.none() | value
    return st.fixed_dictionaries(strategies)


LAYOUTS = {
    "cp1252": layout(),
    "latin-1": layout("latin-1"),
    "ebcdic": layout("cp037", line_ending=""),
    "esdc_sin_request": REQUEST,
    "esdc_sin_reply": REPLY,
}


@pytest.mark.parametrize("name", LAYOUTS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_valid_record_round_trips(name: str, data: st.DataObject) -> None:
    target = LAYOUTS[name]
    record = data.draw(records(target))
    text = target.encode_record(target.detail, record)
    assert len(text) == target.record_length
    values, problems = target.decode_record(target.detail, text, line=2)
    assert problems == []
    assert values == record


@pytest.mark.parametrize("name", LAYOUTS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_any_valid_file_round_trips_with_its_header_and_count(name: str, data: st.DataObject) -> None:
    target = LAYOUTS[name]
    batch = data.draw(st.lists(records(target), max_size=4))
    created = data.draw(st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 1, 1)))
    encoded = target.encode_file("BATCH-1", created, batch)
    decoded = target.decode_file(encoded)
    assert decoded.problems == []
    assert decoded.batch_id == "BATCH-1"
    assert [r.values for r in decoded.records] == batch
    assert [r.line for r in decoded.records] == list(range(2, 2 + len(batch)))


@settings(max_examples=60, deadline=None)
@given(
    extra=st.text(
        st.characters(codec="cp1252", exclude_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=30
    )
)
def test_a_value_wider_than_its_field_is_refused_never_truncated(extra: str) -> None:
    target = LAYOUTS["cp1252"]
    value = "Z" * 12 + extra
    with pytest.raises(LayoutError) as caught:
        target.encode_record(target.detail, {"key": "k", "name": value})
    assert caught.value.problems == (Problem(None, "name", "too_wide"),)
    assert value not in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(char=st.characters(min_codepoint=0x100, exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn")))
def test_characters_the_encoding_cannot_represent_are_refused(char: str) -> None:
    target = LAYOUTS["latin-1"]
    with pytest.raises(LayoutError) as caught:
        target.encode_record(target.detail, {"key": "k", "name": f"A{char}"})
    assert caught.value.problems == (Problem(None, "name", "unrepresentable"),)


@settings(max_examples=40, deadline=None)
@given(value=st.integers(min_value=10**7, max_value=10**12))
def test_a_number_with_too_many_digits_is_refused(value: int) -> None:
    target = LAYOUTS["cp1252"]
    with pytest.raises(LayoutError) as caught:
        target.encode_record(target.detail, {"key": "k", "amount": value})
    assert caught.value.problems == (Problem(None, "amount", "too_wide"),)


def test_accents_are_kept_where_the_encoding_has_them_and_folded_only_where_declared() -> None:
    record = {
        "correlation_id": "b1:sin:submit",
        "child_last_name": "Bélanger-Côté",
        "child_sex": "F",
        "child_birth_date": "2026-01-31",
        "mailing_city": "Montréal",
        "mailing_address_line_1": "12 rue de l'Œuvre",
    }
    text = REQUEST.encode_record(REQUEST.detail, record)
    values, problems = REQUEST.decode_record(REQUEST.detail, text, 2)
    assert problems == []
    assert values["child_last_name"] == "Bélanger-Côté"
    assert values["mailing_city"] == "Montreal"
    assert values["mailing_address_line_1"] == "12 rue de l'OEuvre"
    assert values["child_birth_date"] == date(2026, 1, 31)
    assert fold_accents("Zoë-Chloé") == "Zoe-Chloe"
    # EBCDIC (cp037) has French accents too; a Polish Ł fits neither.
    ebcdic = LAYOUTS["ebcdic"]
    assert (
        ebcdic.decode_record(ebcdic.detail, ebcdic.encode_record(ebcdic.detail, {"key": "é"}), 2)[0]["key"]
        == "é"
    )
    with pytest.raises(LayoutError, match="child_last_name: unrepresentable"):
        REQUEST.encode_record(REQUEST.detail, {**record, "child_last_name": "Łukasz"})


def test_every_problem_of_a_record_is_reported_by_field_and_code_never_by_value() -> None:
    with pytest.raises(LayoutError) as caught:
        LAYOUTS["cp1252"].encode_record(
            LAYOUTS["cp1252"].detail,
            {
                "name": "Tremblay ",
                "amount": "12a",
                "born": "2026-02-30",
                "sex": "Q",
                "postal": "K1A-0B",
                "x": 1,
            },
            line=4,
        )
    assert {(p.field, p.code) for p in caught.value.problems} == {
        ("x", "unknown_field"),
        ("key", "required"),
        ("name", "pad_at_edge"),
        ("amount", "not_numeric"),
        ("born", "bad_date"),
        ("sex", "not_allowed"),
        ("postal", "pattern_mismatch"),
    }
    message = str(caught.value)
    assert "line 4: key: required" in message
    for secret in ("Tremblay", "K1A", "2026-02-30"):
        assert secret not in message


def test_decoding_checks_record_length_dates_and_the_trailer_count() -> None:
    target = LAYOUTS["cp1252"]
    good = target.encode_file("B", date(2026, 1, 1), [{"key": "one"}, {"key": "two"}]).decode("cp1252")
    lines = good.split("\r\n")[:-1]
    born = target.spans["D"][4]
    lines[1] = lines[1][: born[1]] + "20261340" + lines[1][born[2] :]
    lines[2] = lines[2][:-1]  # one character short
    damaged = "\r\n".join(lines) + "\r\n"
    decoded = target.decode_file(damaged.encode("cp1252"))
    assert [str(p) for p in decoded.problems] == [
        "line 3: wrong_record_length",
        "record_count: count_mismatch",
    ]
    (record,) = decoded.records
    assert record.problems == (Problem(2, "born", "bad_date"),)
    assert record.values["key"] == "one"  # the rest of a damaged record is still readable

    truncated = target.decode_file(good.encode("cp1252")[: target.record_length + 2])
    assert [str(p) for p in truncated.problems] == ["record_count: missing_trailer"]
    assert str(target.decode_file(b"\x81" * 90).problems[0]) == "line 1: undecodable"


def test_layouts_are_checked_when_loaded() -> None:
    overlapping = [{"name": "a", "width": 10}, {"name": "b", "width": 5, "start": 5}]
    with pytest.raises(ValueError, match="overlaps"):
        layout(fields=overlapping)
    with pytest.raises(ValueError, match="past the record length"):
        layout(fields=[{"name": "a", "width": 95}])
    with pytest.raises(ValueError, match="8 wide"):
        layout(fields=[{"name": "a", "kind": "date", "width": 6}])
    with pytest.raises(ValueError, match="allowed values"):
        layout(fields=[{"name": "a", "kind": "code", "width": 2}])
    with pytest.raises(ValueError, match="right-justified"):
        layout(fields=[{"name": "a", "kind": "numeric", "width": 4, "justify": "left"}])


def test_request_values_follow_each_fields_source() -> None:
    request = {"child": {"last_name": "Roy", "birth_date": "2026-01-31", "sex": "M"}, "extra": {"x": 1}}
    values, unused = REQUEST.to_values(request)
    assert values == {"child_last_name": "Roy", "child_birth_date": "2026-01-31", "child_sex": "M"}
    assert unused == ["extra.x"]
    decoded, _ = REQUEST.decode_record(
        REQUEST.detail, REQUEST.encode_record(REQUEST.detail, {**values, "correlation_id": "k"}), 2
    )
    assert REQUEST.from_values(decoded) == {k: v for k, v in request.items() if k != "extra"}


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_any_bytes_decode_to_records_and_problems_never_to_an_exception(data: bytes) -> None:
    # A reply file is whatever the legacy system wrote, or a damaged copy of it.
    for file_layout in (REPLY, layout(), layout(line_ending="")):
        decoded = file_layout.decode_file(data)
        assert decoded.problems or decoded.records or data == b""


@settings(max_examples=100, deadline=None)
@given(
    before=st.text(alphabet="ABC", max_size=3),
    control=st.sampled_from(["\r", "\n", "\x00", "\x85", "\u200b", "\x1b", "\t"]),
)
def test_a_value_holding_a_line_break_or_control_character_is_refused(before: str, control: str) -> None:
    # A line break inside a value would end the record early and let a value write a record of its own.
    with pytest.raises(LayoutError) as refused:
        layout().encode_record(layout().detail, {"key": "K1", "name": before + control}, 2)
    assert [p.field for p in refused.value.problems] == ["name"]


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(allow_nan=True)))
def test_a_numeric_field_refuses_negative_boolean_and_fractional_values(value: Any) -> None:
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return  # a whole non-negative float is a fair number of units
    with pytest.raises(LayoutError):
        layout().encode_record(layout().detail, {"key": "K1", "amount": value}, 2)


@settings(max_examples=100, deadline=None)
@given(
    batch_id=st.text(
        alphabet=st.characters(codec="cp1252", categories=["L", "N", "P"]), min_size=1, max_size=20
    )
)
def test_any_representable_batch_id_round_trips(batch_id: str) -> None:
    file_layout = layout()
    try:
        data = file_layout.encode_file(batch_id, date(2026, 12, 6), [{"key": "K1"}])
    except LayoutError:
        return  # e.g. a value the field's rules refuse: refusing is the other honest outcome
    assert file_layout.decode_file(data).batch_id == batch_id
