"""Read a record's value as JSON and turn validation errors into dead-letter reasons.

Reasons name a code and a path, never a value: pydantic's own messages sometimes quote the
input, so they are replaced by fixed texts here. A path can hold keys the sender chose (an
unexpected field, a consent key), which could be anything, even a name or a SIN: any segment
that is not a plain identifier or an index is replaced by `?` (`bundles.validators.safe_path`).
A key of digits only is replaced too: it passes as an identifier, but it could be a SIN, a
health number or a birth date, and no field is named by digits.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from temporalio.service import RPCError

from bundles.validators import safe_path
from infra.streams.models import DlqReason

MAX_INDEX_DIGITS = 4
"""In an already dotted path a list index is digits too: a short run of digits is kept as one."""

_MESSAGES = {
    "missing": "This field is required.",
    "extra_forbidden": "This field is not part of the message.",
    "literal_error": "This value is not one of the allowed values.",
    "string_pattern_mismatch": "This value does not have the expected form.",
    "string_too_short": "This value is too short.",
    "string_too_long": "This value is too long.",
    "string_type": "This field must be a string.",
    "dict_type": "This field must be a JSON object.",
    "model_type": "This field must be a JSON object.",
    "model_attributes_type": "This field must be a JSON object.",
    "uuid_parsing": "This field must be a UUID.",
    "uuid_type": "This field must be a UUID.",
}


class Unreadable(Exception):  # noqa: N818 - a state of a record, named like one
    """A record that cannot be read; `reasons` say why."""

    def __init__(self, reasons: list[DlqReason]) -> None:
        super().__init__(", ".join(f"{r.code} at {r.path or '<record>'}" for r in reasons))
        self.reasons = reasons


def reason(code: str, message: str, path: str = "") -> DlqReason:
    """A dead-letter reason."""
    return DlqReason(code=code, path=path, message=message)


def read_json_object(value: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object.

    Raises:
        Unreadable: empty value, invalid UTF-8, malformed JSON, or not an object.
    """
    if not value:
        raise Unreadable([reason("empty_record", "The record has no value.")])
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable([reason("invalid_utf8", "The record is not valid UTF-8.")]) from None
    try:
        loaded = json.loads(text)
    except (ValueError, RecursionError):
        raise Unreadable([reason("malformed_json", "The record is not valid JSON.")]) from None
    if not isinstance(loaded, dict):
        raise Unreadable([reason("not_an_object", "The record must be a JSON object.")])
    return loaded


def validation_reasons(exc: ValidationError, code: str, prefix: str = "") -> list[DlqReason]:
    """One reason per pydantic error, with a fixed message naming the error type."""
    reasons = []
    for error in exc.errors(include_input=False, include_url=False):
        path = safe_path((*((prefix,) if prefix else ()), *error["loc"]))
        kind = str(error["type"])
        text = _MESSAGES.get(kind, f"This value is not valid ({kind}).")
        reasons.append(reason(code, text, path))
    return reasons


def safe_dotted_path(path: str) -> str:
    """An already dotted path (`birth_parent.sin`, `children.0.name`), unsafe segments replaced.

    A consent key is one segment even when it holds dots (`consents.<key>`); elsewhere a dot in
    a sender's key splits it, and each piece must then be an identifier to be kept. A piece of
    at most `MAX_INDEX_DIGITS` digits is a list index; a longer one is replaced.
    """
    if not path:
        return path
    head, dot, rest = path.partition(".")
    if head == "consents" and dot:
        return safe_path((head, rest))
    pieces = path.split(".")
    return safe_path(
        int(p) if p.isascii() and p.isdigit() and len(p) <= MAX_INDEX_DIGITS else p for p in pieces
    )


def rejected_reason(exc: RPCError) -> DlqReason:
    """The reason for a record whose request Temporal refused: the status name, never its message."""
    return reason(
        "rejected_by_temporal", f"Temporal refused the request for this record ({exc.status.name})."
    )
