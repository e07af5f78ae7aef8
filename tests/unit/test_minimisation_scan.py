"""The ledger scan that proves data minimisation can fail: it finds a value sent outside a projection."""

from __future__ import annotations

from typing import Any

from bundles.models import BundleDefinition
from bundles.plan import resolve_plan
from tests.minimisation import leaked_fields, normalised


def text(en: str) -> dict[str, str]:
    return {"en": en, "fr": f"{en} (fr)"}


DEFINITION = BundleDefinition.model_validate(
    {
        "id": "scan-test",
        "version": 1,
        "jurisdiction": "CA-ON",
        "life_event": "birth",
        "title": text("Scan"),
        "description": text("Scan"),
        "submission_schema": "newborn/v1",
        "steps": [
            {
                "id": "benefit",
                "program": text("Benefit"),
                "organization": text("CRA"),
                "level": "federal",
                "adapter": "cra",
                "fields": ["parent.name", "parent.sin"],
            }
        ],
    }
)
SUBMISSION: dict[str, Any] = {
    "parent": {"name": "Zoë Bélanger", "sin": "046 454 286", "marital_status": "separated"},
    "child": {"date_of_birth": "2026-01-31"},
}
PLAN = resolve_plan(DEFINITION, SUBMISSION, {})


def test_values_are_compared_as_adapters_reformat_them() -> None:
    assert normalised("046 454 286") == normalised("046454286")
    assert normalised("Zoë Bélanger") == normalised("ZOE BELANGER")
    assert normalised("2026-01-31") == "20260131"


def test_a_system_that_received_only_its_projection_has_no_leak() -> None:
    ledgers = {"cra": [{"fields": {"NAME": "ZOE BELANGER", "SIN": "046454286"}}]}
    assert leaked_fields(PLAN, SUBMISSION, ledgers) == {}


def test_a_value_outside_the_projection_is_found_however_it_was_written() -> None:
    ledgers = {
        "cra": [
            {"fields": {"NAME": "ZOE BELANGER", "SIN": "046454286", "STATUS": "SEPARATED"}},
            {"fields": {"record": "X|20260131|Y"}},
        ]
    }
    assert leaked_fields(PLAN, SUBMISSION, ledgers) == {
        "cra": ["child.date_of_birth", "parent.marital_status"]
    }
