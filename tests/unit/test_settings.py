"""Settings refuse what would be unsafe or silently wrong in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import Settings

PRODUCTION = {
    "environment": "production",
    "access_code_secret": "a-production-access-code-secret",
    "correlation_secret": "a-production-correlation-secret",
    "kafka_bootstrap": "kafka-1.internal:9093,kafka-2.internal:9093",
    "sftp_known_hosts": "/etc/tellonce/known_hosts",
    "sftp_password": "a-production-sftp-password",
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


def test_idempotent_producers_default_to_production_only_and_can_be_forced() -> None:
    assert Settings(environment="local").idempotent_producer is False
    assert Settings(environment="local", kafka_idempotent_producer=True).idempotent_producer is True
    forced_off = Settings(**PRODUCTION, kafka_idempotent_producer=False)  # type: ignore[arg-type]
    assert forced_off.idempotent_producer is False
