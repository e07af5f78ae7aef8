"""Personal data on Kafka travels sealed: the codec of submission envelopes, birth notices and dead letters.

A sealed value is what `infra.crypto.Keyring.seal` makes: `tlc1.<key id>.<base64url(nonce ||
ciphertext || tag)>`, AES-256-GCM under the deployment's keyring. Its *purpose* is authenticated
with it, and each purpose here names the readable fields of the record that carries it, so a
sealed value copied into another record (another submission id, bundle, notice, topic position)
does not open there. Routing fields stay readable: a record can be routed, keyed and
dead-lettered without the key, and nothing personal is in them.

Where the settings have no keyring (encryption off, never in production), the cleartext formats
are read as before, and a sealed value cannot be opened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from bundles.notices import MAX_NOTICE_BYTES, NOTICE_SCHEMA, BirthNotice, NoticeInvalid, Reason, parse_notice
from bundles.validators import safe_path
from infra.crypto import (
    DecryptionError,
    Keyring,
    UnknownKeyError,
    displayable_key_id,
    is_sealed,
    sealed_associated_data,
    sealed_key_id,
)
from infra.streams.decoding import Unreadable, reason
from infra.streams.models import DlqReason, SubmissionEnvelope

SUBMISSION_PURPOSE = "tellonce.submission/v1"
NOTICE_PURPOSE = "tellonce.birth-notice/v1"
DEAD_LETTER_PURPOSE = "tellonce.dead-letter/v1"

NOTICE_PERSONAL_FIELDS = frozenset({"issued_at", "child", "birth_parent"})
"""The parts of a birth notice that travel sealed, in its `personal` field."""
NOTICE_READABLE_FIELDS = frozenset({"schema", "notice_id", "facility"})

NOT_ENCRYPTED = "not_encrypted"
UNDECRYPTABLE = "undecryptable"
_NOT_ENCRYPTED_MESSAGE = (
    "Personal data must be sealed with the deployment's key (docs/streams.md); this value is in the clear."
)
_NO_KEYRING_MESSAGE = "This deployment has encryption off: it cannot open sealed values."


def submission_purpose(submission_id: uuid.UUID, bundle_id: str, channel: str) -> str:
    """The purpose a submission is sealed for: `tellonce.submission/v1:<id>:<bundle>:<channel>`.

    The submission id in its canonical form (lower-case, hyphenated), whatever form the
    envelope wrote it in.
    """
    return f"{SUBMISSION_PURPOSE}:{submission_id}:{bundle_id}:{channel}"


def notice_purpose(notice_id: str, facility_id: str) -> str:
    """What a notice's personal part is sealed for: `tellonce.birth-notice/v1:<notice id>:<facility id>`."""
    return f"{NOTICE_PURPOSE}:{notice_id}:{facility_id}"


def dead_letter_purpose(topic: str, partition: int, offset: int) -> str:
    """The purpose of a sealed dead letter: the original record's position (from its DLQ headers)."""
    return f"{DEAD_LETTER_PURPOSE}:{topic}:{partition}:{offset}"


def dead_letter_associated_data(kid: str, topic: str, partition: int, offset: int) -> bytes:
    """What a dead letter's binary seal authenticates: `tlc1|<key id>|<purpose>`, as a sealed value's.

    A dead letter's value is sealed in binary (`Keyring.encrypt`), not as text: the text form
    grows a value by a third, and a record that filled its topic's size limit must still fit in
    the DLQ.
    """
    return sealed_associated_data(kid, dead_letter_purpose(topic, partition, offset))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# --- what went wrong, for the dead-letter reasons -------------------------------------------------


def shown_key_id(token: str) -> str:
    """The key id a token names, for an operator; `?` when it could hide personal data.

    A key id comes from the record, so the sender chose it (see `displayable_key_id`).
    """
    try:
        kid = sealed_key_id(token)
    except DecryptionError:
        return "?"
    return displayable_key_id(kid)


def not_encrypted(path: str) -> DlqReason:
    """The reason for personal data sent in the clear to a deployment that has a keyring."""
    return reason(NOT_ENCRYPTED, _NOT_ENCRYPTED_MESSAGE, path)


def undecryptable(kid: str | None, path: str, *, unknown_key: bool = False) -> DlqReason:
    """The reason for a sealed value that does not open: names its key id, nothing else.

    Args:
        kid: The key id the value names (`shown_key_id`); None when there is no keyring to open it.
        path: Where the sealed value is.
        unknown_key: The keyring does not hold that key (else the value is damaged, or was
            sealed for another record).
    """
    if kid is None:
        return reason(UNDECRYPTABLE, _NO_KEYRING_MESSAGE, path)
    if unknown_key:
        text = f"Sealed with key {kid}, which this deployment's keyring does not hold."
    else:
        text = f"Sealed with key {kid}, but it does not open here: damaged, or sealed for another record."
    return reason(UNDECRYPTABLE, text, path)


def open_value(keyring: Keyring, token: str, purpose: str, path: str) -> bytes:
    """Open a sealed value, or raise `Unreadable` with an `undecryptable` reason.

    Raises:
        Unreadable: unknown key, damaged value, or sealed for another purpose.
    """
    try:
        return keyring.open_sealed(token, purpose)
    except (UnknownKeyError, DecryptionError) as exc:
        found = undecryptable(shown_key_id(token), path, unknown_key=isinstance(exc, UnknownKeyError))
        raise Unreadable([found]) from None


# --- submissions -----------------------------------------------------------------------------------


def seal_submission(keyring: Keyring, envelope: Mapping[str, Any]) -> dict[str, Any]:
    """A cleartext envelope with its `submission` sealed: what a partner sends.

    Args:
        keyring: The deployment's keyring (its active key seals).
        envelope: `{"schema", "submission_id", "bundle_id", "channel", "submission": {...}}`.
    """
    purpose = submission_purpose(
        uuid.UUID(str(envelope["submission_id"])), str(envelope["bundle_id"]), str(envelope["channel"])
    )
    return {**envelope, "submission": keyring.seal(_json_bytes(envelope["submission"]), purpose)}


def open_submission(envelope: SubmissionEnvelope, keyring: Keyring | None) -> dict[str, Any]:
    """The submission an envelope carries, opened when sealed.

    Raises:
        Unreadable: `not_encrypted` (cleartext where a keyring is set), `undecryptable` (a sealed
            value that does not open, or no keyring to open it), or a sealed value that is not a
            JSON object (`malformed_json`, `not_an_object`).
    """
    value = envelope.submission
    if keyring is None:
        if is_sealed(value):
            raise Unreadable([undecryptable(None, "submission")])
        if not isinstance(value, dict):
            raise Unreadable([reason("envelope_invalid", "This field must be a JSON object.", "submission")])
        return value
    if not is_sealed(value):
        raise Unreadable([not_encrypted("submission")])
    purpose = submission_purpose(envelope.submission_id, envelope.bundle_id, envelope.channel)
    return _json_object(open_value(keyring, value, purpose, "submission"), "submission")


def _json_object(plaintext: bytes, path: str) -> dict[str, Any]:
    try:
        loaded = json.loads(plaintext)
    except (ValueError, RecursionError):
        raise Unreadable([reason("malformed_json", "The sealed value is not UTF-8 JSON.", path)]) from None
    if not isinstance(loaded, dict):
        raise Unreadable([reason("not_an_object", "The sealed value must be a JSON object.", path)])
    return loaded


# --- birth notices ---------------------------------------------------------------------------------


def seal_notice(keyring: Keyring, notice: Mapping[str, Any]) -> dict[str, Any]:
    """A cleartext notice with `issued_at`, `child` and `birth_parent` sealed in `personal`."""
    personal = {name: value for name, value in notice.items() if name in NOTICE_PERSONAL_FIELDS}
    readable = {name: value for name, value in notice.items() if name not in NOTICE_PERSONAL_FIELDS}
    purpose = notice_purpose(str(notice["notice_id"]), str(notice["facility"]["id"]))
    return {**readable, "personal": keyring.seal(_json_bytes(personal), purpose)}


def _notice_reason(found: DlqReason) -> NoticeInvalid:
    return NoticeInvalid([Reason(code=found.code, path=found.path, message=found.message)])


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def read_notice(raw: bytes, keyring: Keyring | None) -> BirthNotice:
    """The notice a record carries, its personal part opened when sealed.

    Raises:
        NoticeInvalid: the reasons of `parse_notice`, plus `not_encrypted` (a personal field in
            the clear where a keyring is set), `undecryptable`, and `extra_forbidden` for a sealed
            part holding fields other than the personal ones.
    """
    if len(raw) > MAX_NOTICE_BYTES:
        return parse_notice(raw)  # refuses it as too large, unread
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return parse_notice(raw)  # refuses it with the reason of its own checks
    if not isinstance(data, dict) or data.get("schema") != NOTICE_SCHEMA:
        return parse_notice(raw)
    sealed = data.get("personal")
    if keyring is None:
        if "personal" in data:
            raise _notice_reason(undecryptable(None, "personal"))
        return parse_notice(raw)
    if NOTICE_PERSONAL_FIELDS & set(data) or ("personal" in data and not is_sealed(sealed)):
        raise _notice_reason(not_encrypted("personal" if "personal" in data else ""))
    if not isinstance(sealed, str):
        raise _notice_reason(reason("missing", "This field is required.", "personal"))
    facility = data.get("facility")
    purpose = notice_purpose(
        _text(data.get("notice_id")), _text(facility.get("id")) if isinstance(facility, dict) else ""
    )
    try:
        personal = _json_object(open_value(keyring, sealed, purpose, "personal"), "personal")
    except Unreadable as exc:
        raise _notice_reason(exc.reasons[0]) from None
    extra = sorted(set(personal) - NOTICE_PERSONAL_FIELDS)
    if extra:
        raise NoticeInvalid(
            [
                Reason(
                    code="extra_forbidden",
                    path=safe_path(("personal", name)),
                    message="Only issued_at, child and birth_parent are sealed in personal.",
                )
                for name in extra
            ]
        )
    readable = {name: value for name, value in data.items() if name != "personal"}
    return parse_notice(_json_bytes({**readable, **personal}))
