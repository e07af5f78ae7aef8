"""Production never runs the operations API on a local key: it needs the organisation's issuer."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.api import create_app
from infra.cli import app as cli_app
from infra.settings import Settings

PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "access_code_secret": "a-production-access-code-secret",
    "correlation_secret": "a-production-correlation-secret",
    "csrf_secret": "a-production-csrf-secret-of-enough-length",
    "kafka_bootstrap": "kafka-1.internal:9093",
    "sftp_known_hosts": "/etc/tellonce/known_hosts",
    "sftp_password": "a-production-sftp-password",
    "encryption_keys_file": "/etc/tellonce/keyring.json",
}
NO_INTAKE: Any = types.SimpleNamespace(catalogue=None, client=None)


def test_production_without_an_issuer_refuses_to_start_the_api(tmp_path: Path) -> None:
    settings = Settings(**PRODUCTION, data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="TELLONCE_OIDC_ISSUER"):
        create_app(settings, intake=NO_INTAKE)
    assert not (tmp_path / "keys" / "ops-signing.json").exists()


def test_production_with_an_issuer_serves_no_local_issuer(tmp_path: Path) -> None:
    settings = Settings(**PRODUCTION, data_dir=tmp_path, oidc_issuer="https://login.example.gc.ca/realms/ops")
    app = create_app(settings, intake=NO_INTAKE)
    paths = {getattr(route, "path", "") for route in app.routes}
    assert "/api/v1/ops/stuck" in paths
    assert not any(path.startswith("/api/v1/ops/issuer") for path in paths)
    assert not (tmp_path / "keys" / "ops-signing.json").exists()


def test_ops_can_be_left_out_of_a_production_api(tmp_path: Path) -> None:
    settings = Settings(**PRODUCTION, data_dir=tmp_path, ops_enabled=False)
    app = create_app(settings, intake=NO_INTAKE)
    assert not any(getattr(route, "path", "").startswith("/api/v1/ops") for route in app.routes)


def test_ops_token_is_refused_when_an_issuer_is_configured() -> None:
    runner = CliRunner()
    with_issuer = runner.invoke(
        cli_app, ["ops", "token"], env={"TELLONCE_OIDC_ISSUER": "https://login.example.gc.ca/realms/ops"}
    )
    assert with_issuer.exit_code == 2
    assert "for tellonce dev only" in with_issuer.output
