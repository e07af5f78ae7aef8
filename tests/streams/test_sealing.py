"""The envelope codec without a broker: what opens where, what is refused, and what a reason may say."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bundles.notices import NoticeInvalid, parse_notice
from infra.crypto import Keyring
from infra.kafka import retention_configs
from infra.settings import Settings
from infra.streams.decoding import Unreadable
from infra.streams.dlq import (
    H_NOT_KEPT,
    H_REASONS,
    H_SEALED,
    MAX_REASONS,
    DeadLetterInfo,
    DeadLetters,
    dlq_headers,
    sealed_value,
)
from infra.streams.models import DlqReason, SubmissionEnvelope
from infra.streams.records import Record
from infra.streams.sealing import (
    open_submission,
    read_notice,
    seal_notice,
    seal_submission,
    submission_purpose,
)
from infra.streams.topics import personal_data_topics, tellonce_topics
from tests.encryption import TEST_KEYRING
from tests.privacy_scan import hits

ROOT = Path(__file__).resolve().parents[2]
KEYRING = TEST_KEYRING.keyring()
OTHER_KEYRING = Keyring({"k20990101-0a7e2f": bytes(range(1, 33))}, active="k20990101-0a7e2f")
SUBMISSION = json.loads((ROOT / "examples" / "newborn-on" / "complete.json").read_text())["submission"]
NOTICE = json.loads((ROOT / "examples" / "birth-notices" / "matching.json").read_text())


def cleartext_envelope(**overrides: Any) -> dict[str, Any]:
    return {
        "schema": "tellonce.submission/v1",
        "submission_id": "0B6C5A52-2A57-4C1C-8D8E-9A8B3F0F4F11",  # upper-case: the purpose uses lower
        "bundle_id": "newborn-on",
        "channel": "hospital-intake",
        "submission": SUBMISSION,
        **overrides,
    }


def model(data: dict[str, Any]) -> SubmissionEnvelope:
    return SubmissionEnvelope.model_validate(data)


def refusal(data: dict[str, Any], keyring: Keyring | None) -> tuple[str, str, str]:
    with pytest.raises(Unreadable) as caught:
        open_submission(model(data), keyring)
    (found,) = caught.value.reasons
    return found.code, found.path, found.message


# ------------------------------------------------------------------------------ submissions


def test_a_sealed_submission_opens_to_what_was_sealed_and_shows_nothing_of_it() -> None:
    sealed = seal_submission(KEYRING, cleartext_envelope())
    assert sealed["submission"].startswith("tlc1.test-key-1.")
    assert {k: v for k, v in sealed.items() if k != "submission"} == {
        k: v for k, v in cleartext_envelope().items() if k != "submission"
    }
    assert hits(json.dumps(sealed).encode(), "envelope") == []
    assert hits(json.dumps(cleartext_envelope(), ensure_ascii=False).encode(), "envelope") != []
    assert open_submission(model(sealed), KEYRING) == SUBMISSION


def partner_seal(key_id: str, key: bytes, plaintext: bytes, purpose: str) -> str:
    """docs/streams.md's recipe, written as a partner would: the `cryptography` package alone."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext, f"tlc1|{key_id}|{purpose}".encode())
    return f"tlc1.{key_id}." + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def test_a_partner_following_the_documented_recipe_with_a_key_of_its_own_is_understood() -> None:
    partner_key = os.urandom(32)
    ring = Keyring({"test-key-1": bytes(range(32)), "partner-x": partner_key}, active="test-key-1")
    envelope = cleartext_envelope()
    purpose = "tellonce.submission/v1:0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11:newborn-on:hospital-intake"
    token = partner_seal("partner-x", partner_key, json.dumps(SUBMISSION).encode(), purpose)
    assert open_submission(model({**envelope, "submission": token}), ring) == SUBMISSION
    # The partner's key is not the active one: what tellonce seals names another key.
    assert ring.seal(b"{}", purpose).startswith("tlc1.test-key-1.")


def test_the_purpose_names_the_canonical_submission_id_bundle_and_channel() -> None:
    submission_id = uuid.UUID("0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11")
    assert submission_purpose(submission_id, "newborn-on", "hospital-intake") == (
        "tellonce.submission/v1:0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11:newborn-on:hospital-intake"
    )
    # What a partner computes by hand opens here.
    token = KEYRING.seal(
        json.dumps(SUBMISSION).encode(),
        "tellonce.submission/v1:0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11:newborn-on:hospital-intake",
    )
    assert open_submission(model(cleartext_envelope(submission=token)), KEYRING) == SUBMISSION


@pytest.mark.parametrize(
    "moved",
    [
        {"submission_id": str(uuid.uuid4())},
        {"bundle_id": "address-change-on"},
        {"channel": "another-partner"},
    ],
)
def test_a_sealed_submission_moved_into_another_envelope_does_not_open(moved: dict[str, str]) -> None:
    sealed = seal_submission(KEYRING, cleartext_envelope())
    code, path, message = refusal({**sealed, **moved}, KEYRING)
    assert (code, path) == ("undecryptable", "submission")
    assert "test-key-1" in message and "another record" in message


def test_a_submission_sealed_under_a_key_this_deployment_lacks_names_the_key_only() -> None:
    sealed = seal_submission(OTHER_KEYRING, cleartext_envelope())
    code, path, message = refusal(sealed, KEYRING)
    assert (code, path) == ("undecryptable", "submission")
    assert "k20990101-0a7e2f" in message and "does not hold" in message


def test_a_key_id_of_digits_alone_is_not_repeated() -> None:
    sin_as_key = Keyring({"046454286": bytes(32)}, active="046454286")
    _, _, message = refusal(seal_submission(sin_as_key, cleartext_envelope()), KEYRING)
    assert "046454286" not in message and "key ?" in message


@pytest.mark.parametrize("value", [SUBMISSION, "Marie-Ève Bélanger 123 456 782", "tlc1.nope", ["x"], 42])
def test_with_a_keyring_anything_but_a_sealed_value_is_not_encrypted(value: object) -> None:
    code, path, message = refusal(cleartext_envelope(submission=value), KEYRING)
    assert (code, path) == ("not_encrypted", "submission")
    assert hits(message.encode(), "reason") == []


def test_with_encryption_off_cleartext_is_read_and_a_sealed_value_cannot_be() -> None:
    assert open_submission(model(cleartext_envelope()), None) == SUBMISSION
    code, path, message = refusal(seal_submission(KEYRING, cleartext_envelope()), None)
    assert (code, path) == ("undecryptable", "submission") and "encryption off" in message
    assert refusal(cleartext_envelope(submission="just text"), None)[0] == "envelope_invalid"


@pytest.mark.parametrize(("plaintext", "code"), [(b"[1, 2]", "not_an_object"), (b"{", "malformed_json")])
def test_a_sealed_value_that_is_not_a_json_object_says_so(plaintext: bytes, code: str) -> None:
    envelope = cleartext_envelope()
    purpose = submission_purpose(uuid.UUID(envelope["submission_id"]), "newborn-on", "hospital-intake")
    assert refusal({**envelope, "submission": KEYRING.seal(plaintext, purpose)}, KEYRING)[:2] == (
        code,
        "submission",
    )


# --------------------------------------------------------------------------------- notices


def test_a_sealed_notice_reads_as_the_notice_it_was_and_shows_only_who_sent_it() -> None:
    sealed = seal_notice(KEYRING, NOTICE)
    assert set(sealed) == {"schema", "notice_id", "facility", "personal"}
    raw = json.dumps(sealed, ensure_ascii=False).encode()
    assert hits(raw, "notice") == []
    assert hits(json.dumps(NOTICE).encode(), "notice") != []  # the scan does find the cleartext
    assert read_notice(raw, KEYRING) == parse_notice(json.dumps(NOTICE).encode())


def notice_reasons(raw: bytes, keyring: Keyring | None) -> list[tuple[str, str]]:
    with pytest.raises(NoticeInvalid) as caught:
        read_notice(raw, keyring)
    for found in caught.value.reasons:
        assert hits(found.message.encode(), "reason") == []
        assert "0987654324" not in found.message
    return [(r.code, r.path) for r in caught.value.reasons]


def encoded(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def test_notice_refusals() -> None:
    sealed = seal_notice(KEYRING, NOTICE)
    assert notice_reasons(encoded(NOTICE), KEYRING) == [("not_encrypted", "")]
    # Sealed, and the health number beside it in the clear as well.
    beside = {**sealed, "birth_parent": NOTICE["birth_parent"]}
    assert notice_reasons(encoded(beside), KEYRING) == [("not_encrypted", "personal")]
    assert notice_reasons(encoded({**sealed, "personal": NOTICE["child"]}), KEYRING) == [
        ("not_encrypted", "personal")
    ]
    assert notice_reasons(encoded({**sealed, "notice_id": "NLB-2026-0009999"}), KEYRING) == [
        ("undecryptable", "personal")
    ]
    other_facility = {**sealed, "facility": {**NOTICE["facility"], "id": "3911"}}
    assert notice_reasons(encoded(other_facility), KEYRING) == [("undecryptable", "personal")]
    assert notice_reasons(encoded(seal_notice(OTHER_KEYRING, NOTICE)), KEYRING) == [
        ("undecryptable", "personal")
    ]
    missing = {k: v for k, v in sealed.items() if k != "personal"}
    assert notice_reasons(encoded(missing), KEYRING) == [("missing", "personal")]
    # A sealed part may hold only the personal fields: not the notice id, which routes it.
    smuggled = seal_notice(KEYRING, {**NOTICE, "issued_at": NOTICE["issued_at"]})
    purpose_parts = (NOTICE["notice_id"], NOTICE["facility"]["id"])
    smuggled["personal"] = KEYRING.seal(
        json.dumps({"child": NOTICE["child"], "notice_id": "X"}).encode(),
        f"tellonce.birth-notice/v1:{purpose_parts[0]}:{purpose_parts[1]}",
    )
    assert notice_reasons(encoded(smuggled), KEYRING) == [("extra_forbidden", "personal.notice_id")]
    # The notice's own checks still apply once opened.
    bad = seal_notice(KEYRING, {**NOTICE, "child": {**NOTICE["child"], "sex": "Q"}})
    assert notice_reasons(encoded(bad), KEYRING) == [("literal_error", "child.sex")]
    # Unreadable records are refused as before, sealed or not.
    assert notice_reasons(b"\xff", KEYRING) == [("encoding", "")]
    assert notice_reasons(encoded({**sealed, "schema": "tellonce.birth-notice/v0"}), KEYRING) == [
        ("schema", "schema")
    ]


def test_with_encryption_off_notices_are_read_in_the_clear() -> None:
    assert read_notice(encoded(NOTICE), None).notice_id == NOTICE["notice_id"]
    assert notice_reasons(encoded(seal_notice(KEYRING, NOTICE)), None) == [("undecryptable", "personal")]


# ---------------------------------------------------------------------------- dead letters


AT = datetime(2026, 11, 10, tzinfo=UTC)


def record(value: bytes | None, offset: int = 41) -> Record:
    return Record("tellonce.submissions", 2, offset, b"key", value, (("origin", b"partner"),), 0)


def test_a_dead_letter_is_sealed_for_its_original_position_and_opens_to_the_original_bytes() -> None:
    original = encoded(cleartext_envelope())
    dead = Record(
        "tellonce.submissions.dlq",
        0,
        7,
        b"key",
        sealed_value(KEYRING, record(original)),
        dlq_headers(record(original), [], AT, KEYRING.active_kid),
        0,
    )
    assert dead.value is not None and hits(dead.value, "dlq") == []
    assert dead.header(H_SEALED) == b"test-key-1"
    info = DeadLetterInfo.of(dead)
    assert info is not None and info.sealed_with == "test-key-1"
    assert info.original_value(dead, KEYRING) == original
    # The purpose is the position its headers name: a sealed value copied elsewhere does not open.
    elsewhere = DeadLetterInfo(info.topic, info.partition, info.offset + 1, [], "test-key-1")
    with pytest.raises(Exception, match="does not authenticate"):
        elsewhere.original_value(dead, KEYRING)
    with pytest.raises(Exception, match="encryption is off"):
        info.original_value(dead, None)


def test_an_unsealed_dead_letter_is_its_original_and_an_absent_value_stays_absent() -> None:
    dead = Record("dlq", 0, 7, b"key", b"{}", dlq_headers(record(b"{}"), [], AT), 0)
    info = DeadLetterInfo.of(dead)
    assert info is not None and info.sealed_with is None
    assert info.original_value(dead, KEYRING) == b"{}"
    assert sealed_value(KEYRING, record(None)) is None


class Producer:
    """A stand-in for aiokafka's producer that keeps what it was given; refuses values over `limit`."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.sent: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        if self.limit is not None and len(value or b"") + sum(len(v) for _, v in headers) > self.limit:
            raise MessageSizeTooLargeError("too large")
        self.sent.append((topic, value, headers))


async def test_dead_letters_are_written_sealed_with_a_keyring_and_as_they_were_without() -> None:
    original = encoded(cleartext_envelope())
    for keyring in (KEYRING, None):
        producer = Producer()
        await DeadLetters(cast("AIOKafkaProducer", producer), keyring).send(record(original), [], "dlq")
        ((_, value, sent_headers),) = producer.sent
        headers = dict(sent_headers)
        assert headers["origin"] == b"partner"
        if keyring is None:
            assert value == original and H_SEALED not in headers
        else:
            # Sealed in binary: 28 bytes more (nonce and tag), so what fitted its topic fits here.
            assert value is not None and len(value) == len(original) + 28 and hits(value, "dlq") == []
            assert headers[H_SEALED] == b"test-key-1"


def test_a_dead_letter_lists_at_most_a_hundred_reasons() -> None:
    many = [DlqReason(code="extra_forbidden", path=f"consents.k{i}", message="x") for i in range(250)]
    headers = dict(dlq_headers(record(b"{}"), many, AT))
    listed = json.loads(headers[H_REASONS])
    assert len(listed) == MAX_REASONS
    assert listed[-1] == {"code": "more_reasons", "path": "", "message": "151 more reasons are not listed."}


async def test_a_dead_letter_too_large_for_the_broker_is_kept_without_its_original() -> None:
    """Retrying a write the broker refuses for its size would hold the partition forever."""
    producer = Producer(limit=10_000)
    big = record(b'{"pad": "' + b"a" * 20_000 + b'"}')
    reasons = [DlqReason(code="envelope_invalid", path="pad", message="x")]
    await asyncio.wait_for(
        DeadLetters(cast("AIOKafkaProducer", producer), KEYRING).send(big, reasons, "dlq"), 5
    )
    ((_, value, headers),) = producer.sent
    dead = Record("dlq", 0, 3, b"key", value, tuple(headers), 0)
    info = DeadLetterInfo.of(dead)
    assert value is None and info is not None and not info.kept
    assert [r.code for r in info.reasons] == ["envelope_invalid", "dead_letter_too_large"]
    assert (info.topic, info.partition, info.offset) == ("tellonce.submissions", 2, 41)
    assert "origin" not in dict(headers) and dict(headers)[H_NOT_KEPT] == b"value,headers"


# --------------------------------------------------------------------------------- topics


def test_every_topic_but_bundle_events_is_kept_only_for_the_retention_period() -> None:
    settings = Settings(retention_period=timedelta(days=30))
    personal = personal_data_topics(settings, systems=["cra-aba"])
    assert set(tellonce_topics(settings, systems=["cra-aba"])) - set(personal) == {"tellonce.bundle-events"}
    assert {
        "tellonce.submissions",
        "tellonce.submissions.dlq",
        "vital-events.birth-notices",
        "vital-events.birth-notices.dlq",
        "legacy.cra-aba.requests",
        "legacy.cra-aba.replies",
        "legacy.replies.dlq",
    } <= set(personal)
    assert retention_configs(settings) == {"retention.ms": "2592000000", "segment.ms": "86400000"}
