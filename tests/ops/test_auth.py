"""Operator tokens: what the verifier accepts and refuses, against an issuer's discovery and JWKS."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    EllipticCurvePrivateKey,
    generate_private_key,
)
from jwt.algorithms import ECAlgorithm

from infra.ops.auth import AuthError, LocalIssuer, Role, TokenVerifier, load_or_create_signing_key

ISSUER = "https://login.example.gc.ca/realms/ops"
AUDIENCE = "tellonce-ops"


def now() -> datetime:
    """The time a token is made at: read per token, since the suite may run this file long after import."""
    return datetime.now(UTC)


class Issuer:
    """An OIDC issuer's two documents, served over httpx's mock transport; keys can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, EllipticCurvePrivateKey] = {"k1": generate_private_key(SECP256R1())}
        self.fetches = 0
        self.requests = 0
        self.up = True

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if not self.up:
            return httpx.Response(503)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/certs"})
        self.fetches += 1
        published = []
        for kid, key in self.keys.items():
            jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
            published.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
        return httpx.Response(200, json={"keys": published})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    def token(self, kid: str = "k1", key: Any = None, **claims: Any) -> str:
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now(),
            "nbf": now(),
            "exp": now() + timedelta(minutes=5),
            "realm_access": {"roles": ["offline_access", "tellonce-operator"]},
            **claims,
        }
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None},
            key or self.keys[kid],
            algorithm="ES256",
            headers={"kid": kid},
        )


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def verifier(issuer: Issuer) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=("ES256", "RS256"),
        roles_claim="realm_access.roles",
        role_map={
            "tellonce-viewer": "viewer",
            "tellonce-operator": "operator",
            "tellonce-boss": "supervisor",
        },
        jwks_ttl=timedelta(minutes=10),
        leeway=timedelta(seconds=5),
        client=issuer.client,
    )


async def refused(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    return caught.value


async def test_a_good_token_names_the_operator_and_their_highest_role(
    issuer: Issuer, verifier: TokenVerifier
) -> None:
    principal = await verifier.verify(issuer.token())
    assert (principal.subject, principal.role) == ("alice", Role.OPERATOR)
    both = issuer.token(realm_access={"roles": ["tellonce-viewer", "tellonce-boss"]})
    assert (await verifier.verify(both)).role is Role.SUPERVISOR


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": timedelta(minutes=-1)}, "token_expired"),
        ({"nbf": timedelta(minutes=5)}, "token_not_yet_valid"),
        ({"iss": "https://login.example.gc.ca/realms/other"}, "wrong_issuer"),
        ({"aud": "another-app"}, "wrong_audience"),
        ({"exp": None}, "invalid_token"),
    ],
)
async def test_expired_early_foreign_or_incomplete_tokens_are_refused(
    issuer: Issuer, verifier: TokenVerifier, claims: dict[str, Any], code: str
) -> None:
    # Times are given as offsets from now, so they mean the same whenever the test runs.
    claims = {k: now() + v if isinstance(v, timedelta) else v for k, v in claims.items()}
    error = await refused(verifier, issuer.token(**claims))
    assert (error.status, error.code) == (401, code)


async def test_a_token_signed_by_another_key_under_a_published_kid_is_refused(
    issuer: Issuer, verifier: TokenVerifier
) -> None:
    forged = issuer.token(key=generate_private_key(SECP256R1()))
    assert (await refused(verifier, forged)).code == "invalid_token"


async def test_unsigned_and_hmac_tokens_are_refused(issuer: Issuer, verifier: TokenVerifier) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now() + timedelta(minutes=5)}
    claims["realm_access"] = {"roles": ["tellonce-boss"]}
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})
    assert (await refused(verifier, unsigned)).code == "algorithm_refused"
    # HMAC is never on the list: with a public key as its secret, anyone could sign.
    hmac = jwt.encode(claims, "a-shared-secret-of-thirty-two-bytes", algorithm="HS256", headers={"kid": "k1"})
    assert (await refused(verifier, hmac)).code == "algorithm_refused"
    assert (await refused(verifier, "not-a-jwt")).code == "malformed_token"
    with pytest.raises(ValueError, match="not allowed"):
        TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), roles_claim="roles", role_map={},
            jwks_ttl=timedelta(minutes=1), leeway=timedelta(0), client=issuer.client,
        )  # fmt: skip


async def test_a_valid_token_without_a_tellonce_role_is_forbidden(
    issuer: Issuer, verifier: TokenVerifier
) -> None:
    error = await refused(verifier, issuer.token(realm_access={"roles": ["offline_access"]}))
    assert (error.status, error.code) == (403, "no_role")
    assert (await refused(verifier, issuer.token(realm_access=None))).status == 403


async def test_keys_are_cached_and_a_rotated_key_is_fetched_when_first_seen(
    issuer: Issuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        await verifier.verify(issuer.token())
    assert issuer.fetches == 1
    issuer.keys["k2"] = generate_private_key(SECP256R1())
    # Unknown key ids refetch at most every few seconds, so random kids cannot hammer the issuer.
    monkeypatch.setattr("infra.ops.auth.MIN_REFETCH_INTERVAL", 0.0)
    assert (await verifier.verify(issuer.token(kid="k2"))).subject == "alice"
    assert issuer.fetches == 2
    assert (await refused(verifier, issuer.token(kid="k3", key=issuer.keys["k1"]))).code == "unknown_key"


async def test_an_unreachable_issuer_is_a_503_until_its_keys_were_seen_once(
    issuer: Issuer, verifier: TokenVerifier
) -> None:
    issuer.up = False
    error = await refused(verifier, issuer.token())
    assert (error.status, error.code) == (503, "issuer_unreachable")


class Clock:
    """The verifier's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_an_issuer_outage_serves_cached_keys_and_retries_at_most_every_few_seconds(
    issuer: Issuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr("infra.ops.auth.time", clock)
    await verifier.verify(issuer.token())
    issuer.up = False
    clock.now += 11 * 60  # past the keys' 10-minute TTL
    asked = issuer.requests
    for _ in range(5):
        assert (await verifier.verify(issuer.token())).subject == "alice"
    # One failed refresh; the next requests use the cached keys without asking the issuer again.
    assert issuer.requests == asked + 1
    clock.now += 11  # past MIN_REFETCH_INTERVAL: one more try
    await verifier.verify(issuer.token())
    assert issuer.requests == asked + 2
    issuer.up = True
    clock.now += 11
    await verifier.verify(issuer.token())
    fetched = issuer.fetches
    clock.now += 60  # recovered and fresh again: no refetch within the TTL
    await verifier.verify(issuer.token())
    assert issuer.fetches == fetched == 2


def test_the_local_signing_key_is_private_to_its_owner_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ops-signing.json"
    key, kid = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again, same_kid = load_or_create_signing_key(path)
    assert same_kid == kid
    assert again.private_bytes_raw() == key.private_bytes_raw()


async def test_the_local_issuer_mints_what_the_verifier_accepts(tmp_path: Path) -> None:
    issuer = LocalIssuer(
        load_or_create_signing_key(tmp_path / "k.json")[0],
        "local-1",
        "http://api/iss",
        "tellonce-ops",
        "roles",
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json=issuer.discovery("http://api/iss/jwks.json"))
        return httpx.Response(200, json=issuer.jwks())

    make_client: Callable[[], httpx.AsyncClient] = lambda: httpx.AsyncClient(  # noqa: E731
        transport=httpx.MockTransport(handler)
    )
    verifier = TokenVerifier(
        issuer="http://api/iss", audience="tellonce-ops", algorithms=("EdDSA",), roles_claim="roles",
        role_map={"viewer": "viewer"}, jwks_ttl=timedelta(minutes=1), leeway=timedelta(0), client=make_client,
    )  # fmt: skip
    assert (await verifier.verify(issuer.mint("bob", Role.VIEWER, timedelta(minutes=1)))).role is Role.VIEWER
    old = issuer.mint("bob", Role.VIEWER, timedelta(minutes=1), now=now() - timedelta(hours=1))
    assert (await refused(verifier, old)).code == "token_expired"
