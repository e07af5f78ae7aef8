"""Every legacy system received only its step's projection: read off the sandbox ledgers.

The newborn bundle reaches five systems over four protocols (SOAP, REST, fixed-width batch
files, a message queue). Whatever the protocol, no value of the submission reaches a system
whose step does not project that field.
"""

from __future__ import annotations

import pytest

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from bundles.plan import resolve_plan
from bundles.submissions import validate_submission
from tests.minimisation import leaked_fields

from .test_newborn_end_to_end import Stack, example, stack, streams  # noqa: F401 - the fixtures

pytestmark = pytest.mark.integration


async def test_no_newborn_system_receives_a_field_outside_its_projection(stack: Stack) -> None:  # noqa: F811
    submission = example("complete")
    accepted = await stack.submit(submission)
    status = await stack.final(accepted, timeout=90)
    assert status["state"] == "completed"

    definition = Catalogue.load(known_adapters=KNOWN_ADAPTERS).get("newborn-on")
    validated = validate_submission(definition, submission)
    plan = resolve_plan(definition, validated.data, validated.consents)
    ledgers = await stack.ledgers(accepted["tracking_id"])
    assert all(ledgers.values()), "every system received its request"
    assert leaked_fields(plan, validated.data, ledgers) == {}
    # The scan has teeth: a system credited with another step's projection shows what it lacks.
    swapped = {"cra-aba": ledgers["on-registrar-births"]}
    assert leaked_fields(plan, validated.data, swapped)
