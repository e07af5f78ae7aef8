"""Settings that let many processes of one deployment run side by side and reach a remote cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from infra.settings import Settings


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TEMPORAL_TLS_CERT_FILE and TELLONCE_TEMPORAL_TLS_KEY_FILE"):
        Settings(temporal_tls_cert_file=tmp_path / "client.pem")
    with pytest.raises(ValidationError, match="go together"):
        Settings(temporal_tls_key_file=tmp_path / "client.key")


def test_tls_is_off_by_default_and_implied_by_a_certificate_or_an_api_key(tmp_path: Path) -> None:
    assert not Settings().temporal_uses_tls
    assert Settings(temporal_tls=True).temporal_uses_tls
    mutual = Settings(temporal_tls_cert_file=tmp_path / "c.pem", temporal_tls_key_file=tmp_path / "c.key")
    assert mutual.temporal_uses_tls
    assert Settings(temporal_api_key=SecretStr("cloud-key")).temporal_uses_tls


def test_the_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELLONCE_TEMPORAL_API_KEY", "do-not-print-me")
    settings = Settings()
    assert settings.temporal_api_key is not None
    assert settings.temporal_api_key.get_secret_value() == "do-not-print-me"
    assert "do-not-print-me" not in repr(settings)
    assert "do-not-print-me" not in str(settings.model_dump())


def test_each_streams_process_can_have_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(port_base=7200).streams_port is None  # serve() falls back to port base + 802
    monkeypatch.setenv("TELLONCE_STREAMS_PORT", "18002")
    assert Settings().streams_port == 18002
