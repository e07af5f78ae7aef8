"""`tellonce.submissions` end to end: kcat → Tansu → `tellonce streams` → Temporal, and the DLQ.

Real servers throughout: a Temporal dev server, a Tansu broker, Debian's kcat as the partner's
client, and the role as a subprocess (killed with SIGKILL in one test). No worker runs: a
started bundle is a workflow execution, which is what is counted. Submissions are sealed with
the session's keyring (the partner's side is Python; kcat sends the bytes); records holding
personal data in the clear or sealed wrongly are dead-lettered, and the DLQ bytes hold none.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from typer.testing import CliRunner

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.cli import app as cli_app
from infra.crypto import Keyring, StoredKeyring, keyring_json, new_stored_key
from infra.streams.app import Streams
from infra.streams.dlq import (
    H_OFFSET,
    H_PARTITION,
    H_REASONS,
    H_REPLAYED_FROM,
    H_SEALED,
    H_TOPIC,
    DeadLetterInfo,
)
from infra.streams.sealing import seal_submission
from infra.streams.submissions import tracking_id_for
from tests.privacy_scan import hits
from tests.streams.conftest import (
    ROOT,
    Lane,
    StreamsProcess,
    base_submission,
    committed_total,
    count_bundles,
    encode,
    envelope,
    kcat_produce,
    original,
    raw_bytes,
    read_topic,
    sealed,
    varied_submission,
    wait_bundles,
    wait_caught_up,
    wait_committed,
    wait_runs,
)

pytestmark = [pytest.mark.integration]

VALID = 500
MALFORMED_KINDS = ("malformed_json", "invalid_utf8", "unknown_bundle", "unknown_schema", "invalid")
EXPECTED_CODES = {
    "malformed_json": {"malformed_json"},
    "invalid_utf8": {"invalid_utf8"},
    "unknown_bundle": {"unknown_bundle"},
    "unknown_schema": {"unknown_schema"},
    "invalid": {"sin_checksum"},
}


def malformed(kind: str, i: int, base: dict[str, Any]) -> tuple[bytes, bytes]:
    """A bad record of one kind; those that parse are keyed by their submission id."""
    submission_id = uuid.uuid4()
    key = str(submission_id).encode()
    if kind == "malformed_json":
        return f"bad-json-{i}".encode(), b'{"schema": "tellonce.submission/v1", "submission_id": '
    if kind == "invalid_utf8":
        return f"bad-utf8-{i}".encode(), b'{"schema": "tellonce.submission/v1", "channel": "\xff\xfe"}'
    if kind == "unknown_bundle":
        return key, encode(
            sealed(envelope(submission_id, varied_submission(base, i), bundle_id="newborn-zz"))
        )
    if kind == "unknown_schema":
        return key, encode(
            sealed(envelope(submission_id, varied_submission(base, i), schema="tellonce.submission/v9"))
        )
    bad = varied_submission(base, i)
    bad["birth_parent"]["sin"] = "123 456 789"  # check digit wrong (synthetic)
    return key, encode(sealed(envelope(submission_id, bad)))


def batch_of_525() -> tuple[list[tuple[bytes, bytes]], list[uuid.UUID], dict[bytes, str]]:
    """500 valid records with 25 malformed ones mixed in; keys are submission ids."""
    base = base_submission()
    records: list[tuple[bytes, bytes]] = []
    valid_ids: list[uuid.UUID] = []
    kinds: dict[bytes, str] = {}
    for i in range(VALID):
        submission_id = uuid.uuid4()
        valid_ids.append(submission_id)
        records.append(
            (str(submission_id).encode(), encode(sealed(envelope(submission_id, varied_submission(base, i)))))
        )
        if i % 20 == 10:
            kind = MALFORMED_KINDS[(i // 20) % len(MALFORMED_KINDS)]
            key, value = malformed(kind, i, base)
            kinds[key] = kind
            records.append((key, value))
    assert len(records) == 525
    return records, valid_ids, kinds


async def assert_all_started(lane: Lane, ids: list[uuid.UUID]) -> None:
    """Every derived tracking id exists, with exactly one run."""
    slots = asyncio.Semaphore(32)

    async def check(submission_id: uuid.UUID) -> None:
        async with slots:
            description = await lane.client.get_workflow_handle(tracking_id_for(submission_id)).describe()
            assert description.task_queue == lane.bundle_queue

    await asyncio.gather(*(check(i) for i in ids))


async def assert_dead_letters(
    lane: Lane, sent: dict[bytes, bytes], kinds: dict[bytes, str], exact: bool
) -> None:
    """The DLQ holds each malformed record, its original bytes sealed, with the expected reasons."""
    records = await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, len(kinds))
    positions = {(r.header(H_PARTITION), r.header(H_OFFSET)) for r in records}
    assert len(positions) == len(kinds)
    if exact:
        assert len(records) == len(kinds)
    assert hits(raw_bytes(records), "submissions dlq") == []
    for record in records:
        assert record.key in kinds, record.key
        assert record.header(H_SEALED) == b"test-key-1"
        assert original(record) == sent[record.key]
        assert record.header(H_TOPIC) == lane.settings.kafka_topic_submissions.encode()
        codes = {reason["code"] for reason in json.loads(record.header(H_REASONS) or b"")}
        assert codes == EXPECTED_CODES[kinds[record.key]], (kinds[record.key], codes)
        info = DeadLetterInfo.of(record)
        assert info is not None and all("123 456 789" not in r.message for r in info.reasons)


@pytest.mark.slow
async def test_500_submissions_from_kcat_start_500_bundles_and_dead_letter_25(
    lane: Lane, streams_process: list[StreamsProcess], tmp_path: Path
) -> None:
    records, valid_ids, kinds = batch_of_525()
    kcat_produce(lane, lane.settings.kafka_topic_submissions, records)
    streams = StreamsProcess(lane, tmp_path / "streams.log")
    streams_process.append(streams)
    await streams.wait_healthy()

    await wait_bundles(lane, VALID)
    await assert_all_started(lane, valid_ids)
    await assert_dead_letters(lane, dict(records), kinds, exact=True)
    await wait_committed(lane, lane.settings.kafka_topic_submissions, lane.settings.kafka_consumer_group, 525)
    # What the partner sent is sealed: the topic's bytes hold no resident's data.
    assert hits(raw_bytes(await read_topic(lane, lane.settings.kafka_topic_submissions, 525)), "topic") == []
    assert streams.stop() in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    log = (tmp_path / "streams.log").read_text()
    assert "streams.stopped" in log
    assert "123 456 789" not in log and "O'Neil" not in log


@pytest.mark.slow
async def test_sigkill_mid_batch_and_restart_still_starts_each_bundle_once(
    lane: Lane, streams_process: list[StreamsProcess], tmp_path: Path
) -> None:
    records, valid_ids, kinds = batch_of_525()
    kcat_produce(lane, lane.settings.kafka_topic_submissions, records)
    small = ("--batch-size", "25", "--concurrency", "8")
    first = StreamsProcess(lane, tmp_path / "streams.log", *small)
    streams_process.append(first)
    await first.wait_healthy()
    while await count_bundles(lane) < 60:  # noqa: ASYNC110 - polling another process's progress
        await asyncio.sleep(0.05)
    first.kill()
    committed = await committed_total(
        lane, lane.settings.kafka_topic_submissions, lane.settings.kafka_consumer_group
    )
    assert committed < len(records), "the whole batch was done before the kill; nothing was tested"

    second = StreamsProcess(lane, tmp_path / "streams.log", *small)
    streams_process.append(second)
    await second.wait_healthy()
    await wait_bundles(lane, VALID)
    await assert_all_started(lane, valid_ids)
    await assert_dead_letters(lane, dict(records), kinds, exact=False)


async def test_the_same_submission_three_times_and_after_termination_is_one_bundle(shared_lane: Lane) -> None:
    lane = shared_lane
    submission_id = uuid.uuid4()
    tracking_id = tracking_id_for(submission_id)
    record = (str(submission_id).encode(), encode(sealed(envelope(submission_id, base_submission()))))
    topic, group = lane.settings.kafka_topic_submissions, lane.settings.kafka_consumer_group
    kcat_produce(lane, topic, [record] * 3)
    await wait_caught_up(lane, topic, group)
    await wait_runs(lane, tracking_id, 1)
    handle = lane.client.get_workflow_handle(tracking_id)
    first_run = (await handle.describe()).run_id
    await handle.terminate(reason="test: a closed bundle")

    kcat_produce(lane, topic, [record])
    await wait_caught_up(lane, topic, group)
    await wait_runs(lane, tracking_id, 1)
    described = await handle.describe()
    assert described.run_id == first_run
    assert described.status == WorkflowExecutionStatus.TERMINATED
    dead = await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, 0, timeout=1)
    assert [r for r in dead if r.key == record[0]] == []


async def test_same_submission_id_with_other_content_is_dead_lettered(shared_lane: Lane) -> None:
    lane = shared_lane
    submission_id = uuid.uuid4()
    base = base_submission()
    first = (str(submission_id).encode(), encode(sealed(envelope(submission_id, varied_submission(base, 1)))))
    other = (str(submission_id).encode(), encode(sealed(envelope(submission_id, varied_submission(base, 2)))))
    kcat_produce(lane, lane.settings.kafka_topic_submissions, [first, other])
    await wait_caught_up(lane, lane.settings.kafka_topic_submissions, lane.settings.kafka_consumer_group)
    dead = [
        r for r in await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, 1) if r.key == first[0]
    ]
    assert [original(r) for r in dead] == [other[1]]
    assert json.loads(dead[0].header(H_REASONS) or b"")[0]["code"] == "submission_id_reused"
    await wait_runs(lane, tracking_id_for(submission_id), 1)


def replay(lane: Lane, *args: str, keys: str | None = None, subprocess_run: bool = False) -> str:
    """Run `tellonce streams replay-dlq` on the lane (with another keyring's JSON, if given).

    In this process by default (Typer's runner, on a thread of its own since the command runs
    its own event loop; the test's loop waits, as it would for a subprocess): a subprocess
    costs ~3 s of imports, and these tests replay eleven times. `subprocess_run` runs the
    real command line once.
    """
    env = {**lane.env(), **({"TELLONCE_ENCRYPTION_KEYS": keys} if keys else {})}
    if subprocess_run:
        result = subprocess.run(
            [sys.executable, "-m", "infra.cli", "streams", "replay-dlq", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout
    with ThreadPoolExecutor(max_workers=1) as thread:
        invoked = thread.submit(
            CliRunner().invoke, cli_app, ["streams", "replay-dlq", *args], env=env
        ).result()
    assert invoked.exit_code == 0, (invoked.output, invoked.exception)
    return invoked.stdout


async def test_replay_after_the_catalogue_gains_the_bundle_starts_it(lane: Lane, tmp_path: Path) -> None:
    """A partner sends a bundle this deployment did not have yet; after the release adds it,
    the operator replays the dead letter (kept sealed, opened by the replay) and the bundle
    starts, once."""
    submission_id = uuid.uuid4()
    record = (str(submission_id).encode(), encode(sealed(envelope(submission_id, base_submission()))))
    (tmp_path / "empty-catalogue").mkdir()
    before_release = Catalogue.load(tmp_path / "empty-catalogue", known_adapters=KNOWN_ADAPTERS)
    async with Streams(lane.settings, client=lane.client, catalogue=before_release).running():
        kcat_produce(lane, lane.settings.kafka_topic_submissions, [record])
        dead = await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, 1)
    assert json.loads(dead[0].header(H_REASONS) or b"")[0]["code"] == "unknown_bundle"
    # The DLQ keeps the partner's record sealed once more, for its position: not its bytes.
    assert dead[0].value != record[1] and dead[0].header(H_SEALED) == b"test-key-1"

    # An operator whose keyring lacks the key (say, another environment's) replays nothing, and
    # leaves the dead letter for a run that can open it.
    foreign = keyring_json(StoredKeyring(active="k-other", keys={"k-other": new_stored_key()}))
    assert "replayed 0;" in (refused := replay(lane, "--all", keys=foreign, subprocess_run=True))
    assert "sealed, not opened 1" in refused

    async with Streams(lane.settings, client=lane.client).running():
        listed = replay(lane, "--reason", "unknown_bundle", "--dry-run")
        assert "would replay 1;" in listed and str(submission_id) in listed
        assert "replayed 1;" in replay(lane, "--reason", "unknown_bundle")
        await wait_bundles(lane, 1)
        await lane.client.get_workflow_handle(tracking_id_for(submission_id)).describe()
        assert "replayed 0;" in replay(lane, "--all")  # its group remembers what it replayed
        assert "would replay 1;" in replay(lane, "--all", "--from-beginning", "--dry-run")

    resent = [
        r
        for r in await read_topic(lane, lane.settings.kafka_topic_submissions, 2)
        if r.header(H_REPLAYED_FROM)
    ]
    assert len(resent) == 1 and resent[0].value == record[1] and resent[0].key == record[0]
    assert not any(name.startswith("tellonce-dlq-") for name, _ in resent[0].headers)


async def test_replay_of_a_selection_leaves_the_rest_for_a_later_run(lane: Lane) -> None:
    """`replay-dlq --reason X` commits nothing past a dead letter it left out, so a later
    `--all` (without `--from-beginning`) still finds it; a dry run commits nothing."""
    garbled = (b"garbled", b'{"schema": ')
    submission_id = uuid.uuid4()
    unknown = (
        str(submission_id).encode(),
        encode(sealed(envelope(submission_id, base_submission(), bundle_id="no-such-bundle"))),
    )
    async with Streams(lane.settings, client=lane.client).running():
        kcat_produce(lane, lane.settings.kafka_topic_submissions, [garbled, unknown])
        await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, 2)
    # The role is stopped: what is replayed stays in the submissions topic, unread.

    listed = replay(lane, "--reason", "unknown_bundle", "--dry-run")
    assert "would replay 1;" in listed and "not selected 1;" in listed
    assert "replayed 1;" in replay(lane, "--reason", "unknown_bundle")
    # The dead letter left out is still ahead of the replayer's group, without --from-beginning.
    assert "key=garbled" in replay(lane, "--all", "--dry-run")
    assert "key=garbled" in replay(lane, "--all")
    assert "replayed 0;" in replay(lane, "--all")  # now everything read was replayed and committed


async def test_personal_data_in_the_clear_or_sealed_for_another_record_is_dead_lettered_unread(
    shared_lane: Lane,
) -> None:
    """With a keyring, a submission in the clear is refused (`not_encrypted`), and so is one
    sealed under a key this deployment lacks or moved from another envelope (`undecryptable`);
    none starts a bundle, and the DLQ's bytes show none of them."""
    lane = shared_lane
    base = base_submission()
    ids = {name: uuid.uuid4() for name in ("clear", "unknown_key", "moved", "relabelled")}
    foreign = Keyring({"k20990101-0a7e2f": bytes(range(1, 33))}, active="k20990101-0a7e2f")
    donor = sealed(envelope(uuid.uuid4(), base))
    values = {
        "clear": envelope(ids["clear"], base),
        "unknown_key": seal_submission(foreign, envelope(ids["unknown_key"], base)),
        # Another envelope's sealed submission, under this record's id.
        "moved": {**envelope(ids["moved"], base), "submission": donor["submission"]},
        # This record's own sealed submission, with its channel changed afterwards.
        "relabelled": {**sealed(envelope(ids["relabelled"], base)), "channel": "someone-else"},
    }
    records = [(str(ids[name]).encode(), encode(value)) for name, value in values.items()]
    assert hits(records[0][1], "cleartext record") != []  # the scan finds what is in the clear
    topic, group = lane.settings.kafka_topic_submissions, lane.settings.kafka_consumer_group
    kcat_produce(lane, topic, records)
    await wait_caught_up(lane, topic, group)

    keys = {str(i).encode(): name for name, i in ids.items()}
    dead = [r for r in await read_topic(lane, lane.settings.kafka_topic_submissions_dlq, 4) if r.key in keys]
    assert hits(raw_bytes(dead), "submissions dlq") == []
    reasons = {keys[r.key or b""]: json.loads(r.header(H_REASONS) or b"") for r in dead}
    assert {name: [(x["code"], x["path"]) for x in found] for name, found in reasons.items()} == {
        "clear": [("not_encrypted", "submission")],
        "unknown_key": [("undecryptable", "submission")],
        "moved": [("undecryptable", "submission")],
        "relabelled": [("undecryptable", "submission")],
    }
    assert "k20990101-0a7e2f" in reasons["unknown_key"][0]["message"]
    # Kept whole for a replay once the cause is fixed, sealed for the DLQ.
    sent = {name: value for name, (_, value) in zip(values, records, strict=True)}
    assert {keys[r.key or b""]: original(r) for r in dead} == sent
    for submission_id in ids.values():
        with pytest.raises(RPCError):
            await lane.client.get_workflow_handle(tracking_id_for(submission_id)).describe()
