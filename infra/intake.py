"""Intake: validate a submission, resolve its plan and start its bundle exactly once.

Shared by every channel (HTTP, Kafka, the CLI). The workflow id is the submission id, and
bundles start with `REJECT_DUPLICATE` + `FAIL`, so the same submission can never start twice,
whether the duplicate arrives while the first bundle runs or after it closed; the refusal is
what tells a duplicate (checked against the first request's fingerprint) from a new bundle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from bundles.catalogue import Catalogue
from bundles.models import LocalizedText
from bundles.plan import resolve_plan
from bundles.submissions import validate_submission
from infra.records import RecordStore
from infra.settings import Settings
from workflows.bundle import BundleWorkflow
from workflows.models import BundleInput, BundleStatus
from workflows.names import SA_BUNDLE_ID, SA_JURISDICTION, SA_STATE, bundle_task_queue

log = structlog.get_logger("tellonce.intake")

FINGERPRINT_MEMO = "request_fingerprint"


class IdempotencyConflict(Exception):  # noqa: N818  # named for the HTTP problem it becomes
    """The same idempotency key was used earlier with a different submission."""


@dataclass(frozen=True)
class Accepted:
    """A submission whose bundle has durably started (now or earlier)."""

    tracking_id: str
    access_code: str
    notices: list[LocalizedText] = field(default_factory=list)


class Intake:
    """Starts bundles and guards access to their status."""

    def __init__(
        self, client: Client, catalogue: Catalogue, settings: Settings, records: RecordStore | None = None
    ) -> None:
        self.client = client
        self.catalogue = catalogue
        self.settings = settings
        self.records = records
        self._secret = settings.access_code_secret.get_secret_value().encode()

    async def submit(
        self,
        bundle_id: str,
        raw: Mapping[str, Any],
        *,
        channel: Literal["api", "kafka", "cli"],
        submission_id: str | None = None,
        idempotency_key: str | None = None,
        external_id: str | None = None,
    ) -> Accepted:
        """Validate and start a bundle; returns once Temporal has durably recorded the start.

        Raises:
            KeyError: unknown bundle id.
            bundles.submissions.SubmissionInvalid: the submission fails validation.
            IdempotencyConflict: the idempotency key was used before with other data.

        `external_id` is the sending system's own id of the submission (Kafka channel); it is
        echoed in status events so that system can follow its bundle.
        """
        definition = self.catalogue.get(bundle_id)
        validated = validate_submission(definition, raw)
        plan = resolve_plan(definition, validated.data, validated.consents)
        if submission_id is None:
            submission_id = (
                self._derived_id(bundle_id, idempotency_key) if idempotency_key else str(uuid.uuid4())
            )
        fingerprint = self.fingerprint(bundle_id, raw)
        record = await self.records.get(submission_id) if self.records is not None else None
        if record is not None:
            # Its bundle finished and was removed after the retention period, which freed the
            # id in Temporal: starting again would call every legacy system a second time.
            known = record.request_fingerprint
            if known is not None and not hmac.compare_digest(known, fingerprint):
                raise IdempotencyConflict(submission_id)
            log.info("submission.duplicate_of_removed_bundle", bundle=submission_id, channel=channel)
            return Accepted(tracking_id=submission_id, access_code=self.access_code(submission_id))
        # FAIL on a running bundle and REJECT_DUPLICATE on a closed one: either way a second
        # start raises instead of starting, and only then is there something to compare, so the
        # common case (a new submission) costs one call to Temporal.
        try:
            await self.client.start_workflow(
                BundleWorkflow.run,
                BundleInput(
                    submission_id=submission_id,
                    channel=channel,
                    external_id=external_id,
                    plan=plan,
                    received_at=datetime.now(UTC),
                    task_queue_prefix=self.settings.task_queue_prefix,
                    publish_events=self.settings.events_enabled,
                    engine_revision=self.settings.engine_revision,
                    stuck_after_attempts=self.settings.ops_stuck_after_attempts,
                    stuck_after_attempts_by_system=self.settings.stuck_after_attempts_by_system(),
                ),
                id=submission_id,
                task_queue=bundle_task_queue(self.settings.task_queue_prefix),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={FINGERPRINT_MEMO: fingerprint},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(SA_BUNDLE_ID, plan.bundle_id),
                        SearchAttributePair(SA_JURISDICTION, plan.jurisdiction),
                        SearchAttributePair(SA_STATE, "received"),
                    ]
                ),
                static_summary=f"{plan.bundle_id} v{plan.definition_version} via {channel}",
            )
        except WorkflowAlreadyStartedError:
            await self._check_same_request(submission_id, fingerprint)
        log.info(
            "submission.accepted",
            bundle=submission_id,
            bundle_id=bundle_id,
            channel=channel,
            definition_version=plan.definition_version,
        )
        return Accepted(
            tracking_id=submission_id,
            access_code=self.access_code(submission_id),
            notices=list(validated.notices),
        )

    def fingerprint(self, bundle_id: str, raw: Mapping[str, Any]) -> str:
        """A keyed digest of a request, to tell a resend of it from other data under the same id."""
        return self._mac(f"request:{bundle_id}:{_canonical(raw)}")

    async def _check_same_request(self, submission_id: str, fingerprint: str) -> None:
        """Refuse a reused id whose bundle was started from different data."""
        description = await self.client.get_workflow_handle(submission_id).describe()
        memo = await description.memo()
        if not hmac.compare_digest(str(memo.get(FINGERPRINT_MEMO, "")), fingerprint):
            raise IdempotencyConflict(submission_id)

    def handle(self, tracking_id: str) -> WorkflowHandle[BundleWorkflow, BundleStatus]:
        """The bundle of a tracking id (which is its workflow id)."""
        return self.client.get_workflow_handle_for(BundleWorkflow.run, tracking_id)

    def access_code(self, tracking_id: str) -> str:
        """The access code of a tracking id: derived with a server secret, so nothing is stored."""
        digest = hmac.new(self._secret, f"access:{tracking_id}".encode(), hashlib.sha256).digest()
        code = base64.b32encode(digest[:10]).decode()  # 80 bits, 16 characters
        return "-".join(code[i : i + 4] for i in range(0, 16, 4))

    def check_access(self, tracking_id: str, code: str | None) -> bool:
        """Constant-time comparison of a presented access code (case, spaces and dashes ignored)."""
        if not code:
            return False
        presented = code.replace("-", "").replace(" ", "").upper()
        expected = self.access_code(tracking_id).replace("-", "")
        return hmac.compare_digest(presented.encode(), expected.encode())

    def _derived_id(self, bundle_id: str, idempotency_key: str) -> str:
        """A submission id derived from a client's idempotency key, unguessable to anyone else."""
        digest = hmac.new(self._secret, f"idem:{bundle_id}:{idempotency_key}".encode(), hashlib.sha256)
        return str(uuid.UUID(bytes=digest.digest()[:16], version=4))

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()


def _canonical(raw: Mapping[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
