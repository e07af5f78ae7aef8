"""Temporal payload encryption: every payload the server stores is AES-256-GCM ciphertext.

Workflow inputs, activity arguments and results, signals, queries, memos and failure details
(the failure converter encodes messages and stack traces too) pass through this codec on the
way to the server and back. Ids, task queues and search attributes are never encrypted by
Temporal, so they never hold personal data in the first place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from infra.crypto import Keyring

ENCRYPTED_ENCODING = b"binary/encrypted"
"""The `encoding` metadata of an encrypted payload (the same name Temporal's samples use)."""
KEY_ID_METADATA = "encryption-key-id"
"""Metadata naming the key a payload was sealed with, so any key of the ring can open it."""


def _associated_data(kid: str) -> bytes:
    # Binds the key id in the clear metadata to the ciphertext: relabelling a payload fails.
    return b"tellonce/temporal-payload/" + kid.encode()


class EncryptionCodec(PayloadCodec):
    """Encrypts whole serialized payloads (data and metadata) with the keyring's active key."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload."""
        encoded = []
        for payload in payloads:
            kid, blob = self.keyring.encrypt(
                payload.SerializeToString(), _associated_data(self.keyring.active_kid)
            )
            encoded.append(
                Payload(
                    metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: kid.encode()},
                    data=blob,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt each encrypted payload; payloads written before encryption pass through."""
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
                decoded.append(payload)
                continue
            kid = payload.metadata[KEY_ID_METADATA].decode()
            original = Payload()
            original.ParseFromString(self.keyring.decrypt(kid, payload.data, _associated_data(kid)))
            decoded.append(original)
        return decoded


def build_data_converter(keyring: Keyring | None) -> DataConverter:
    """The data converter of every tellonce client and worker: pydantic, encrypted when a keyring is given.

    Without a keyring (encryption switched off, never in production) payloads and failure
    messages are stored as readable JSON: only the privacy scan's control run wants that.
    """
    if keyring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
