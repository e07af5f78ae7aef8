"""Key rotation on a real Temporal dev server: a bundle started under key 1 finishes under key 2.

The server's own bytes are read with a client that has no codec: what an operator with database
access, or anyone reading the history export, would see.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from infra.codec import ENCRYPTED_ENCODING, KEY_ID_METADATA, build_data_converter
from infra.crypto import (
    UnknownKeyError,
    create_keyring_file,
    read_keyring_file,
    retire_key,
    rotate_keyring_file,
)
from tests.workflow.support import (
    SUBMISSION,
    new_prefix,
    plan,
    running_workers,
    scripted_adapters,
    start_bundle,
    step,
    wait_for,
)
from workflows.bundle import BundleWorkflow
from workflows.models import SIGNAL_LEGACY_REPLY, BundleState, LegacyReply, StepState

pytestmark = pytest.mark.integration

LOCAL_ACTIVITY_MARKER = "core_local_activity"

PERSONAL_VALUES = [SUBMISSION["parent"]["sin"], SUBMISSION["parent"]["name"], SUBMISSION["child"]["name"]]


def payloads_of(history: History) -> list[Payload]:
    """Every payload in a raw history, wherever in an event it sits."""
    found: list[Payload] = []

    def walk(message: object) -> None:
        if isinstance(message, Payload):
            found.append(message)
            return
        for descriptor, value in message.ListFields():  # type: ignore[attr-defined]
            if descriptor.message_type is None:
                continue
            if hasattr(value, "ListFields"):
                walk(value)
                continue
            # A repeated field or a map (memo fields, headers): walk each message in it.
            for item in value.values() if hasattr(value, "values") else value:
                if hasattr(item, "ListFields"):
                    walk(item)

    for event in history.events:
        if _patch_payloads(event):
            continue  # written by the SDK's core, never through the codec: see patch_markers
        if event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
            # Its `data` is core's bookkeeping (see local_activity_bookkeeping); everything else
            # (the result, a failure, the summary) goes through the codec.
            marker = HistoryEvent()
            marker.CopyFrom(event)
            del marker.marker_recorded_event_attributes.details["data"]
            walk(marker)
            continue
        walk(event)
    return found


def _patch_payloads(event: HistoryEvent) -> list[Payload]:
    """What `workflow.patched` wrote in this event: its marker, and its `TemporalChangeVersion`."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name == "core_patch":
        return [payload for details in marker.details.values() for payload in details.payloads]
    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    return [fields["TemporalChangeVersion"]] if list(fields) == ["TemporalChangeVersion"] else []


def local_activity_bookkeeping(history: History) -> list[dict[str, object]]:
    """What core wrote of each local activity outside the codec: its type, ids and times."""
    return [
        json.loads(payload.data)
        for event in history.events
        if event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
        for payload in event.marker_recorded_event_attributes.details["data"].payloads
    ]


LOCAL_ACTIVITY_BOOKKEEPING = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def patch_markers(history: History) -> list[bytes]:
    """The data `workflow.patched` wrote (core writes it, never through the codec)."""
    return [payload.data for event in history.events for payload in _patch_payloads(event)]


async def raw_history(env: WorkflowEnvironment, workflow_id: str) -> History:
    """The history as the server stores it, fetched without any decoding."""
    fetched = await env.client.get_workflow_handle(workflow_id).fetch_history()
    return History(events=fetched.events)  # fetch_history never runs the codec on payloads


async def connect_with(env: WorkflowEnvironment, keyring_path: Path) -> Client:
    config = env.client.config()
    config["data_converter"] = build_data_converter(read_keyring_file(keyring_path).keyring())
    return Client(**config)


async def test_a_bundle_started_under_key_1_finishes_under_key_2(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    keyring_path = tmp_path / "keyring.json"
    first_kid = create_keyring_file(keyring_path).active
    adapters, prefix = scripted_adapters(), new_prefix()
    adapters["cra"].pending_reply = True

    before = await connect_with(dev_env, keyring_path)
    async with running_workers(before, adapters, prefix):
        handle = await start_bundle(before, plan(), prefix)
        await wait_for(handle, lambda s: step(s, "ccb").state is StepState.WAITING_REPLY, timeout=30)

    second_kid = rotate_keyring_file(keyring_path)
    after = await connect_with(dev_env, keyring_path)
    async with running_workers(after, adapters, prefix):
        handle = after.get_workflow_handle_for(BundleWorkflow.run, handle.id)
        key = adapters["cra"].submits()[0].key
        await handle.signal(
            SIGNAL_LEGACY_REPLY,
            LegacyReply(correlation_id=key, system="cra", outcome="accepted", received_at=datetime.now(UTC)),
        )
        final = await handle.result()
    assert final.state is BundleState.COMPLETED

    history = await raw_history(dev_env, handle.id)
    payloads = payloads_of(history)
    kids = [p.metadata[KEY_ID_METADATA].decode() for p in payloads if KEY_ID_METADATA in p.metadata]
    assert len(kids) == len(payloads) > 0, "every payload the server holds is encrypted"
    # Patch markers and the change-version search attribute hold only the name of a code change
    # (this bundle, on engine revision 2, has none), and local-activity markers, outside their
    # encrypted result, only core's bookkeeping of the call.
    assert patch_markers(history) == []
    bookkeeping = local_activity_bookkeeping(history)
    assert bookkeeping, "the bundle published its events inline"
    for entry in bookkeeping:
        assert set(entry) <= LOCAL_ACTIVITY_BOOKKEEPING, entry
        assert entry["activity_type"] == "publish_bundle_events"
    assert {p.metadata["encoding"] for p in payloads} == {ENCRYPTED_ENCODING}
    assert kids[0] == first_kid and kids[-1] == second_kid and set(kids) == {first_kid, second_kid}
    raw = history.SerializeToString()
    assert not [value for value in PERSONAL_VALUES if value.encode() in raw]

    # Retiring key 1 shreds what it sealed: the start of this history no longer opens.
    retire_key(keyring_path, first_kid)
    shredded = build_data_converter(read_keyring_file(keyring_path).keyring())
    assert shredded.payload_codec is not None
    first_payload = next(p for p in payloads if p.metadata[KEY_ID_METADATA].decode() == first_kid)
    with pytest.raises(UnknownKeyError):
        await shredded.payload_codec.decode([first_payload])


async def test_without_encryption_the_same_history_shows_personal_data(dev_env: WorkflowEnvironment) -> None:
    """The control run: the check above can fail, because cleartext is what Temporal stores by default."""
    config = dev_env.client.config()
    config["data_converter"] = build_data_converter(None)
    cleartext = Client(**config)
    adapters, prefix = scripted_adapters(), new_prefix()
    async with running_workers(cleartext, adapters, prefix):
        handle = await start_bundle(cleartext, plan(), prefix)
        await handle.result()
    raw = (await raw_history(dev_env, handle.id)).SerializeToString()
    assert [value for value in PERSONAL_VALUES if value.encode() in raw] == PERSONAL_VALUES
