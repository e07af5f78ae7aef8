"""The codec endpoint's sign-in (`…/codec/session`): no login CSRF, and a Secure cookie behind TLS.

No Temporal server is needed: the session route checks the token with the local issuer and
writes the audit trail, nothing more.
"""

from __future__ import annotations

import re
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.api import create_app
from infra.ops.audit import AuditTrail
from infra.ops.auth import LocalIssuer, Role
from infra.settings import Settings
from tests.encryption import TEST_KEYRING_JSON

NO_INTAKE: Any = types.SimpleNamespace(catalogue=None, client=None)
SESSION = "/api/v1/ops/codec/session"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path / "data",
        api_url="http://127.0.0.1:8000",
        encryption_keys=TEST_KEYRING_JSON,
        **overrides,
    )


def client(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings, intake=NO_INTAKE)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.api_base_url)


def token(settings: Settings, subject: str) -> str:
    return LocalIssuer.for_settings(settings).mint(subject, Role.OPERATOR, timedelta(minutes=10))


async def test_another_site_cannot_sign_a_browser_in_under_its_own_token(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with client(settings) as api:
        # A cross-site form post: the attacker's token, no CSRF token of this browser's.
        forged = await api.post(SESSION, data={"token": token(settings, "attacker")})
        assert forged.status_code == 403
        assert "tellonce_codec" not in forged.headers.get("set-cookie", "")
        stolen_form = await api.post(
            SESSION, data={"token": token(settings, "attacker"), "csrf_token": "x" * 43}
        )
        assert stolen_form.status_code == 403

        # The documented flow: open the form, paste the token.
        page = await api.get(SESSION)
        found = CSRF.search(page.text)
        assert found, page.text
        signed_in = await api.post(
            SESSION, data={"token": token(settings, "ui-user"), "csrf_token": found.group(1)}
        )
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.headers["set-cookie"].startswith("tellonce_codec=")
        # A script sends the token as a bearer header instead, which no other site can set.
        scripted = await api.post(SESSION, headers={"Authorization": f"Bearer {token(settings, 'script')}"})
        assert scripted.status_code == 200
    accepted = [(e.subject, e.action) for e in AuditTrail(settings.audit_path).entries()]
    assert accepted == [("ui-user", "codec.session"), ("script", "codec.session")]


@pytest.mark.parametrize("behind_tls", [True, False])
async def test_the_codec_cookie_is_secure_behind_a_tls_terminating_proxy(
    tmp_path: Path, behind_tls: bool
) -> None:
    settings = settings_for(tmp_path, behind_tls=behind_tls)
    async with client(settings) as api:
        # The proxy speaks plain http to the app: only the setting says the browser used TLS.
        answer = await api.post(SESSION, headers={"Authorization": f"Bearer {token(settings, 'ui-user')}"})
    assert answer.status_code == 200, answer.text
    assert ("; secure" in answer.headers["set-cookie"].lower()) is behind_tls
