"""What the resilience suite sends: distinct, valid submissions of both bundle types, and the
clients that send them the way residents and partners do (HTTP with an Idempotency-Key and
retries; Kafka envelopes on `tellonce.submissions`, sent more than once; hospital notices).

All data is synthetic. Address changes use the sandbox's synthetic residents, the only people
its identity check knows (`infra.sandbox.addresses.SYNTHETIC_RESIDENTS`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from aiokafka import AIOKafkaProducer
from stdnum import luhn

from infra.notices_cli import hospital_notice, notice_record
from infra.sandbox.addresses import SYNTHETIC_RESIDENTS, SyntheticResident
from infra.settings import Settings
from infra.streams.models import SUBMISSION_SCHEMA_V1
from infra.streams.sealing import seal_submission
from infra.streams.submissions import tracking_id_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NEWBORN = "newborn-on"
ADDRESS_CHANGE = "address-change-on"
KAFKA_CHANNEL = "chaos-partner"

RESIDENTS: dict[str, SyntheticResident] = {r.label: r for r in SYNTHETIC_RESIDENTS}
MOVING_RESIDENTS = ("demo", "future-move", "francophone", "lockout")
"""Residents whose moves go through. Every answer sent is right, so the lockout one never locks."""
REFUSED_RESIDENT = "rollback"
"""The resident whose health card the suite makes OHIP refuse, so the move is rolled back."""

Channel = Literal["api", "kafka"]
Fate = Literal["complete", "withdraw", "rollback"]

NEW_HOMES = (
    ("Ottawa", "K1N 5T5", "ottawa-revenue"),
    ("Toronto", "M5V 2T6", "toronto-revenue"),
    ("Nepean", "K2G 1V8", "ottawa-revenue"),
    ("Scarborough", "M1P 2L7", "toronto-revenue"),
)


@dataclass
class Submission:
    """One distinct submission and everything the suite did with it."""

    index: int
    bundle_id: str
    channel: Channel
    fate: Fate
    body: dict[str, Any]
    resident: str | None = None
    idempotency_key: str | None = None
    kafka_id: uuid.UUID | None = None
    tracking_id: str | None = None
    access_code: str | None = None
    http_statuses: list[int] = field(default_factory=list)
    http_tracking_ids: set[str] = field(default_factory=set)
    kafka_sends: int = 0
    notices_sent: int = 0
    withdraw_status: int | None = None
    withdraw_answers: list[int] = field(default_factory=list)
    withdraw_seconds: float | None = None

    @property
    def accepted(self) -> bool:
        """Accepted: a 202 for HTTP, a broker acknowledgement for Kafka."""
        return self.tracking_id is not None

    @property
    def newborn(self) -> bool:
        """A newborn bundle (waits for the hospital's notice)."""
        return self.bundle_id == NEWBORN


def _valid_health_number(serial: int) -> str:
    digits = f"{serial:09d}"
    return digits + luhn.calc_check_digit(digits)


def _valid_sin(serial: int) -> str:
    # SINs never start with 0 or 8; 1xx xxx xxx is an ordinary one.
    digits = f"1{serial % 10**7:07d}"
    return digits + luhn.calc_check_digit(digits)


def newborn_body(index: int, today: date, run_salt: int) -> dict[str, Any]:
    """The newborn example made distinct: the birth parent's numbers, the child's name, date and time.

    The birth parent's health number and the child's birth date are what a hospital notice is
    matched by, so each bundle has its own: no notice can match two statements.
    """
    body: dict[str, Any] = copy.deepcopy(json.loads((EXAMPLES / NEWBORN / "complete.json").read_text()))[
        "submission"
    ]
    child, parent = body["child"], body["birth_parent"]
    child["given_names"] = ("Zoë", "Léa", "Noémie", "Anaïs", "Éloïse", "Maëlle")[index % 6]
    child["date_of_birth"] = (today - timedelta(days=1 + index % 25)).isoformat()
    minute = (index * 37 + 11) % 1440
    child["time_of_birth"] = f"{minute // 60:02d}:{minute % 60:02d}"
    parent["health_number"] = _valid_health_number(run_salt * 1000 + index)
    parent["sin"] = _valid_sin(run_salt * 1000 + index)
    body["certificate"]["copies"] = 1 + index % 3
    return body


def address_body(index: int, resident: str, today: date) -> dict[str, Any]:
    """A move of one synthetic resident, dated on or before today so every program takes it now.

    Old and new addresses differ per index: the municipalities key their accounts by the
    previous address, and no two moves should look like one.
    """
    person = RESIDENTS[resident]
    city, postal, _system = NEW_HOMES[index % len(NEW_HOMES)]
    old_city = "Toronto" if person.postal_code.startswith("M") else "Ottawa"
    return {
        "language": "fr" if resident == "francophone" else "en",
        "consents": dict.fromkeys(
            (
                "cra_address",
                "service_canada_address",
                "elections_canada",
                "mto_address",
                "ohip_address",
                "municipal_address",
            ),
            True,
        ),
        "resident": {
            "given_names": person.given_names,
            "surname": person.surname,
            "date_of_birth": person.date_of_birth,
            "sin": person.sin,
            "health_number": person.health_number,
            "driver_licence_number": person.driver_licence_number,
        },
        "identity": {
            "document_type": person.document_type,
            "document_last4": person.document_last4,
            "old_postal_code": person.postal_code,
        },
        "old_address": {
            "street": f"{10 + index} Example Crescent",
            "municipality": old_city,
            "province": "ON",
            "postal_code": person.postal_code,
        },
        "new_address": {
            "street": f"{200 + index} Sample Lane",
            "unit": str(1 + index % 9),
            "municipality": city,
            "province": "ON",
            "postal_code": postal,
        },
        "effective_date": (today - timedelta(days=index % 20)).isoformat(),
        "contact": {"email": f"mover{index}@example.ca", "phone": "613-555-0142"},
    }


# --------------------------------------------------------------------------- HTTP (residents)


async def submit_http(client: httpx.AsyncClient, submission: Submission, *, give_up_after: float) -> None:
    """POST the submission with its Idempotency-Key, retrying as a careful client does.

    Any answer but 202 or a 4xx refusal (a 5xx while Temporal restarts, a reset connection) is
    retried with the same key until `give_up_after` seconds pass; every status is recorded.
    """
    assert submission.idempotency_key is not None
    deadline = time.monotonic() + give_up_after
    delay = 0.25
    while True:
        try:
            response = await client.post(
                f"/api/v1/bundles/{submission.bundle_id}/submissions",
                json=submission.body,
                headers={"Idempotency-Key": submission.idempotency_key},
            )
        except httpx.HTTPError:
            submission.http_statuses.append(0)
        else:
            submission.http_statuses.append(response.status_code)
            if response.status_code == 202:
                accepted = response.json()
                submission.http_tracking_ids.add(accepted["tracking_id"])
                submission.tracking_id = submission.tracking_id or accepted["tracking_id"]
                submission.access_code = submission.access_code or accepted["access_code"]
                return
            if 400 <= response.status_code < 500:
                raise AssertionError(
                    f"submission {submission.index} refused: {response.status_code} {response.text[:500]}"
                )
        if time.monotonic() + delay > deadline:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def withdraw_http(client: httpx.AsyncClient, submission: Submission, *, give_up_after: float) -> int:
    """Withdraw through the resident API, retried on 5xx and lost connections as a client would;
    every answer and the time to the last one are recorded. Returns the last status."""
    assert submission.tracking_id is not None and submission.access_code is not None
    started = time.monotonic()
    deadline = started + give_up_after
    status = 0
    while time.monotonic() < deadline:
        try:
            response = await client.post(
                f"/api/v1/submissions/{submission.tracking_id}/withdraw",
                headers={"X-Access-Code": submission.access_code},
            )
        except httpx.HTTPError:
            status = 0
        else:
            status = response.status_code
        submission.withdraw_answers.append(status)
        if 0 < status < 500:
            break
        await asyncio.sleep(0.5)
    submission.withdraw_status = status
    submission.withdraw_seconds = round(time.monotonic() - started, 1)
    return status


# --------------------------------------------------------------------------- Kafka (partners, hospitals)


def envelope(submission: Submission, settings: Settings) -> bytes:
    """The `tellonce.submissions` record value of a Kafka submission, sealed as a partner seals it."""
    assert submission.kafka_id is not None
    value: dict[str, Any] = {
        "schema": SUBMISSION_SCHEMA_V1,
        "submission_id": str(submission.kafka_id),
        "bundle_id": submission.bundle_id,
        "channel": KAFKA_CHANNEL,
        "submission": submission.body,
    }
    if settings.keyring is not None:
        value = seal_submission(settings.keyring, value)
    return json.dumps(value, ensure_ascii=False).encode()


class Partner:
    """A partner system and a hospital: one producer for submissions and notices."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_target,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=10_000,
        )

    async def start(self) -> None:
        """Connect to the broker."""
        await self.producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self.producer.stop()

    async def send_submission(self, submission: Submission) -> None:
        """Produce the envelope (keyed by its submission id); accepted once the broker acknowledges."""
        assert submission.kafka_id is not None
        await self.producer.send_and_wait(
            self.settings.kafka_topic_submissions,
            envelope(submission, self.settings),
            key=str(submission.kafka_id).encode(),
        )
        submission.kafka_sends += 1
        submission.tracking_id = tracking_id_for(submission.kafka_id)

    async def send_notice(self, submission: Submission) -> None:
        """The hospital's Notice of Live Birth matching a newborn submission."""
        notice = hospital_notice(submission.body, notice_id=f"NLB-CHAOS-{submission.index:05d}")
        await self.producer.send_and_wait(
            self.settings.kafka_topic_birth_notices,
            notice_record(notice, self.settings.keyring),
            key=notice["notice_id"].encode(),
        )
        submission.notices_sent += 1
