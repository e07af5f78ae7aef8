"""The one place configuration is read: `TELLONCE_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.availability import CRA_ONLINE_HOURS, Availability
from infra.crypto import FileKeyProvider, KeyProvider, Keyring, StaticKeyProvider, load_provider
from workflows.models import CURRENT_ENGINE_REVISION, DEFAULT_STUCK_AFTER_ATTEMPTS
from workflows.names import (
    TOPIC_BIRTH_NOTICES,
    TOPIC_BIRTH_NOTICES_DLQ,
    TOPIC_BUNDLE_EVENTS,
    TOPIC_LEGACY_REPLIES_DLQ,
    TOPIC_SUBMISSIONS,
    TOPIC_SUBMISSIONS_DLQ,
)
from workflows.system_control import BreakerPolicy

DEV_ACCESS_CODE_SECRET = "local-development-only-access-code-secret"  # noqa: S105 - refused outside local/test
DEV_CORRELATION_SECRET = "local-development-only-correlation-secret"  # noqa: S105 - refused outside local/test
DEV_SFTP_PASSWORD = "local-development-only-sftp-password"  # noqa: S105 - refused in production

PORT_OFFSETS: dict[str, int] = {
    "api": 800,
    "sandbox": 801,
    "streams": 802,
    "sandbox-sftp": 803,
    "temporal": 33,
    "temporal-http": 43,
    "temporal-metrics": 1034,
    "temporal-ui": 1033,
    "kafka": 1892,
    "api-sdk-metrics": 810,
    "worker-metrics": 811,
    "worker-sdk-metrics": 812,
    "streams-metrics": 813,
    "streams-sdk-metrics": 814,
}
"""Each service's port is `port_base` plus its offset (base 7200: Temporal 7233, UI 8233, Kafka 9092)."""


class LegacySystemSettings(BaseModel):
    """How one legacy system is reached and how hard tellonce may press it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_limit_per_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Most calls per second to this system across every worker (Temporal's task-queue "
            "activity rate); None for no limit."
        ),
    )
    max_concurrent: int | None = Field(
        default=None, ge=1, description="Most calls in flight at once per worker process."
    )
    availability: Availability | None = Field(
        default=None, description="When the system is open; None for always."
    )
    url: str | None = Field(
        default=None, description="The system's endpoint; default the legacy sandbox's endpoint for it."
    )
    release_per_s: float | None = Field(
        default=None, gt=0, description="Held calls released per second after a pause or an open breaker."
    )
    stuck_after_attempts: int | None = Field(
        default=None, ge=1, description="A step at this system retrying past this many attempts is stuck."
    )
    breaker: BreakerPolicy | None = Field(
        default=None, description="When the system's circuit breaker opens; default `ops_breaker`."
    )


DEFAULT_LEGACY_SYSTEMS: dict[str, LegacySystemSettings] = {
    system: LegacySystemSettings(availability=CRA_ONLINE_HOURS) for system in ("cra-aba", "cra-address")
}
"""CRA's systems close every night 03:00-06:00 Eastern; the rest are open and unthrottled by default."""


class RateLimit(BaseModel):
    """One per-client budget: `burst` requests at once, refilled at `per_minute`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    burst: int = Field(ge=1, description="Requests a client may make at once.")
    per_minute: float = Field(gt=0, description="Requests a client regains per minute.")


OpsRoleName = Literal["viewer", "operator", "supervisor"]


def _default_role_map() -> dict[str, OpsRoleName]:
    """Issuer role names that are already tellonce's own."""
    return {"viewer": "viewer", "operator": "operator", "supervisor": "supervisor"}


class Settings(BaseSettings):
    """tellonce settings. Every field can be set as `TELLONCE_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="TELLONCE_", env_file=".env", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    host: str = "127.0.0.1"
    port_base: int = Field(default=7200, ge=1024, le=60000)
    data_dir: Path = Path(".tellonce")

    temporal_address: str | None = None
    temporal_namespace: str = "tellonce"
    temporal_tls: bool = Field(
        default=False,
        description=(
            "Connect to Temporal over TLS (a self-hosted cluster behind TLS, Temporal Cloud). "
            "Implied by a client certificate or an API key."
        ),
    )
    temporal_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the frontend's certificate; default the system's."
    )
    temporal_tls_cert_file: Path | None = Field(
        default=None, description="Client certificate for mutual TLS (Temporal Cloud mTLS namespaces)."
    )
    temporal_tls_key_file: Path | None = Field(default=None, description="The client certificate's key.")
    temporal_tls_server_name: str | None = Field(
        default=None, description="Name to verify the frontend's certificate against, if not its host."
    )
    temporal_api_key: SecretStr | None = Field(
        default=None,
        description="API key for Temporal Cloud (sent as a bearer token, over TLS); instead of mTLS.",
    )
    task_queue_prefix: str = "tellonce"
    streams_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of a streams process's `/health` and `/asyncapi.json`; default port base + 802. "
            "Each streams process on one host needs its own."
        ),
    )

    kafka_bootstrap: str | None = Field(
        default=None, description="Comma-separated host:port list; default the embedded broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_client_id: str = "tellonce"
    kafka_idempotent_producer: bool | None = Field(
        default=None,
        description=(
            "Idempotent producers (acks=all, no duplicates from a producer's own retries); unset "
            "means on in production only, because the embedded Tansu broker refuses them."
        ),
    )
    kafka_consumer_group: str = "tellonce-streams"
    kafka_topic_submissions: str = TOPIC_SUBMISSIONS
    kafka_topic_submissions_dlq: str = TOPIC_SUBMISSIONS_DLQ
    kafka_topic_bundle_events: str = TOPIC_BUNDLE_EVENTS
    kafka_topic_birth_notices: str = TOPIC_BIRTH_NOTICES
    kafka_topic_birth_notices_dlq: str = TOPIC_BIRTH_NOTICES_DLQ
    kafka_topic_legacy_replies_dlq: str = TOPIC_LEGACY_REPLIES_DLQ
    kafka_legacy_reply_systems: tuple[str, ...] = Field(
        default=(),
        description="Systems whose `legacy.<system>.replies` topic streams consumes; empty means all known.",
    )
    kafka_partitions: int = Field(default=3, ge=1, description="Partitions of topics `tellonce dev` creates.")
    kafka_replication_factor: int = Field(default=1, ge=1)

    events_enabled: bool = Field(
        default=True, description="Publish bundle and step state changes to the bundle-events topic."
    )
    engine_revision: int = Field(
        default=CURRENT_ENGINE_REVISION,
        ge=1,
        le=CURRENT_ENGINE_REVISION,
        description=(
            "The engine revision intake starts new bundles on (`BundleInput.engine_revision`). "
            "During a rolling upgrade keep the previous one until every worker runs this release: "
            "a worker that predates a revision runs its bundles the old way, and they would not "
            "replay on the new code."
        ),
    )
    correlation_secret: SecretStr = Field(
        default=SecretStr(DEV_CORRELATION_SECRET),
        description="Keys the digests that let a birth notice and a bundle find each other.",
    )

    sandbox_url: str | None = None
    api_url: str | None = None

    access_code_secret: SecretStr = SecretStr(DEV_ACCESS_CODE_SECRET)

    legacy_systems: dict[str, LegacySystemSettings] = Field(
        default_factory=lambda: dict(DEFAULT_LEGACY_SYSTEMS),
        description=(
            "Per legacy system: rate limit, concurrency, availability calendar, endpoint. JSON in "
            "TELLONCE_LEGACY_SYSTEMS replaces the defaults as a whole."
        ),
    )
    batch_transport: Literal["sftp", "directory"] = Field(
        default="sftp", description="How batch-file systems exchange files: SFTP, or a shared directory."
    )
    batch_directory: Path | None = Field(
        default=None, description="Root of the shared batch directory; default <data_dir>/sandbox/batch."
    )
    sftp_host: str | None = Field(default=None, description="Batch SFTP server; default the sandbox's.")
    sftp_port: int | None = None
    sftp_username: str = "tellonce"
    sftp_password: SecretStr | None = Field(
        default=SecretStr(DEV_SFTP_PASSWORD),
        description="Password of the SFTP account (or use a key file).",
    )
    sftp_client_key: Path | None = None
    sftp_known_hosts: Path | None = Field(
        default=None,
        description="known_hosts file pinning the SFTP server's key; None trusts any (dev only).",
    )
    batch_poll_interval: timedelta = Field(
        default=timedelta(seconds=30), description="How often tellonce looks for batch reply files."
    )
    sandbox_batch_interval: timedelta = Field(
        default=timedelta(seconds=1),
        gt=timedelta(0),
        description="How often the legacy sandbox's batch systems process their inbox (its 'nightly' run).",
    )

    encryption_enabled: bool = Field(
        default=True,
        description=(
            "Encrypt Temporal payloads and personal data on Kafka. Off only to show what it hides; "
            "refused in production."
        ),
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description='Keyring JSON: {"active": KID, "keys": {KID: {"secret": base64, "created": time}}}.',
    )
    encryption_keys_file: Path | None = Field(
        default=None,
        description=(
            "Keyring file; default <data_dir>/keys/keyring.json, created on first use outside production."
        ),
    )
    encryption_key_provider: str | None = Field(
        default=None,
        description="`package.module:factory` returning a KeyProvider (e.g. backed by a KMS).",
    )
    retention_period: timedelta = Field(
        default=timedelta(days=30),
        gt=timedelta(0),
        description=(
            "How long a finished bundle keeps its personal data; afterwards only its non-personal "
            "record remains."
        ),
    )

    ops_enabled: bool = Field(
        default=True,
        description="Serve the operations API (`/api/v1/ops`); production also needs TELLONCE_OIDC_ISSUER.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description=(
            "Issuer of operators' bearer tokens (its `/.well-known/openid-configuration` names the "
            "JWKS); unset outside production, the API acts as a local issuer with its own signing key."
        ),
    )
    oidc_audience: str = Field(default="tellonce-ops", description="The `aud` operators' tokens must carry.")
    oidc_algorithms: tuple[str, ...] = Field(
        default=("RS256", "PS256", "ES256", "EdDSA"),
        min_length=1,
        description="Signature algorithms accepted (never `none`, never HMAC).",
    )
    oidc_roles_claim: str = Field(
        default="roles",
        description="Claim holding the operator's roles; dots go down objects (`realm_access.roles`).",
    )
    oidc_role_map: dict[str, OpsRoleName] = Field(
        default_factory=_default_role_map,
        description="The issuer's role names mapped to tellonce roles (the highest one found counts).",
    )
    oidc_jwks_ttl: timedelta = Field(
        default=timedelta(minutes=10), gt=timedelta(0), description="How long the issuer's keys are cached."
    )
    oidc_leeway: timedelta = Field(
        default=timedelta(seconds=30), description="Clock skew allowed on `exp`, `nbf` and `iat`."
    )
    ops_token_ttl: timedelta = Field(
        default=timedelta(hours=12), gt=timedelta(0), description="Lifetime of tokens the local issuer mints."
    )
    ops_signing_key_file: Path | None = Field(
        default=None, description="The local issuer's key; default <data_dir>/keys/ops-signing.json (0600)."
    )
    audit_file: Path | None = Field(
        default=None, description="The operations audit trail (SQLite); default <data_dir>/audit/audit.sqlite"
    )
    temporal_ui_origins: tuple[str, ...] | None = Field(
        default=None,
        description=(
            "Origins of the Temporal Web UI allowed to call the codec endpoint (CORS); default the "
            "dev stack's UI on localhost and 127.0.0.1."
        ),
    )

    ops_stuck_after_attempts: int = Field(
        default=DEFAULT_STUCK_AFTER_ATTEMPTS,
        ge=1,
        description="A step retrying past this many attempts is stuck (per system: legacy_systems).",
    )
    ops_release_per_s: float = Field(
        default=5.0,
        gt=0,
        description="Held calls released per second per system after a pause or an open breaker.",
    )
    ops_breaker: BreakerPolicy = Field(
        default_factory=BreakerPolicy,
        description="Circuit breaker of every legacy system (window, min_calls, failure_rate, open_for).",
    )
    ops_control_refresh: timedelta = Field(
        default=timedelta(seconds=1),
        gt=timedelta(0),
        description="How long a worker trusts its copy of a system's pause and breaker state.",
    )

    behind_tls: bool = Field(
        default=False,
        description=(
            "Residents reach tellonce over HTTPS (TLS may end at a proxy in front): send HSTS and "
            "Secure cookies even when the last hop is plain HTTP."
        ),
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=10,
        description=(
            "Proxies in front of the API that append to X-Forwarded-For; rate limits key on the "
            "address the outermost one saw. 0 ignores the header."
        ),
    )
    csrf_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Keys the portal's CSRF tokens; the API refuses to start without it in production. "
            "Elsewhere it is made once in <data_dir>/keys/csrf-secret."
        ),
    )
    rate_limits_enabled: bool | None = Field(
        default=None,
        description=(
            "Per-client rate limits on submit, status and withdraw; unset means on in production "
            "only, so load and chaos runs on the dev stack measure the engine, not the limiter."
        ),
    )
    rate_limit_submit: RateLimit = Field(
        default=RateLimit(burst=10, per_minute=1), description="Submissions (API and portal)."
    )
    rate_limit_status: RateLimit = Field(
        default=RateLimit(burst=60, per_minute=60),
        description="Status reads and access-code checks (API, status pages and their JSON).",
    )
    rate_limit_withdraw: RateLimit = Field(
        default=RateLimit(burst=5, per_minute=1), description="Withdrawals (API and portal)."
    )

    worker_max_concurrent_activities: int = Field(default=200, ge=1)
    worker_max_concurrent_workflow_tasks: int = Field(default=200, ge=1)
    worker_max_cached_workflows: int = Field(
        default=1000,
        ge=0,
        description=(
            "Workflows a worker keeps in memory between their tasks; one evicted is rebuilt by "
            "replaying its history on its next task."
        ),
    )
    worker_workflow_sandbox: bool = Field(
        default=False,
        description=(
            "Run workflows in the Temporal SDK's sandbox. Off by default: the sandbox re-imports "
            "`workflows/` for every workflow it builds (a quarter of the worker's CPU in `tellonce "
            "bench`), and the workflow code's determinism is held by the workflow tests, which run "
            "sandboxed, and by their replay tests."
        ),
    )

    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "Port of this process's own Prometheus endpoint (`tellonce_*` series, on `metrics_host`); "
            "0 for none. Worker and streams expose their series only there."
        ),
    )
    sdk_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the Temporal SDK's Prometheus endpoint (`temporal_*` series); 0 for none.",
    )
    metrics_host: str | None = Field(
        default=None, description="Interface both metrics endpoints listen on; default `host`."
    )
    api_metrics: bool = Field(
        default=True,
        description=(
            "Serve `/metrics` on the API's own port (unauthenticated), with the gauges read from "
            "Temporal that no other endpoint has; in production the gateway refuses it from outside."
        ),
    )
    metrics_visibility_ttl: timedelta = Field(
        default=timedelta(seconds=15),
        gt=timedelta(0),
        description="How long bundle counts read from Temporal's visibility serve scrapes before a new read.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "Base URL of an OTLP/HTTP collector (e.g. `http://collector:4318`) that receives traces; "
            "none sends no traces. OTEL_EXPORTER_OTLP_HEADERS and the other standard variables apply."
        ),
    )
    otel_service_name: str = Field(
        default="tellonce", description="`service.name` of this process's spans (e.g. `tellonce-worker`)."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @model_validator(mode="after")
    def _refuse_default_secrets_outside_local(self) -> Settings:
        if (
            self.environment == "production"
            and self.access_code_secret.get_secret_value() == DEV_ACCESS_CODE_SECRET
        ):
            raise ValueError("TELLONCE_ACCESS_CODE_SECRET must be set to a secret of your own in production")
        if (
            self.environment == "production"
            and self.correlation_secret.get_secret_value() == DEV_CORRELATION_SECRET
        ):
            raise ValueError("TELLONCE_CORRELATION_SECRET must be set to a secret of your own in production")
        if (
            self.environment == "production"
            and self.batch_transport == "sftp"
            and self.sftp_known_hosts is None
        ):
            raise ValueError(
                "TELLONCE_SFTP_KNOWN_HOSTS must pin the batch SFTP server's host key in production"
            )
        dev_password = self.sftp_password is not None and (
            self.sftp_password.get_secret_value() == DEV_SFTP_PASSWORD
        )
        if self.environment == "production" and self.batch_transport == "sftp" and dev_password:
            raise ValueError("TELLONCE_SFTP_PASSWORD must be your own (or unset, with a key) in production")
        if self.environment == "production" and not self.encryption_enabled:
            raise ValueError("TELLONCE_ENCRYPTION_ENABLED cannot be false in production")
        if self.environment == "production" and not (
            self.encryption_keys or self.encryption_keys_file or self.encryption_key_provider
        ):
            raise ValueError(
                "production needs its keyring: set TELLONCE_ENCRYPTION_KEY_PROVIDER, "
                "TELLONCE_ENCRYPTION_KEYS or TELLONCE_ENCRYPTION_KEYS_FILE"
            )
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ValueError("TELLONCE_TEMPORAL_TLS_CERT_FILE and TELLONCE_TEMPORAL_TLS_KEY_FILE go together")
        if self.environment == "production" and self.kafka_bootstrap is None:
            # Bundles finish only once their status events are out: a Kafka that silently meant
            # the embedded broker's address would leave every bundle open.
            raise ValueError("TELLONCE_KAFKA_BOOTSTRAP must name your Kafka cluster in production")
        return self

    def port(self, service: str) -> int:
        """The port of one service of the local stack."""
        return self.port_base + PORT_OFFSETS[service]

    def legacy_system(self, system: str) -> LegacySystemSettings:
        """One legacy system's settings (defaults when it has none of its own)."""
        return self.legacy_systems.get(system) or LegacySystemSettings()

    def breaker_policy(self, system: str) -> BreakerPolicy:
        """The circuit breaker policy of one legacy system."""
        return self.legacy_system(system).breaker or self.ops_breaker

    def stuck_after_attempts_by_system(self) -> dict[str, int]:
        """Systems whose steps count as stuck after a number of attempts of their own."""
        return {
            system: limits.stuck_after_attempts
            for system, limits in self.legacy_systems.items()
            if limits.stuck_after_attempts is not None
        }

    @cached_property
    def keyring_path(self) -> Path:
        """Where the keyring file is (whether or not it is the configured key source)."""
        return self.encryption_keys_file or self.data_dir / "keys" / "keyring.json"

    @cached_property
    def keyring(self) -> Keyring | None:
        """The keyring every sealing component uses, or None when encryption is off.

        Read once per process: a rotation reaches running processes when they restart.
        """
        if not self.encryption_enabled:
            return None
        provider: KeyProvider
        if self.encryption_key_provider:
            provider = load_provider(self.encryption_key_provider, self)
        elif self.encryption_keys is not None:
            provider = StaticKeyProvider(self.encryption_keys.get_secret_value())
        else:
            provider = FileKeyProvider(self.keyring_path, create=self.environment != "production")
        return provider.keyring()

    @cached_property
    def ops_signing_key_path(self) -> Path:
        """Where the local issuer's signing key is (dev and tests only)."""
        return self.ops_signing_key_file or self.data_dir / "keys" / "ops-signing.json"

    @cached_property
    def audit_path(self) -> Path:
        """Where the operations audit trail is."""
        return self.audit_file or self.data_dir / "audit" / "audit.sqlite"

    @cached_property
    def codec_cors_origins(self) -> tuple[str, ...]:
        """Origins allowed to call the codec endpoint from a browser (the Temporal Web UI)."""
        if self.temporal_ui_origins is not None:
            return self.temporal_ui_origins
        ui = self.port("temporal-ui")
        return (f"http://localhost:{ui}", f"http://127.0.0.1:{ui}")

    @cached_property
    def rate_limiting(self) -> bool:
        """Whether per-client rate limits apply (see `rate_limits_enabled`)."""
        if self.rate_limits_enabled is not None:
            return self.rate_limits_enabled
        return self.environment == "production"

    @cached_property
    def batch_root(self) -> Path:
        """Root of the shared batch directory (the sandbox's under the data dir by default)."""
        return self.batch_directory or self.data_dir / "sandbox" / "batch"

    @cached_property
    def sftp_target(self) -> tuple[str, int]:
        """host and port of the batch SFTP server."""
        return self.sftp_host or self.host, self.sftp_port or self.port("sandbox-sftp")

    @cached_property
    def temporal_target(self) -> str:
        """host:port of the Temporal frontend."""
        return self.temporal_address or f"{self.host}:{self.port('temporal')}"

    @cached_property
    def temporal_uses_tls(self) -> bool:
        """Whether clients reach Temporal over TLS: asked for, or implied by mTLS or an API key."""
        mutual_or_keyed = self.temporal_tls_cert_file is not None or self.temporal_api_key is not None
        return self.temporal_tls or mutual_or_keyed

    @cached_property
    def kafka_target(self) -> str:
        """host:port of the Kafka bootstrap server."""
        return self.kafka_bootstrap or f"{self.host}:{self.port('kafka')}"

    @cached_property
    def idempotent_producer(self) -> bool:
        """Whether Kafka producers ask for idempotence (see `kafka_idempotent_producer`)."""
        if self.kafka_idempotent_producer is not None:
            return self.kafka_idempotent_producer
        return self.environment == "production"

    @cached_property
    def sandbox_base_url(self) -> str:
        """Base URL of the legacy sandbox."""
        return (self.sandbox_url or f"http://{self.host}:{self.port('sandbox')}").rstrip("/")

    @cached_property
    def api_base_url(self) -> str:
        """Base URL of the HTTP API."""
        return (self.api_url or f"http://{self.host}:{self.port('api')}").rstrip("/")
