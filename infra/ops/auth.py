"""Who an operator is and what they may do: OIDC bearer tokens (JWT) checked against an issuer's keys.

Tokens are verified the same way everywhere: the issuer's discovery document names its JWKS,
the keys are cached (and fetched again when a token names a key not seen yet, so a rotation
at the issuer needs no restart), the signature algorithm must be on the allow-list, and `iss`,
`aud`, `exp` and `nbf` are checked. The operator's role comes from a configured claim.

For `tellonce dev` and tests the API is its own issuer (`LocalIssuer`): an Ed25519 key under
`<data_dir>/keys/ops-signing.json`, its discovery document and JWKS served by the API itself,
so the same verification path runs as in production. Production never has a local issuer.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from infra.settings import Settings

LOCAL_ISSUER_PATH = "/api/v1/ops/issuer"
"""Where the API serves the local issuer's discovery document and JWKS (dev and tests only)."""

LOCAL_ALGORITHM = "EdDSA"
DISCOVERY_PATH = "/.well-known/openid-configuration"

MIN_REFETCH_INTERVAL = 10.0
"""Seconds between two JWKS fetches (for unknown key ids, or stale keys while the issuer is down):
random `kid`s cannot hammer the issuer, and an outage costs one slow request per interval."""


class Role(StrEnum):
    """An operator's role; each one may do everything the roles before it may."""

    VIEWER = "viewer"
    """Lists and timelines, without personal data."""
    OPERATOR = "operator"
    """Single actions on one bundle, and views of personal data (each one audited)."""
    SUPERVISOR = "supervisor"
    """Bulk actions and pausing or resuming a legacy system."""

    @property
    def rank(self) -> int:
        """Position in the order viewer < operator < supervisor."""
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """An authenticated operator."""

    subject: str
    role: Role


class AuthError(Exception):
    """A request's credentials were refused.

    `status` is 401 (no valid token: authenticate again) or 403 (a valid token without a
    tellonce role). `code` is stable, for clients; the message is for people and never repeats
    the token.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def local_issuer_url(settings: Settings) -> str:
    """The `iss` of tokens the local issuer mints (the API's own address)."""
    return settings.api_base_url + LOCAL_ISSUER_PATH


class LocalIssuer:
    """The dev stack's own token issuer: one Ed25519 key in a file only its owner can read."""

    def __init__(
        self, key: Ed25519PrivateKey, kid: str, issuer: str, audience: str, roles_claim: str
    ) -> None:
        self._key = key
        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self.roles_claim = roles_claim

    @classmethod
    def for_settings(cls, settings: Settings) -> LocalIssuer:
        """The local issuer of these settings, its key created on first use.

        Raises:
            RuntimeError: in production, which must use its organisation's issuer.
        """
        if settings.environment == "production":
            raise RuntimeError("production has no local token issuer: configure TELLONCE_OIDC_ISSUER")
        key, kid = load_or_create_signing_key(settings.ops_signing_key_path)
        return cls(key, kid, local_issuer_url(settings), settings.oidc_audience, settings.oidc_roles_claim)

    def jwks(self) -> dict[str, Any]:
        """The public key set, as served at the JWKS address."""
        public: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self._key.public_key()))
        public.update(kid=self.kid, use="sig", alg=LOCAL_ALGORITHM)
        return {"keys": [public]}

    def discovery(self, jwks_uri: str) -> dict[str, Any]:
        """The OpenID discovery document (only what token verification reads)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "id_token_signing_alg_values_supported": [LOCAL_ALGORITHM],
        }

    def mint(self, subject: str, role: Role, ttl: timedelta, *, now: datetime | None = None) -> str:
        """A signed token for `subject` with `role`, valid for `ttl`."""
        issued = now or datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl,
            "jti": str(uuid.uuid4()),
        }
        _put_claim(claims, self.roles_claim, [role.value])
        return jwt.encode(claims, self._key, algorithm=LOCAL_ALGORITHM, headers={"kid": self.kid})


def load_or_create_signing_key(path: Path) -> tuple[Ed25519PrivateKey, str]:
    """The signing key kept at `path` (a private JWK), created there with mode 0600 if missing."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        stored = json.loads(OKPAlgorithm.to_jwk(key))
        stored["kid"] = f"local-{uuid.uuid4().hex[:12]}"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(stored, out)
        try:
            # Two processes starting at once: the first key written wins, the other reads it.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    stored = json.loads(path.read_text())
    loaded = OKPAlgorithm.from_jwk(stored)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise RuntimeError(f"{path} does not hold an Ed25519 private key")
    return loaded, str(stored["kid"])


def _put_claim(claims: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = claims
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _get_claim(claims: Mapping[str, Any], path: str) -> Any:
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


ClientFactory = Callable[[], httpx.AsyncClient]


class TokenVerifier:
    """Verifies bearer tokens against an OIDC issuer, keeping its keys cached."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        roles_claim: str,
        role_map: Mapping[str, str],
        jwks_ttl: timedelta,
        leeway: timedelta,
        client: ClientFactory,
    ) -> None:
        refused = {alg for alg in algorithms if alg.lower() == "none" or alg.startswith("HS")}
        if refused:
            # A public key used as an HMAC secret forges any token: only asymmetric algorithms.
            raise ValueError(f"algorithms not allowed for operator tokens: {sorted(refused)}")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.roles_claim = roles_claim
        self.role_map = {name: Role(role) for name, role in role_map.items()}
        self.jwks_ttl = jwks_ttl.total_seconds()
        self.leeway = leeway
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        # When keys were last asked for, fetched or not: an issuer outage must not make every
        # request past the TTL wait on a refetch under the lock.
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, client: ClientFactory, issuer: str) -> TokenVerifier:
        """A verifier configured from the settings, for `issuer`."""
        return cls(
            issuer=issuer,
            audience=settings.oidc_audience,
            algorithms=settings.oidc_algorithms,
            roles_claim=settings.oidc_roles_claim,
            role_map=settings.oidc_role_map,
            jwks_ttl=settings.oidc_jwks_ttl,
            leeway=settings.oidc_leeway,
            client=client,
        )

    async def verify(self, token: str) -> Principal:
        """The operator a token names.

        Raises:
            AuthError: 401 for a malformed, unsigned, expired, not-yet-valid or foreign token, or
                one signed by an unknown key; 403 for a valid token without a tellonce role.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError(401, "malformed_token", "the bearer token is not a JWT") from None
        if header.get("alg") not in self.algorithms:
            raise AuthError(401, "algorithm_refused", f"tokens signed with {header.get('alg')!r} are refused")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token_expired", "the token has expired; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token_not_yet_valid", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "wrong_audience", f"the token is not meant for {self.audience}") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "wrong_issuer", f"the token was not issued by {self.issuer}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid_token", f"the token is invalid ({type(exc).__name__})") from None
        role = self._role(claims)
        if role is None:
            raise AuthError(403, "no_role", "the token carries no tellonce role (viewer/operator/supervisor)")
        return Principal(subject=str(claims["sub"]), role=role)

    def _role(self, claims: Mapping[str, Any]) -> Role | None:
        found = _get_claim(claims, self.roles_claim)
        names = found.split() if isinstance(found, str) else found if isinstance(found, list) else []
        roles = [self.role_map[name] for name in names if isinstance(name, str) and name in self.role_map]
        return max(roles, key=lambda role: role.rank, default=None)

    async def _key(self, kid: str) -> jwt.PyJWK:
        async with self._lock:
            now = time.monotonic()
            stale = self._fetched_at is None or now - self._fetched_at > self.jwks_ttl
            unknown = kid not in self._keys
            # Stale or unknown-kid refreshes go to the issuer at most every MIN_REFETCH_INTERVAL,
            # failed ones included (cached keys serve meanwhile); only a verifier that has never
            # seen the keys asks on every request, since it can verify nothing without them.
            recently_asked = (
                self._fetched_at is not None
                and self._attempted_at is not None
                and now - self._attempted_at < MIN_REFETCH_INTERVAL
            )
            if (stale or unknown) and not recently_asked:
                self._attempted_at = now
                await self._fetch_keys()
        if kid not in self._keys:
            raise AuthError(401, "unknown_key", "the token is signed by a key the issuer does not publish")
        return self._keys[kid]

    async def _fetch_keys(self) -> None:
        try:
            async with self._client() as client:
                discovery = await _get_json(client, self.issuer.rstrip("/") + DISCOVERY_PATH)
                if discovery.get("issuer") != self.issuer:
                    raise AuthError(503, "issuer_mismatch", "the issuer's discovery names another issuer")
                jwks = await _get_json(client, str(discovery["jwks_uri"]))
        except (httpx.HTTPError, KeyError, ValueError):
            if self._keys:
                return  # keep verifying with the keys we have while the issuer is unreachable
            raise AuthError(503, "issuer_unreachable", "the token issuer's keys cannot be fetched") from None
        keys = {}
        for entry in jwks.get("keys", []):
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWKError:
                continue  # a key type this deployment does not use (e.g. an encryption key)
            if key.key_id:
                keys[key.key_id] = key
        self._keys = keys
        self._fetched_at = time.monotonic()


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    answer = await client.get(url)
    answer.raise_for_status()
    value = answer.json()
    if not isinstance(value, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return value
