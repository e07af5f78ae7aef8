"""Keys and authenticated encryption (AES-256-GCM) for everything tellonce seals.

One keyring per environment: the *active* key encrypts, every key still in the ring decrypts,
and each ciphertext names the key that made it, so keys rotate without re-encrypting anything.
Temporal payloads (`infra.codec`) and Kafka values (`seal`/`open_sealed`) share it.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KEY_BYTES = 32
"""AES-256."""
NONCE_BYTES = 12
"""96-bit random nonces, as NIST SP 800-38D recommends for GCM."""
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Key ids travel in payload metadata and Kafka headers: short, plain, never secret."""
SEALED_PREFIX = "tlc1"
"""Version tag of the sealed-text format `tlc1.<key id>.<base64url(nonce || ciphertext)>`."""


class KeyringError(Exception):
    """The keyring is missing, malformed, or cannot do what was asked."""


class UnknownKeyError(KeyringError):
    """A ciphertext names a key the keyring does not hold (retired, or another environment's)."""


class DecryptionError(KeyringError):
    """A ciphertext is damaged, was sealed for another purpose, or was not made by this key."""


class StoredKey(BaseModel):
    """One key as it is written in a keyring file or setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str = Field(description="The 32-byte key, base64.")
    created: datetime

    @field_validator("secret")
    @classmethod
    def _is_256_bits(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError("a key's secret must be base64") from exc
        if len(raw) != KEY_BYTES:
            raise ValueError(f"a key's secret must be {KEY_BYTES} bytes (AES-256), found {len(raw)}")
        return value


class StoredKeyring(BaseModel):
    """The JSON form of a keyring: `{"active": KID, "keys": {KID: {"secret", "created"}}}`."""

    model_config = ConfigDict(extra="forbid")

    active: str
    keys: dict[str, StoredKey]

    @field_validator("keys")
    @classmethod
    def _key_ids_are_plain(cls, keys: dict[str, StoredKey]) -> dict[str, StoredKey]:
        for kid in keys:
            if not KEY_ID.match(kid):
                raise ValueError(f"key id {kid!r} must be 1-64 letters, digits, '-' or '_'")
        return keys

    def keyring(self) -> Keyring:
        """The usable keyring."""
        if self.active not in self.keys:
            raise KeyringError(f"the active key {self.active!r} is not in the keyring")
        return Keyring(
            {kid: base64.b64decode(key.secret) for kid, key in self.keys.items()},
            active=self.active,
        )


class Keyring:
    """Keys by id, one of them active. Immutable; rotation builds a new ring."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise KeyringError(f"the active key {active!r} is not in the keyring")
        for kid, key in keys.items():
            if not KEY_ID.match(kid) or len(key) != KEY_BYTES:
                raise KeyringError(f"key {kid!r} must have a plain id and {KEY_BYTES} bytes")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self._active = active

    @property
    def active_kid(self) -> str:
        """The id of the key new ciphertexts are made with."""
        return self._active

    @property
    def kids(self) -> frozenset[str]:
        """Every key id that still decrypts."""
        return frozenset(self._ciphers)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """Encrypt with the active key; returns the key id and `nonce || ciphertext+tag`.

        The associated data is authenticated, not stored: decryption must present the same.
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._active].encrypt(nonce, plaintext, associated_data)
        return self._active, nonce + sealed

    def decrypt(self, kid: str, blob: bytes, associated_data: bytes) -> bytes:
        """Decrypt what `encrypt` made with key `kid`."""
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownKeyError(f"no key {kid!r} in the keyring (retired, or another environment's)")
        if len(blob) < NONCE_BYTES + 16:
            raise DecryptionError("ciphertext too short")
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not authenticate (damaged, or another purpose)") from exc

    def seal(self, plaintext: bytes, purpose: str) -> str:
        """Encrypt to a compact ASCII token that names its key; `purpose` is bound as associated data.

        Use a purpose that ties the ciphertext to where it lives (e.g. topic and record id), so
        a sealed value copied into another record does not open there.
        """
        kid = self._active
        _, blob = self.encrypt(plaintext, sealed_associated_data(kid, purpose))
        return f"{SEALED_PREFIX}.{kid}.{base64.urlsafe_b64encode(blob).decode().rstrip('=')}"

    def open_sealed(self, token: str, purpose: str) -> bytes:
        """Decrypt a token made by `seal` for the same purpose."""
        kid = sealed_key_id(token)
        body = token.rsplit(".", 1)[1]
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise DecryptionError("sealed value is not base64url") from exc
        return self.decrypt(kid, blob, sealed_associated_data(kid, purpose))


def sealed_associated_data(kid: str, purpose: str) -> bytes:
    """What a sealed value authenticates besides its plaintext: the format, its key id and purpose.

    Public for values sealed in binary (`Keyring.encrypt`) that must bind a purpose the same way.
    """
    return f"{SEALED_PREFIX}|{kid}|{purpose}".encode()


def is_sealed(value: object) -> bool:
    """Whether a value looks like a token made by `Keyring.seal` (it may still fail to open)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX + ".") and value.count(".") == 2


_GENERATED_KEY_ID = re.compile(r"^k\d{8}-[0-9a-f]{6}$")
_DIGIT_RUN = re.compile(r"\d{3}")


def displayable_key_id(kid: str) -> str:
    """A key id named in a value someone else sent, fit for a log or a dead-letter reason, or `?`.

    The sender chose it, so it could carry a SIN or a health number in any grouping: only ids in
    `new_key_id`'s shape, or with no run of three digits, are shown.
    """
    if _GENERATED_KEY_ID.match(kid) or (KEY_ID.match(kid) and not _DIGIT_RUN.search(kid)):
        return kid
    return "?"


def sealed_key_id(token: str) -> str:
    """The key id a sealed token names."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != SEALED_PREFIX or not KEY_ID.match(parts[1]):
        raise DecryptionError(f"not a sealed value (expected {SEALED_PREFIX}.<key id>.<data>)")
    return parts[1]


# --- where keys come from ----------------------------------------------------------------------


class KeyProvider(Protocol):
    """Where a process gets its keyring: a file, a setting, or a key-management service.

    A KMS-backed provider fetches (or unwraps) the keys once at start-up; keys never leave
    memory afterwards. Name one with `TELLONCE_ENCRYPTION_KEY_PROVIDER=package.module:factory`,
    where `factory(settings)` returns a KeyProvider.
    """

    def keyring(self) -> Keyring:
        """The keyring to use now."""
        ...


class StaticKeyProvider:
    """A keyring given as JSON text (e.g. an environment variable filled from a secret store)."""

    def __init__(self, keyring_json: str) -> None:
        self._json = keyring_json

    def keyring(self) -> Keyring:
        """Parse and return the keyring."""
        return parse_keyring(self._json).keyring()


class FileKeyProvider:
    """A keyring kept in a JSON file readable by its owner only; optionally created on first use."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._create = create

    def keyring(self) -> Keyring:
        """Read the file (creating it with one fresh key first if allowed and missing)."""
        if self._create and not self.path.exists():
            create_keyring_file(self.path)
        return read_keyring_file(self.path).keyring()


def load_provider(spec: str, settings: object) -> KeyProvider:
    """Import `package.module:factory` and call it with the settings."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise KeyringError(f"key provider {spec!r} must look like package.module:factory")
    factory = getattr(importlib.import_module(module_name), attribute)
    provider: KeyProvider = factory(settings)
    return provider


def parse_keyring(text: str) -> StoredKeyring:
    """Validate keyring JSON, naming what is wrong without echoing any secret."""
    try:
        return StoredKeyring.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'keyring'}: {error['msg']}"
            for error in exc.errors(include_input=False)
        )
        raise KeyringError(f"invalid keyring: {problems}") from None


def read_keyring_file(path: Path) -> StoredKeyring:
    """Read a keyring file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(f"no keyring file at {path} (create one with `tellonce keys init`)") from None
    return parse_keyring(text)


def new_key_id(now: datetime | None = None) -> str:
    """A key id that sorts by creation time and never collides in practice: `k<date>-<random>`."""
    moment = now or datetime.now(UTC)
    return f"k{moment:%Y%m%d}-{secrets.token_hex(3)}"


def new_stored_key(now: datetime | None = None) -> StoredKey:
    """A fresh random 256-bit key."""
    return StoredKey(
        secret=base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(), created=now or datetime.now(UTC)
    )


def _staged(path: Path, stored: StoredKeyring) -> Path:
    """The keyring written whole and synced to a private file beside `path`, ready to move in."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(stored.model_dump_json(indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    return staging


def write_keyring_file(path: Path, stored: StoredKeyring) -> None:
    """Write a keyring atomically, readable and writable by its owner only."""
    _staged(path, stored).replace(path)


def create_keyring_file(path: Path) -> StoredKeyring:
    """Create a keyring file with one fresh active key, unless another process just did."""
    kid = new_key_id()
    stored = StoredKeyring(active=kid, keys={kid: new_stored_key()})
    staging = _staged(path, stored)
    try:
        # A hard link appears whole or not at all, and fails if the file exists: processes of one
        # dev stack starting together agree on a single keyring, and none reads a half-written one.
        os.link(staging, path)
    except FileExistsError:
        return read_keyring_file(path)
    finally:
        staging.unlink()
    return stored


def add_key(path: Path) -> str:
    """Add a fresh key that opens but does not yet seal: phase one of a rotation across hosts.

    Give every process (and every partner or bridge that opens what tellonce seals) the new
    ring first; only then `activate_key`, so nothing is sealed with a key someone lacks.
    """
    stored = read_keyring_file(path)
    kid = new_key_id()
    write_keyring_file(path, StoredKeyring(active=stored.active, keys={**stored.keys, kid: new_stored_key()}))
    return kid


def activate_key(path: Path, kid: str) -> None:
    """Make a key already in the ring the one that seals: phase two of a rotation."""
    stored = read_keyring_file(path)
    if kid not in stored.keys:
        raise KeyringError(f"no key {kid!r} in {path}: add it first")
    write_keyring_file(path, StoredKeyring(active=kid, keys=stored.keys))


def rotate_keyring_file(path: Path) -> str:
    """Add a fresh key and make it active; older keys stay so everything they sealed still opens.

    Nothing is re-encrypted: Temporal histories are immutable and Kafka records expire, so
    old ciphertexts keep naming their key until the key is retired.
    """
    stored = read_keyring_file(path)
    kid = new_key_id()
    keys = {**stored.keys, kid: new_stored_key()}
    write_keyring_file(path, StoredKeyring(active=kid, keys=keys))
    return kid


def retire_key(path: Path, kid: str) -> None:
    """Remove a key: whatever it sealed can no longer be opened (crypto-shredding)."""
    stored = read_keyring_file(path)
    if kid not in stored.keys:
        raise KeyringError(f"no key {kid!r} in {path}")
    if kid == stored.active:
        raise KeyringError(f"{kid!r} is the active key: rotate first, then retire it")
    keys = {other: key for other, key in stored.keys.items() if other != kid}
    write_keyring_file(path, StoredKeyring(active=stored.active, keys=keys))


def describe_keyring(stored: StoredKeyring) -> list[dict[str, str]]:
    """Key ids, creation times and which is active, for display; never the secrets."""
    return [
        {"kid": kid, "created": key.created.isoformat(), "active": "yes" if kid == stored.active else ""}
        for kid, key in sorted(stored.keys.items(), key=lambda item: item[1].created)
    ]


def keyring_json(stored: StoredKeyring) -> str:
    """The JSON text of a keyring, e.g. to put in TELLONCE_ENCRYPTION_KEYS."""
    return json.dumps(stored.model_dump(mode="json"))
