"""`tellonce notices`: act as a hospital's system and send a Notice of Live Birth to Kafka.

For development, demonstrations and tests: in production, hospitals' and midwives' systems
publish to the birth-notices topic themselves. The notice file is in the clear; what goes on
the topic has its personal part sealed with the settings' keyring (`infra.streams.sealing`), as
a hospital's system does with the key the deployment shares with it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaProducer

from activities.events import producer_config
from bundles.notices import NOTICE_SCHEMA, NoticeInvalid, parse_notice
from infra.crypto import Keyring
from infra.settings import Settings

notices_app = typer.Typer(
    help="Birth notices from hospitals and midwives (development and demonstrations).",
    no_args_is_help=True,
)


def hospital_notice(
    submission: Mapping[str, Any], *, notice_id: str, facility_id: str = "3910"
) -> dict[str, Any]:
    """The Notice of Live Birth a hospital would send for the birth a newborn submission states.

    For demonstrations, tests and benchmarks: it carries the facts both documents share and
    nothing the hospital would not know (no names).
    """
    child, parent = submission["child"], submission["birth_parent"]
    return {
        "schema": NOTICE_SCHEMA,
        "notice_id": notice_id,
        "facility": {
            "kind": "hospital",
            "id": facility_id,
            "name": child["place_of_birth"].get("facility_name") or "Hospital",
        },
        "issued_at": f"{child['date_of_birth']}T12:00:00-05:00",
        "child": {
            "date_of_birth": child["date_of_birth"],
            "time_of_birth": child.get("time_of_birth"),
            "sex": child["sex"],
            "plurality": child.get("plurality", 1),
        },
        "birth_parent": {
            "health_number": parent.get("health_number"),
            "date_of_birth": parent["date_of_birth"],
        },
    }


def notice_record(notice: Mapping[str, Any], keyring: Keyring | None) -> bytes:
    """The record value of a cleartext notice: its personal part sealed, unless encryption is off."""
    from infra.streams.sealing import seal_notice  # noqa: PLC0415 - the streams package is heavy

    value = seal_notice(keyring, notice) if keyring is not None else dict(notice)
    return json.dumps(value, ensure_ascii=False).encode()


@notices_app.command("send")
def send(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A notice, as JSON.")],
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers (default: TELLONCE_KAFKA_BOOTSTRAP or tellonce dev's)."),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Refuse a notice that would land in the dead-letter topic.")
    ] = True,
) -> None:
    """Publish FILE to the birth-notices topic, keyed by its notice number, as a hospital would.

    The file holds a notice in the clear; its birth facts are sealed with the settings' keyring
    before they leave (docs/streams.md), unless encryption is off.
    """
    raw = file.read_bytes()
    key = file.stem
    if check:
        try:
            key = parse_notice(raw).notice_id
        except NoticeInvalid as exc:
            for reason in exc.reasons:
                typer.echo(f"{file}: {reason.path or '(notice)'}: {reason.code}: {reason.message}", err=True)
            raise typer.Exit(2) from None
    settings = Settings()
    if kafka:
        settings = settings.model_copy(update={"kafka_bootstrap": kafka})
    try:
        notice = json.loads(raw)
        value = notice_record(notice, settings.keyring) if isinstance(notice, dict) else raw
    except (ValueError, KeyError, TypeError):
        # --no-check sends what it is given: an unreadable notice travels as it is, to be refused.
        value = raw
    try:
        partition, offset = asyncio.run(_publish(settings, settings.kafka_topic_birth_notices, key, value))
    except Exception as exc:  # any broker failure is reported the same way
        typer.echo(f"could not publish to {settings.kafka_target}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"sent notice {key} to {settings.kafka_topic_birth_notices} (partition {partition}, offset {offset})"
    )


async def _publish(settings: Settings, topic: str, key: str, value: bytes) -> tuple[int, int]:
    producer = AIOKafkaProducer(
        **producer_config(settings),
        enable_idempotence=settings.idempotent_producer,
        acks="all",
        request_timeout_ms=10_000,
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value=value, key=key.encode())
    finally:
        await producer.stop()
    return int(metadata.partition), int(metadata.offset)
