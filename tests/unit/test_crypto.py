"""The keyring and the Temporal payload codec: sealed, bound to their key and purpose, rotatable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure

from infra.codec import ENCRYPTED_ENCODING, KEY_ID_METADATA, EncryptionCodec, build_data_converter
from infra.crypto import (
    DecryptionError,
    KeyringError,
    UnknownKeyError,
    create_keyring_file,
    displayable_key_id,
    is_sealed,
    parse_keyring,
    read_keyring_file,
    retire_key,
    rotate_keyring_file,
)

SIN = b"046454286"


def test_sealed_text_opens_only_for_its_purpose(tmp_path: Path) -> None:
    keyring = create_keyring_file(tmp_path / "k.json").keyring()
    token = keyring.seal(SIN, "tellonce.submissions:abc")
    assert is_sealed(token) and SIN.decode() not in token
    assert keyring.open_sealed(token, "tellonce.submissions:abc") == SIN
    with pytest.raises(DecryptionError):
        keyring.open_sealed(token, "tellonce.submissions:another-record")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(DecryptionError):
        keyring.open_sealed(tampered, "tellonce.submissions:abc")


def test_the_same_plaintext_never_gives_the_same_ciphertext(tmp_path: Path) -> None:
    keyring = create_keyring_file(tmp_path / "k.json").keyring()
    assert keyring.seal(SIN, "p") != keyring.seal(SIN, "p")


def test_rotation_keeps_old_ciphertexts_readable_and_retiring_shreds_them(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    first = create_keyring_file(path)
    old_token = first.keyring().seal(SIN, "p")

    new_kid = rotate_keyring_file(path)
    rotated = read_keyring_file(path).keyring()
    assert rotated.active_kid == new_kid != first.active
    assert rotated.open_sealed(old_token, "p") == SIN
    assert f".{new_kid}." in rotated.seal(SIN, "p")

    with pytest.raises(KeyringError, match="active key"):
        retire_key(path, new_kid)
    retire_key(path, first.active)
    with pytest.raises(UnknownKeyError):
        read_keyring_file(path).keyring().open_sealed(old_token, "p")


def test_a_malformed_keyring_is_named_without_echoing_secrets() -> None:
    secret = "c2hvcnQ="  # base64 of "short": 5 bytes, not 32
    with pytest.raises(KeyringError, match="32 bytes") as caught:
        parse_keyring(
            json.dumps({"active": "a", "keys": {"a": {"secret": secret, "created": "2026-01-01T00:00:00Z"}}})
        )
    assert secret not in str(caught.value)
    with pytest.raises(KeyringError, match="not in the keyring"):
        parse_keyring(json.dumps({"active": "b", "keys": {}})).keyring()


async def test_codec_hides_payloads_and_names_the_key(tmp_path: Path) -> None:
    keyring = create_keyring_file(tmp_path / "k.json").keyring()
    codec = EncryptionCodec(keyring)
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"sin": "046454286"}')
    [encoded] = await codec.encode([original])
    assert encoded.metadata["encoding"] == ENCRYPTED_ENCODING
    assert encoded.metadata[KEY_ID_METADATA] == keyring.active_kid.encode()
    assert SIN not in encoded.SerializeToString()
    assert await codec.decode([encoded]) == [original]


async def test_codec_refuses_a_relabelled_payload_and_passes_old_cleartext_through(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = create_keyring_file(path).keyring()
    rotate_keyring_file(path)
    both = read_keyring_file(path).keyring()
    [encoded] = await EncryptionCodec(keyring).encode([Payload(data=b"x")])
    encoded.metadata[KEY_ID_METADATA] = both.active_kid.encode()  # claims the other key
    with pytest.raises(UnknownKeyError):
        await EncryptionCodec(keyring).decode([encoded])
    with pytest.raises(DecryptionError):
        await EncryptionCodec(both).decode([encoded])
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    assert await EncryptionCodec(keyring).decode([plain]) == [plain]


async def test_failure_messages_are_encoded_too(tmp_path: Path) -> None:
    keyring = create_keyring_file(tmp_path / "k.json").keyring()
    converter = build_data_converter(keyring)
    failure = Failure()
    await converter.encode_failure(ValueError("adapter said: SIN 046454286 is unknown"), failure)
    assert SIN not in failure.SerializeToString()
    assert failure.message == "Encoded failure"


@pytest.mark.parametrize(
    ("kid", "shown"),
    [
        ("k20261206-75d395", "k20261206-75d395"),
        ("test-key-1", "test-key-1"),
        ("046454286", "?"),
        ("046-454-286", "?"),
        ("4532_017_888", "?"),
        ("bad id!", "?"),
    ],
)
def test_a_key_id_someone_sent_is_shown_only_when_it_cannot_hide_a_number(kid: str, shown: str) -> None:
    assert displayable_key_id(kid) == shown
