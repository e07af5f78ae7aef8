"""Fixed-width record files as mainframe batch programs read and write them, described by data.

A `FileLayout` (loaded from YAML, see `adapters/layouts/`) says where each field sits in a record,
what it may hold and how it is padded, plus the header and trailer records that frame a batch.
Encoding refuses what a real batch program would garble: a value wider than its field is an error
(never truncated), so is a character the file's encoding cannot represent, unless the layout
declares `transliterate: true` for that field, which folds accents to ASCII on purpose.

Problems name the line, the field and a code, never the value: record contents are personal data.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bundles.models import LocalizedText

Kind = Literal["alpha", "numeric", "date", "code"]
Encoding = Literal["ascii", "latin-1", "cp1252", "cp037", "cp1140"]
"""Single-byte encodings only: a field's width is then the same in characters and in bytes.
`cp037`/`cp1140` are EBCDIC (IBM mainframes); `cp1252` and `latin-1` keep French accents."""

Value = str | int | date
"""A field's value: text for alpha and code fields, int for numeric, `date` for date fields."""

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
DATE_WIDTH = 8


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a record: where (line, field) and what (a stable code), never the value."""

    line: int | None
    field: str | None
    code: str

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        if self.field is not None:
            where.append(self.field)
        return f"{': '.join(where)}: {self.code}" if where else self.code


class LayoutError(ValueError):
    """A record or file does not fit its layout; `problems` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


class FieldSpec(BaseModel):
    """One field of a record.

    Attributes:
        name: The field's name in the layout (lower snake case).
        start: 1-based column where it starts; default right after the previous field.
        width: Columns it occupies.
        kind: `alpha` (text), `numeric` (digits; an int), `date` (YYYYMMDD) or `code` (text
            from `allowed`).
        justify: Where the value sits; default right for numeric fields, left otherwise.
        pad: The fill character; default `0` for numeric fields, a space otherwise. A blank
            (all spaces) numeric or date field, or an all-pad text field, means "absent".
        required: Absent is an error.
        allowed: The values the field may hold (required for `code` fields).
        pattern: A regular expression the whole value must match (e.g. nine digits).
        transliterate: Fold accents to ASCII before encoding (`é` to `e`): a deliberate loss,
            for systems that cannot store them in this field.
        source: Dotted path of the value in the system's request (as an adapter's `FieldMap`
            builds it), for `to_values`/`from_values`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    start: int | None = Field(default=None, ge=1)
    width: int = Field(ge=1, le=4096)
    kind: Kind = "alpha"
    justify: Literal["left", "right"] | None = None
    pad: str | None = Field(default=None, min_length=1, max_length=1)
    required: bool = False
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    transliterate: bool = False
    source: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.kind == "date" and self.width != DATE_WIDTH:
            raise ValueError(f"{self.name}: a date field is {DATE_WIDTH} wide (YYYYMMDD)")
        if self.kind == "code" and not self.allowed:
            raise ValueError(f"{self.name}: a code field lists its allowed values")
        if self.kind == "numeric" and (self.pad_char not in "0 " or self.justify_side != "right"):
            raise ValueError(f"{self.name}: a numeric field is right-justified, padded with zeros or spaces")
        if self.kind in ("numeric", "date") and (self.allowed or self.pattern or self.transliterate):
            raise ValueError(f"{self.name}: allowed, pattern and transliterate are for text fields")
        for value in self.allowed or ():
            if not value or len(value) > self.width:
                raise ValueError(f"{self.name}: allowed value wider than the field (or empty)")
        if self.pattern is not None:
            re.compile(self.pattern)
        return self

    @property
    def justify_side(self) -> Literal["left", "right"]:
        """The effective justification."""
        return self.justify or ("right" if self.kind == "numeric" else "left")

    @property
    def pad_char(self) -> str:
        """The effective pad character."""
        return self.pad or ("0" if self.kind == "numeric" else " ")


class RecordLayout(BaseModel):
    """One kind of record (header, detail or trailer), told apart by its record type in column 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_type: str = Field(min_length=1, max_length=4)
    fields: tuple[FieldSpec, ...]


class FileLayout(BaseModel):
    """A batch file: a header record, detail records, then a trailer record, all of one length.

    The header carries `batch_id` and `created_on`; the trailer carries `record_count`, the number
    of detail records, which a reader checks to notice a truncated file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    encoding: Encoding
    record_length: int = Field(ge=2, le=32_760)
    line_ending: Literal["\n", "\r\n", ""] = Field(
        default="\r\n", description='"" for back-to-back records (fixed blocks, as EBCDIC files often are).'
    )
    header: RecordLayout
    detail: RecordLayout
    trailer: RecordLayout
    codes: dict[str, LocalizedText] = Field(
        default_factory=dict, description="What the system's reason codes mean, in English and French."
    )

    @model_validator(mode="after")
    def _check(self) -> FileLayout:
        types = [self.header.record_type, self.detail.record_type, self.trailer.record_type]
        if len(set(types)) != len(types) or len({len(t) for t in types}) != 1:
            raise ValueError("header, detail and trailer need distinct record types of one width")
        for part in (self.header, self.detail, self.trailer):
            self._spans(part)  # raises on overlap or overflow
        header = {spec.name: spec for spec in self.header.fields}
        trailer = {spec.name: spec for spec in self.trailer.fields}
        if "batch_id" not in header or header.get("created_on") is None:
            raise ValueError("the header needs batch_id and created_on fields")
        if header["created_on"].kind != "date" or trailer.get("record_count") is None:
            raise ValueError("created_on must be a date and the trailer needs a record_count")
        if trailer["record_count"].kind != "numeric":
            raise ValueError("record_count must be numeric")
        for part in (self.header, self.detail, self.trailer):
            for text in part.record_type, self.line_ending:
                text.encode(self.python_encoding)
        return self

    @property
    def python_encoding(self) -> str:
        """The codec name Python knows the encoding by."""
        return self.encoding

    @property
    def type_width(self) -> int:
        """Width of the record type at column 1."""
        return len(self.detail.record_type)

    def _spans(self, part: RecordLayout) -> list[tuple[FieldSpec, int, int]]:
        """Each field with its 0-based [start, end) columns, checked against overlap and overflow."""
        spans: list[tuple[FieldSpec, int, int]] = []
        position = len(part.record_type)
        for spec in part.fields:
            start = spec.start - 1 if spec.start is not None else position
            end = start + spec.width
            if start < position:
                raise ValueError(f"{part.record_type}.{spec.name} overlaps the field before it")
            if end > self.record_length:
                raise ValueError(f"{part.record_type}.{spec.name} ends past the record length")
            spans.append((spec, start, end))
            position = end
        names = [spec.name for spec in part.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{part.record_type}: field names repeat")
        return spans

    @cached_property
    def spans(self) -> dict[str, list[tuple[FieldSpec, int, int]]]:
        """Field spans by record type."""
        return {part.record_type: self._spans(part) for part in (self.header, self.detail, self.trailer)}

    # ------------------------------------------------------------------ records

    def encode_record(
        self, part: RecordLayout, values: Mapping[str, Value | None], line: int | None = None
    ) -> str:
        """One record as text of exactly `record_length` characters.

        Raises:
            LayoutError: Every field that does not fit (unknown names included).
        """
        problems = [Problem(line, name, "unknown_field") for name in values if not _has(part, name)]
        record = [" "] * self.record_length
        record[: self.type_width] = part.record_type
        for spec, start, end in self.spans[part.record_type]:
            text, problem = self._encode_field(spec, values.get(spec.name))
            if problem is not None:
                problems.append(Problem(line, spec.name, problem))
                continue
            record[start:end] = text
        if problems:
            raise LayoutError(problems)
        return "".join(record)

    def _encode_field(self, spec: FieldSpec, value: Value | None) -> tuple[str, str | None]:
        if value is None or value == "":
            return " " * spec.width, ("required" if spec.required else None)
        if spec.kind == "numeric":
            return self._encode_numeric(spec, value)
        if spec.kind == "date":
            return self._encode_date(spec, value)
        if not isinstance(value, str):
            return "", "wrong_type"
        if spec.transliterate:
            value = fold_accents(value)
        problem = self.text_problem(spec, value)
        if problem is not None:
            return "", problem
        return _justify(spec, value), None

    def text_problem(self, spec: FieldSpec, value: str) -> str | None:
        """Why a text value cannot go into its field, or None."""
        padded_edge = value.endswith if spec.justify_side == "left" else value.startswith
        checks = (
            ("control_character", any(unicodedata.category(char).startswith("C") for char in value)),
            ("blank", not value.strip()),
            ("too_wide", len(value) > spec.width),
            ("unrepresentable", not _encodable(value, self.python_encoding)),
            # It would read back shorter: padding cannot be told from the value's own characters.
            ("pad_at_edge", padded_edge(spec.pad_char)),
            ("not_allowed", spec.allowed is not None and value not in spec.allowed),
            (
                "pattern_mismatch",
                spec.pattern is not None and not re.fullmatch(spec.pattern, value, re.ASCII),
            ),
        )
        return next((code for code, failed in checks if failed), None)

    @staticmethod
    def _encode_numeric(spec: FieldSpec, value: Value) -> tuple[str, str | None]:
        if isinstance(value, bool) or not isinstance(value, int | str):
            return "", "wrong_type"
        text = str(value)
        if not (text.isascii() and text.isdigit()):
            return "", "not_numeric"
        if len(text) > spec.width:
            return "", "too_wide"
        return _justify(spec, text), None

    @staticmethod
    def _encode_date(spec: FieldSpec, value: Value) -> tuple[str, str | None]:
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                return "", "bad_date"
        if not isinstance(value, date):
            return "", "wrong_type"
        return f"{value.year:04d}{value.month:02d}{value.day:02d}", None

    def decode_record(
        self, part: RecordLayout, text: str, line: int
    ) -> tuple[dict[str, Value | None], list[Problem]]:
        """The values of one record's fields; a field that cannot be read is a problem instead.

        Every readable field is returned even when others are not, so that a reader can still
        tell which request a damaged reply answers.
        """
        values: dict[str, Value | None] = {}
        problems: list[Problem] = []
        for spec, start, end in self.spans[part.record_type]:
            value, code = self._decode_field(spec, text[start:end])
            if code is not None:
                problems.append(Problem(line, spec.name, code))
            else:
                values[spec.name] = value
        return values, problems

    def _decode_field(self, spec: FieldSpec, raw: str) -> tuple[Value | None, str | None]:
        if spec.kind in ("numeric", "date"):
            return _decode_number(spec, raw.strip(" "))
        # Absent is all spaces, whatever the pad: a blank field means "nothing" to every reader.
        value = raw.rstrip(spec.pad_char) if spec.justify_side == "left" else raw.lstrip(spec.pad_char)
        if not value or not raw.strip(" "):
            return None, ("required" if spec.required else None)
        problem = self.text_problem(spec, value)
        return (None, problem) if problem is not None else (value, None)

    # ------------------------------------------------------------------ files

    def encode_file(
        self,
        batch_id: str,
        created_on: date,
        records: Sequence[Mapping[str, Value | None]],
        header: Mapping[str, Value | None] | None = None,
    ) -> bytes:
        """A whole batch: header, one detail record per item, trailer.

        Args:
            batch_id: The header's batch id.
            created_on: The header's date.
            records: The detail records' values.
            header: Other header fields (e.g. a file type).

        Raises:
            LayoutError: Every problem of every record (detail lines numbered from 2).
        """
        problems: list[Problem] = []
        lines: list[str] = []
        parts: list[tuple[RecordLayout, Mapping[str, Value | None]]] = [
            (self.header, {**(header or {}), "batch_id": batch_id, "created_on": created_on}),
            *((self.detail, record) for record in records),
            (self.trailer, {"record_count": len(records)}),
        ]
        for number, (part, values) in enumerate(parts, start=1):
            try:
                lines.append(self.encode_record(part, values, number))
            except LayoutError as exc:
                problems.extend(exc.problems)
        if problems:
            raise LayoutError(problems)
        ending = self.line_ending
        return "".join(line + ending for line in lines).encode(self.python_encoding)

    def split_records(self, data: bytes) -> list[bytes]:
        """The raw records of a file, by line ending or (without one) by record length."""
        if not self.line_ending:
            size = self.record_length
            return [data[i : i + size] for i in range(0, len(data), size)]
        ending = self.line_ending.encode(self.python_encoding)
        records = data.split(ending)
        if records and records[-1] == b"":
            records.pop()
        return records

    def decode_file(self, data: bytes) -> DecodedFile:
        """Read a batch file; damaged records and a wrong trailer count become problems, not errors."""
        decoded = DecodedFile()
        trailer_count: int | None = None
        seen_trailer = False
        for number, raw in enumerate(self.split_records(data), start=1):
            text = self._record_text(raw, number, decoded)
            if text is None:
                continue
            record_type = text[: self.type_width]
            if seen_trailer:
                decoded.problems.append(Problem(number, None, "record_after_trailer"))
            elif record_type == self.header.record_type:
                self._read_header(text, number, decoded)
            elif record_type == self.detail.record_type:
                values, problems = self.decode_record(self.detail, text, number)
                decoded.records.append(DecodedRecord(number, values, tuple(problems)))
            elif record_type == self.trailer.record_type:
                seen_trailer = True
                values, problems = self.decode_record(self.trailer, text, number)
                decoded.problems.extend(problems)
                count = values.get("record_count")
                trailer_count = count if isinstance(count, int) else None
            else:
                decoded.problems.append(Problem(number, None, "unknown_record_type"))
        if decoded.batch_id is None:
            decoded.problems.append(Problem(None, "batch_id", "missing_header"))
        if not seen_trailer:
            decoded.problems.append(Problem(None, "record_count", "missing_trailer"))
        elif trailer_count is not None and trailer_count != len(decoded.records):
            decoded.problems.append(Problem(None, "record_count", "count_mismatch"))
        return decoded

    def _record_text(self, raw: bytes, number: int, decoded: DecodedFile) -> str | None:
        if len(raw) != self.record_length:
            decoded.problems.append(Problem(number, None, "wrong_record_length"))
            return None
        try:
            return raw.decode(self.python_encoding)
        except UnicodeDecodeError:
            decoded.problems.append(Problem(number, None, "undecodable"))
            return None

    def _read_header(self, text: str, number: int, decoded: DecodedFile) -> None:
        values, problems = self.decode_record(self.header, text, number)
        decoded.problems.extend(problems)
        if number != 1:
            decoded.problems.append(Problem(number, None, "misplaced_header"))
        elif isinstance(values.get("batch_id"), str):
            decoded.batch_id = str(values["batch_id"])

    # ------------------------------------------------------------------ request mapping

    def to_values(self, request: Mapping[str, Any]) -> tuple[dict[str, Value | None], list[str]]:
        """Detail-record values from a system request (nested dict), by each field's `source`.

        Returns:
            The values, and the leaf paths of the request no field takes (names only).
        """
        values: dict[str, Value | None] = {}
        taken: set[str] = set()
        for spec in self.detail.fields:
            if spec.source is None:
                continue
            found = _get(request, spec.source)
            if found is not None:
                values[spec.name] = found
                taken.add(spec.source)
        unused = [path for path in _leaves(request) if path not in taken]
        return values, unused

    def from_values(self, values: Mapping[str, Value | None]) -> dict[str, Any]:
        """The system request (nested dict, JSON values) a detail record carries, by `source`."""
        request: dict[str, Any] = {}
        for spec in self.detail.fields:
            value = values.get(spec.name)
            if spec.source is None or value is None:
                continue
            target = request
            *parents, leaf = spec.source.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value.isoformat() if isinstance(value, date) else value
        return request

    def message(self, code: str | None) -> LocalizedText | None:
        """What a reason code means, from the layout's code table."""
        return self.codes.get(code) if code is not None else None


@dataclass
class DecodedRecord:
    """A detail record read from a file: its line number, readable values and problems."""

    line: int
    values: dict[str, Value | None]
    problems: tuple[Problem, ...] = ()


@dataclass
class DecodedFile:
    """What a batch file held: its batch id, detail records, and file-level problems."""

    batch_id: str | None = None
    records: list[DecodedRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def fold_accents(value: str) -> str:
    """`é` as `e`, `Œ` as `OE`: letters kept, diacritics dropped (for fields declared `transliterate`)."""
    value = value.translate(_LIGATURES)
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"})


def _encodable(value: str, encoding: str) -> bool:
    try:
        value.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _decode_number(spec: FieldSpec, raw: str) -> tuple[Value | None, str | None]:
    """A numeric or date field, blanks (spaces) stripped; blank means absent."""
    if not raw:
        return None, ("required" if spec.required else None)
    if not (raw.isascii() and raw.isdigit()):
        return None, ("not_numeric" if spec.kind == "numeric" else "bad_date")
    if spec.kind == "numeric":
        return int(raw), None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8])), None
    except ValueError:
        return None, "bad_date"


def _justify(spec: FieldSpec, text: str) -> str:
    if spec.justify_side == "left":
        return text.ljust(spec.width, spec.pad_char)
    return text.rjust(spec.width, spec.pad_char)


def _has(part: RecordLayout, name: str) -> bool:
    return any(spec.name == name for spec in part.fields)


def _get(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _leaves(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            paths.extend(_leaves(value, f"{prefix}{key}."))
        else:
            paths.append(f"{prefix}{key}")
    return paths


LAYOUTS_DIR = Path(__file__).parent / "layouts"


def load_layout(name: str) -> FileLayout:
    """A layout shipped in `adapters/layouts/<name>.yaml`.

    Raises:
        pydantic.ValidationError: The layout is inconsistent (overlapping fields, a date that is
            not 8 wide, a code field without allowed values...).
    """
    data = yaml.safe_load((LAYOUTS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return FileLayout.model_validate(data)
