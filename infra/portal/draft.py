"""A journey's answers between pages, sealed into the form itself (no server-side session store).

API processes keep no state and scale out, so the answers travel with each POST as one hidden
field, encrypted and authenticated with the keyring (AES-256-GCM, purpose-bound to the bundle
and the portal) and carrying an expiry. A resident cannot read it back from the page source
as cleartext, nor forge or alter it, nor replay it into another bundle's journey; personal
data never appears in a URL, a cookie or a log.
"""

from __future__ import annotations

import json
import time
import uuid
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.crypto import Keyring, KeyringError
from infra.settings import Settings

DRAFT_LIFETIME_SECONDS = 2 * 60 * 60
"""How long a journey may pause between two pages (renewed at each page)."""


class Draft(BaseModel):
    """What the resident has answered so far."""

    model_config = ConfigDict(extra="forbid")

    journey: str = Field(default_factory=lambda: str(uuid.uuid4()))
    """A random id of this journey: the submission's idempotency key derives from it."""
    values: dict[str, str] = Field(default_factory=dict)
    consents: dict[str, bool] | None = None
    """None until the consent page has been answered."""
    reached: int = -1
    """The furthest page index completed (-1: none), so the review is reached only through every page."""
    expires: float = 0.0

    def idempotency_key(self) -> str:
        """The key the portal submits with: one journey is one bundle, however often it is sent.

        A resend with the same answers gets the same bundle back; with changed answers the intake
        refuses it (`IdempotencyConflict`) rather than start a second bundle.
        """
        return f"portal:{self.journey}"


class DraftInvalid(Exception):  # noqa: N818 - "invalid" is what the page tells the resident
    """The sealed draft is missing, damaged, forged, for another bundle or expired."""


def portal_keyring(settings: Settings) -> Keyring:
    """The keyring that seals drafts: the deployment's own, or (encryption off) one from the secret.

    With encryption turned off (local runs only) drafts are still sealed, under a key derived
    from the access-code secret, so every API process of the deployment opens the others' drafts.
    """
    keyring = settings.keyring
    if keyring is not None:
        return keyring
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tellonce portal drafts").derive(
        settings.access_code_secret.get_secret_value().encode()
    )
    return Keyring({"portal": key}, "portal")


class DraftSealer:
    """Seals and opens drafts for one deployment (the keyring is read on first use, not at start-up)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @cached_property
    def _keyring(self) -> Keyring:
        return portal_keyring(self._settings)

    @staticmethod
    def _purpose(bundle_id: str) -> str:
        return f"tellonce.portal.draft:{bundle_id}"

    def seal(self, draft: Draft, bundle_id: str, *, now: float | None = None) -> str:
        """The draft as an opaque token, valid for `DRAFT_LIFETIME_SECONDS` from now."""
        stamped = draft.model_copy(update={"expires": (now or time.time()) + DRAFT_LIFETIME_SECONDS})
        return self._keyring.seal(stamped.model_dump_json().encode(), self._purpose(bundle_id))

    def open(self, token: str | None, bundle_id: str, *, now: float | None = None) -> Draft:
        """The draft in a token made by `seal` for the same bundle.

        Raises:
            DraftInvalid: the token is missing, damaged, forged, for another bundle or expired.
        """
        if not token:
            raise DraftInvalid("no draft")
        try:
            plain = self._keyring.open_sealed(token, self._purpose(bundle_id))
            data: Any = json.loads(plain)
            draft = Draft.model_validate(data)
        except (KeyringError, ValueError, IndexError, ValidationError):
            raise DraftInvalid("damaged or forged draft") from None
        if draft.expires < (now or time.time()):
            raise DraftInvalid("expired draft")
        return draft
