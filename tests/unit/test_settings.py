"""Settings refuse what would be unsafe or silently wrong in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.crypto import KeyringError
from infra.settings import Settings

PRODUCTION = {
    "environment": "production",
    "access_code_secret": "a-production-access-code-secret",
    "correlation_secret": "a-production-correlation-secret",
    "kafka_bootstrap": "kafka-1.internal:9093,kafka-2.internal:9093",
    "sftp_known_hosts": "/etc/tellonce/known_hosts",
    "sftp_password": "a-production-sftp-password",
    "encryption_keys_file": "/etc/tellonce/keyring.json",
}


def test_a_complete_production_configuration_is_accepted() -> None:
    settings = Settings(**PRODUCTION)  # type: ignore[arg-type]
    assert settings.kafka_target == "kafka-1.internal:9093,kafka-2.internal:9093"
    assert settings.idempotent_producer is True


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("access_code_secret", "TELLONCE_ACCESS_CODE_SECRET"),
        ("correlation_secret", "TELLONCE_CORRELATION_SECRET"),
        ("kafka_bootstrap", "TELLONCE_KAFKA_BOOTSTRAP"),
        ("sftp_known_hosts", "TELLONCE_SFTP_KNOWN_HOSTS"),
        ("sftp_password", "TELLONCE_SFTP_PASSWORD"),
    ],
)
def test_production_refuses_development_defaults(missing: str, named: str) -> None:
    values = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ValidationError, match=named):
        Settings(**values)  # type: ignore[arg-type]


def test_production_refuses_to_run_without_a_keyring_or_with_encryption_off() -> None:
    no_keys = {k: v for k, v in PRODUCTION.items() if k != "encryption_keys_file"}
    with pytest.raises(ValidationError, match="production needs its keyring"):
        Settings(**no_keys, encryption_keys=None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="TELLONCE_ENCRYPTION_ENABLED"):
        Settings(**PRODUCTION, encryption_enabled=False)  # type: ignore[arg-type]


def test_production_never_creates_a_keyring_of_its_own(tmp_path: Path) -> None:
    missing = tmp_path / "keyring.json"
    settings = Settings(**{**PRODUCTION, "encryption_keys_file": str(missing)}, encryption_keys=None)  # type: ignore[arg-type]
    with pytest.raises(KeyringError, match="no keyring file"):
        _ = settings.keyring
    assert not missing.exists()


def test_local_processes_sharing_a_data_dir_share_one_generated_keyring(tmp_path: Path) -> None:
    first = Settings(environment="local", data_dir=tmp_path, encryption_keys=None).keyring
    second = Settings(environment="local", data_dir=tmp_path, encryption_keys=None).keyring
    assert first is not None and second is not None
    assert first.active_kid == second.active_kid
    kid, blob = first.encrypt(b"x", b"aad")
    assert second.decrypt(kid, blob, b"aad") == b"x"
    assert (tmp_path / "keys" / "keyring.json").stat().st_mode & 0o077 == 0


def test_idempotent_producers_default_to_production_only_and_can_be_forced() -> None:
    assert Settings(environment="local").idempotent_producer is False
    assert Settings(environment="local", kafka_idempotent_producer=True).idempotent_producer is True
    forced_off = Settings(**PRODUCTION, kafka_idempotent_producer=False)  # type: ignore[arg-type]
    assert forced_off.idempotent_producer is False
