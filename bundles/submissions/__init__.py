"""Submission schemas by name, and validation of a resident's submission against a bundle."""

from __future__ import annotations

from bundles.submissions.registry import SUBMISSION_SCHEMAS, field_paths
from bundles.submissions.validation import (
    FieldError,
    SubmissionInvalid,
    ValidatedSubmission,
    validate_submission,
)

__all__ = [
    "SUBMISSION_SCHEMAS",
    "FieldError",
    "SubmissionInvalid",
    "ValidatedSubmission",
    "field_paths",
    "validate_submission",
]
