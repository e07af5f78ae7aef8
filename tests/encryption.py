"""The test session's keyring: fixed keys, so every process a test starts can read every payload."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from infra.codec import build_data_converter
from infra.crypto import StoredKey, StoredKeyring, keyring_json

_CREATED = datetime(2026, 1, 1, tzinfo=UTC)
TEST_KEYRING = StoredKeyring(
    active="test-key-1",
    keys={"test-key-1": StoredKey(secret=base64.b64encode(bytes(range(32))).decode(), created=_CREATED)},
)
"""Never a real key: its bytes are 0..31."""
TEST_KEYRING_JSON = keyring_json(TEST_KEYRING)
TEST_DATA_CONVERTER = build_data_converter(TEST_KEYRING.keyring())
"""What tests' Temporal clients, workers and replayers use: encrypted, like every tellonce process."""
