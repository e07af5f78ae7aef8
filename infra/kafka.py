"""The one place a Kafka connection is configured: bootstrap servers, TLS and SASL from settings.

Nothing here assumes the embedded broker: `tellonce dev` only changes the defaults it points at.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from infra.settings import Settings


def bootstrap_servers(settings: Settings) -> list[str]:
    """The bootstrap servers as a list (settings hold a comma-separated string)."""
    return [server.strip() for server in settings.kafka_target.split(",") if server.strip()]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL and SASL_SSL, with a client certificate when one is set."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for the configured protocol and SASL mechanism.

    Raises:
        ValueError: SASL is asked for without a mechanism, user name or password.
    """
    context = ssl_context(settings)
    protocol = settings.kafka_security_protocol
    if protocol in ("PLAINTEXT", "SSL"):
        return BaseSecurity(ssl_context=context) if context else None
    if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username and settings.kafka_sasl_password):
        raise ValueError(
            f"TELLONCE_KAFKA_SECURITY_PROTOCOL={protocol} needs TELLONCE_KAFKA_SASL_MECHANISM, "
            "TELLONCE_KAFKA_SASL_USERNAME and TELLONCE_KAFKA_SASL_PASSWORD"
        )
    sasl_class = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[
        settings.kafka_sasl_mechanism
    ]
    return sasl_class(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )


def kafka_broker(settings: Settings, **options: Any) -> KafkaBroker:
    """A FastStream broker for the configured cluster.

    Its producer is idempotent (which implies `acks=all`) unless the settings turn that off for a
    broker that refuses it, so a retried send never writes a message twice within a session.
    """
    return KafkaBroker(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=settings.kafka_client_id,
        security=security(settings),
        enable_idempotence=settings.idempotent_producer,
        **options,
    )
