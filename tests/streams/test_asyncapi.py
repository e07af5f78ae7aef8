"""The checked-in AsyncAPI document is what the code generates, and it describes every topic."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from infra.streams.app import asyncapi_document
from infra.streams.submissions import tracking_id_for

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_checked_in_asyncapi_is_current() -> None:
    assert DOCUMENT.read_text() == asyncapi_document(), (
        "docs/asyncapi.json is stale: run `tellonce streams asyncapi -o docs/asyncapi.json`"
    )


def test_asyncapi_describes_every_topic_with_its_payload() -> None:
    document = json.loads(asyncapi_document())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {
        "tellonce.submissions",
        "tellonce.submissions.dlq",
        "tellonce.bundle-events",
        "vital-events.birth-notices",
        "vital-events.birth-notices.dlq",
        "legacy.replies.dlq",
        "legacy.esdc-sin.replies",
        "legacy.cra-aba.requests",
    } <= addresses
    schemas = document["components"]["schemas"]
    assert {
        "SubmissionEnvelope",
        "SealedLegacyReply",
        "LegacyReplyMessage",
        "LegacyRequestMessage",
        "DlqReason",
        "BundleEventData",
        "SealedBirthNotice",
        "BirthNotice",
    } <= set(schemas)
    assert schemas["SubmissionEnvelope"]["properties"]["schema"]["const"] == "tellonce.submission/v1"
    # Personal data is documented as sealed: a string in the sealed format, first of its choices.
    sealed = schemas["SubmissionEnvelope"]["properties"]["submission"]["anyOf"][0]
    assert sealed["type"] == "string" and sealed["pattern"].startswith("^tlc1")
    assert schemas["SealedBirthNotice"]["properties"]["personal"]["pattern"] == sealed["pattern"]
    assert schemas["SealedLegacyReply"]["properties"]["reply"]["pattern"] == sealed["pattern"]
    assert "tellonce-dlq-sealed" in schemas["DeadLetter"]["properties"]


def test_tracking_ids_are_derived_and_stable() -> None:
    submission_id = uuid.UUID("0b6c5a52-2a57-4c1c-8d8e-9a8b3f0f4f11")
    assert tracking_id_for(submission_id) == tracking_id_for(uuid.UUID(str(submission_id).upper()))
    assert tracking_id_for(submission_id) != str(submission_id)
    assert uuid.UUID(tracking_id_for(submission_id)).version == 5
