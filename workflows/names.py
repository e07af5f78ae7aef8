"""Every name shared across processes: task queues, search attributes, Kafka topics."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

BUNDLE_TASK_QUEUE = "bundles"
"""Task queue of `BundleWorkflow` (suffix; a deployment adds its prefix)."""

LEGACY_TASK_QUEUE_PREFIX = "legacy."
"""Each legacy system's step activities run on their own queue, so one system can be throttled."""


def bundle_task_queue(prefix: str) -> str:
    """Task queue of bundle workflows for a deployment prefix."""
    return f"{prefix}.{BUNDLE_TASK_QUEUE}"


def legacy_task_queue(prefix: str, system: str) -> str:
    """Task queue of one legacy system's activities for a deployment prefix."""
    return f"{prefix}.{LEGACY_TASK_QUEUE_PREFIX}{system}"


SA_BUNDLE_ID = SearchAttributeKey.for_keyword("TellonceBundleId")
SA_JURISDICTION = SearchAttributeKey.for_keyword("TellonceJurisdiction")
SA_STATE = SearchAttributeKey.for_keyword("TellonceState")
SA_ATTENTION_STEPS = SearchAttributeKey.for_keyword_list("TellonceAttentionSteps")

SA_STUCK = SearchAttributeKey.for_bool("TellonceStuck")
SA_STUCK_REASONS = SearchAttributeKey.for_keyword_list("TellonceStuckReasons")
SA_STUCK_SYSTEMS = SearchAttributeKey.for_keyword_list("TellonceStuckSystems")
SA_STUCK_SINCE = SearchAttributeKey.for_datetime("TellonceStuckSince")

SEARCH_ATTRIBUTES = (
    SA_BUNDLE_ID,
    SA_JURISDICTION,
    SA_STATE,
    SA_ATTENTION_STEPS,
    SA_STUCK,
    SA_STUCK_REASONS,
    SA_STUCK_SYSTEMS,
    SA_STUCK_SINCE,
)
"""Registered on every namespace tellonce uses (values are ids and states, never personal data)."""

EVENTS_TASK_QUEUE = "events"
"""Task queue of the activity that publishes bundle events (suffix), apart from legacy calls so a
broker outage never takes a legacy system's worker slots."""


def events_task_queue(prefix: str) -> str:
    """Task queue of the event-publishing activity for a deployment prefix."""
    return f"{prefix}.{EVENTS_TASK_QUEUE}"


BIRTH_NOTICE_WORKFLOW_PREFIX = "birth-notice-"
"""Id prefix of `BirthNoticeMatchWorkflow`; the rest is a keyed digest of the matching facts."""

TOPIC_SUBMISSIONS = "tellonce.submissions"
TOPIC_SUBMISSIONS_DLQ = "tellonce.submissions.dlq"
TOPIC_BUNDLE_EVENTS = "tellonce.bundle-events"
TOPIC_BIRTH_NOTICES = "vital-events.birth-notices"
TOPIC_BIRTH_NOTICES_DLQ = "vital-events.birth-notices.dlq"
TOPIC_LEGACY_REPLIES_DLQ = "legacy.replies.dlq"
LEGACY_TOPIC_PREFIX = "legacy."


def legacy_requests_topic(system: str) -> str:
    """Topic a message-queue legacy system reads its requests from."""
    return f"{LEGACY_TOPIC_PREFIX}{system}.requests"


def legacy_replies_topic(system: str) -> str:
    """Topic a message-queue legacy system writes its replies to."""
    return f"{LEGACY_TOPIC_PREFIX}{system}.replies"


def idempotency_key(workflow_id: str, step_id: str, operation: str, revision: int = 0) -> str:
    """The key a legacy system de-duplicates one step's request by, and the correlation id of
    its asynchronous reply: workflow id, step and operation, never the run id."""
    suffix = f":r{revision}" if revision else ""
    return f"{workflow_id}:{step_id}:{operation}{suffix}"


def parse_idempotency_key(key: str) -> tuple[str, str, str, int] | None:
    """`(workflow_id, step_id, operation, revision)` of a key made by `idempotency_key`, or None."""
    parts = key.split(":")
    revision = 0
    if len(parts) == 4 and parts[3].startswith("r") and parts[3][1:].isdigit():
        revision = int(parts[3][1:])
        parts = parts[:3]
    if len(parts) != 3 or not all(parts):
        return None
    workflow_id, step_id, operation = parts
    return workflow_id, step_id, operation, revision


REPLY_COLLECTOR_WORKFLOW_PREFIX = "batch-replies-"
"""Id prefix of `BatchReplyCollectorWorkflow`: one per batch system and deployment prefix."""


def reply_collector_id(prefix: str, system: str) -> str:
    """The fixed id of a batch system's reply collector, `<prefix>.batch-replies-<system>`, so that
    every worker process of a deployment starts (or finds) the same one."""
    return f"{prefix}.{REPLY_COLLECTOR_WORKFLOW_PREFIX}{system}"


SYSTEM_CONTROL_WORKFLOW_PREFIX = "system."
"""Id infix of `SystemControlWorkflow`: one per legacy system and deployment prefix."""


def system_control_id(prefix: str, system: str) -> str:
    """The fixed id of a legacy system's control workflow, `<prefix>.system.<system>`: every worker,
    bundle and operator of a deployment finds the same one."""
    return f"{prefix}.{SYSTEM_CONTROL_WORKFLOW_PREFIX}{system}"
