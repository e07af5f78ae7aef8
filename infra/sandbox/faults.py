"""Fault injection for the legacy sandbox: what an operator or a test can make a system do.

Faults are checked in a fixed order before a request is processed (down, rate limit, `fail_next`,
`error_rate`); business rules (`reject_when`, `review_when`) and latency apply while processing.
"""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from bundles.models import LocalizedText

CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class FieldRule(BaseModel):
    """Answer with a business error when a field of the request holds a value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(
        min_length=1, description="Dotted path in the request's `fields`, e.g. `child.surname`."
    )
    equals: JsonValue = Field(description="The value that triggers the rule (compared as JSON).")
    code: str | None = Field(default=None, pattern=CODE_PATTERN)
    message: LocalizedText | None = None

    def matches(self, fields: dict[str, Any]) -> bool:
        """True when `fields` holds `equals` at `field`."""
        value: Any = fields
        for part in self.field.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        # JSON has no bool/int confusion: True must not match 1.
        return bool(value == self.equals and type(value) is type(self.equals))


class FaultUpdate(BaseModel):
    """Body of `PUT /sandbox/systems/{id}/faults`: only the keys present change (merge-update)."""

    model_config = ConfigDict(extra="forbid")

    down: bool | None = Field(default=None, description="503 until set back to false.")
    down_for_s: float | None = Field(
        default=None, gt=0, le=86_400, description="503 for this many seconds from now, then up by itself."
    )
    error_rate: float | None = Field(
        default=None, ge=0, le=1, description="Share of requests that get a 500."
    )
    fail_next: int | None = Field(default=None, ge=0, le=10_000, description="The next N requests get a 500.")
    latency_ms: int | None = Field(default=None, ge=0, le=600_000, description="Delay before answering.")
    reject_when: FieldRule | None = Field(default=None, description="422 with `{code, message}`.")
    review_when: FieldRule | None = Field(default=None, description="409: a person must look.")
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=10_000, description="429 above this rate.")
    maintenance_for_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description=(
            "Closed for planned maintenance for this many seconds from now: 503 with code "
            "`closed_for_maintenance` and a Retry-After at the reopening time."
        ),
    )
    malformed_replies: bool | None = Field(
        default=None,
        description="Systems that answer later (batch files, message queues) garble their replies.",
    )
    drop_replies: bool | None = Field(
        default=None, description="Systems that answer later accept requests but never reply."
    )
    key_prefix: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Apply faults only to requests whose Idempotency-Key starts with this prefix, so tests "
            "sharing one sandbox do not disturb each other. Status reads carry no key: unaffected."
        ),
    )


class Fault(BaseModel):
    """An injected failure answer."""

    status: int
    code: str
    message: LocalizedText
    retry_after_s: int | None = None


UNAVAILABLE = LocalizedText(
    en="The system is unavailable. Try again later.",
    fr="Le système est indisponible. Réessayez plus tard.",
)
INTERNAL_ERROR = LocalizedText(
    en="The system had an internal error.",
    fr="Le système a eu une erreur interne.",
)
CLOSED = LocalizedText(
    en="The system is closed for planned maintenance.",
    fr="Le système est fermé pour un entretien planifié.",
)
TOO_MANY_REQUESTS = LocalizedText(
    en="Too many requests. Slow down.",
    fr="Trop de demandes. Ralentissez.",
)


class FaultState:
    """The current faults of one system, with the counters and clocks they need."""

    def __init__(self) -> None:
        self.down = False
        self.down_until: datetime | None = None
        self.error_rate = 0.0
        self.fail_next = 0
        self.latency_ms = 0
        self.reject_when: FieldRule | None = None
        self.review_when: FieldRule | None = None
        self.rate_limit_per_s: float | None = None
        self.key_prefix: str | None = None
        self.maintenance_until: datetime | None = None
        self.malformed_replies = False
        self.drop_replies = False
        self._tokens = 0.0
        self._refilled_at = 0.0

    def update(self, update: FaultUpdate, now: datetime) -> None:
        """Merge the keys present in `update`; an explicit null clears an optional setting."""
        present = update.model_fields_set
        if "down" in present:
            self.down = bool(update.down)
            if not update.down:
                # "Up" means up now, whatever a timed outage still had to run.
                self.down_until = None
        if "down_for_s" in present:
            self.down_until = (
                None if update.down_for_s is None else now + timedelta(seconds=update.down_for_s)
            )
        if "error_rate" in present:
            self.error_rate = update.error_rate or 0.0
        if "fail_next" in present:
            self.fail_next = update.fail_next or 0
        if "latency_ms" in present:
            self.latency_ms = update.latency_ms or 0
        if "reject_when" in present:
            self.reject_when = update.reject_when
        if "review_when" in present:
            self.review_when = update.review_when
        if "rate_limit_per_s" in present:
            self.rate_limit_per_s = update.rate_limit_per_s
            # A new limit starts with a full bucket: the first request after setting it passes.
            self._tokens = max(1.0, update.rate_limit_per_s or 0.0)
            self._refilled_at = time.monotonic()
        if "key_prefix" in present:
            self.key_prefix = update.key_prefix
        self._update_schedule_and_replies(update, now)

    def _update_schedule_and_replies(self, update: FaultUpdate, now: datetime) -> None:
        present = update.model_fields_set
        if "maintenance_for_s" in present:
            seconds = update.maintenance_for_s
            self.maintenance_until = None if seconds is None else now + timedelta(seconds=seconds)
        if "malformed_replies" in present:
            self.malformed_replies = bool(update.malformed_replies)
        if "drop_replies" in present:
            self.drop_replies = bool(update.drop_replies)

    def applies_to(self, idempotency_key: str | None) -> bool:
        """Whether faults apply to a request carrying this key."""
        if self.key_prefix is None:
            return True
        return idempotency_key is not None and idempotency_key.startswith(self.key_prefix)

    def is_down(self, now: datetime) -> bool:
        """Down by switch or by a timed outage that has not ended."""
        return self.down or (self.down_until is not None and now < self.down_until)

    def check(self, now: datetime) -> Fault | None:
        """The failure to answer with before processing, if any (consumes counters and tokens)."""
        if self.maintenance_until is not None and now < self.maintenance_until:
            reopens_in = max(1, math.ceil((self.maintenance_until - now).total_seconds()))
            return Fault(status=503, code="closed_for_maintenance", message=CLOSED, retry_after_s=reopens_in)
        if self.is_down(now):
            retry_after = None
            if not self.down and self.down_until is not None:
                retry_after = max(1, math.ceil((self.down_until - now).total_seconds()))
            return Fault(status=503, code="unavailable", message=UNAVAILABLE, retry_after_s=retry_after)
        if self.rate_limit_per_s is not None:
            wait_s = self._take_token(self.rate_limit_per_s)
            if wait_s > 0:
                return Fault(
                    status=429,
                    code="rate_limited",
                    message=TOO_MANY_REQUESTS,
                    retry_after_s=max(1, math.ceil(wait_s)),
                )
        if self.fail_next > 0:
            self.fail_next -= 1
            return Fault(status=500, code="internal_error", message=INTERNAL_ERROR)
        # Simulated faults, not security: a plain PRNG is right here.
        if self.error_rate > 0 and random.random() < self.error_rate:  # noqa: S311
            return Fault(status=500, code="internal_error", message=INTERNAL_ERROR)
        return None

    def _take_token(self, rate: float) -> float:
        """Token bucket (capacity max(1, rate)); returns 0 when a token was taken, else seconds to wait."""
        now = time.monotonic()
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def view(self, now: datetime) -> dict[str, Any]:
        """The settings as the admin API shows them."""
        return {
            "down": self.down,
            "down_until": self.down_until.isoformat() if self.down_until and self.down_until > now else None,
            "error_rate": self.error_rate,
            "fail_next": self.fail_next,
            "latency_ms": self.latency_ms,
            "reject_when": self.reject_when.model_dump(mode="json") if self.reject_when else None,
            "review_when": self.review_when.model_dump(mode="json") if self.review_when else None,
            "rate_limit_per_s": self.rate_limit_per_s,
            "key_prefix": self.key_prefix,
            "maintenance_until": (
                self.maintenance_until.isoformat()
                if self.maintenance_until and self.maintenance_until > now
                else None
            ),
            "malformed_replies": self.malformed_replies,
            "drop_replies": self.drop_replies,
        }


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
