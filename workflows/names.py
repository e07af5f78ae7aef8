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

SEARCH_ATTRIBUTES = (SA_BUNDLE_ID, SA_JURISDICTION, SA_STATE, SA_ATTENTION_STEPS)
"""Registered on every namespace tellonce uses (values are ids and states, never personal data)."""

TOPIC_SUBMISSIONS = "tellonce.submissions"
TOPIC_SUBMISSIONS_DLQ = "tellonce.submissions.dlq"
TOPIC_BUNDLE_EVENTS = "tellonce.bundle-events"
