"""The contract kit run against each of the five adapters and the real sandbox process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from adapters.batch import BatchFileAdapter
from adapters.contract_kit import (
    CHECKS,
    ContractCase,
    applicable_checks,
    call_context,
    poll_replies,
    run_contract,
)
from adapters.contracts import contract_for
from adapters.message_queue import MessageQueueAdapter, await_reply_on_topic, reply_waiter
from adapters.registry import ADAPTER_TYPES, build_adapters
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import Adapter, StepRequest
from infra.sandbox.client import SandboxAdmin
from tests.conftest import SandboxProcess

pytestmark = pytest.mark.integration

SAMPLE = StepRequest(fields=NEWBORN_FIELDS)

PROBE_FIELDS = {
    "on-registrar-births": "child.surname",
    "on-certificates": "subject.surname",
    "esdc-sin": "child.last_name",
    "cra-aba": "child_surname",
    "resp-referral": "contact.last_name",
    "ottawa-welcome-baby": "parent.first_name",
    "hamilton-revenue": "language",
}
"""A field of each system's own request format that the sample sets."""

CASES = [(system, check) for system, cls in ADAPTER_TYPES.items() for check in applicable_checks(cls)]


@pytest.fixture
async def admin(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with SandboxAdmin(sandbox_url) as client:
        yield client


def case_for(system: str, sandbox: SandboxProcess, admin: SandboxAdmin) -> ContractCase:
    cls = ADAPTER_TYPES[system]
    await_reply = None
    if issubclass(cls, MessageQueueAdapter):
        # A queue is reached through Kafka, and its system answers later on its replies topic.
        adapter: Adapter = cls.from_settings(sandbox.settings())
        await_reply = reply_waiter(sandbox.settings(), system)
    elif issubclass(cls, BatchFileAdapter):
        # Files over the sandbox's SFTP server; the kit polls the reply files itself.
        adapter = cls.from_settings(sandbox.settings())
    else:
        adapter = cls(sandbox.url)  # type: ignore[call-arg]  # every shipped HTTP adapter takes a URL
    # Sample, probe and de-duplication from the system's contract; PROBE_FIELDS still overrides the probe.
    spec = contract_for(cls)
    assert spec is not None, f"no contract for {system}: add it to adapters/contracts.py"
    return ContractCase(
        adapter=adapter,
        admin=admin,
        sample=StepRequest(fields=dict(spec.sample)),
        probe_field=PROBE_FIELDS.get(system, spec.probe_field),
        key_prefix=f"contract-{uuid.uuid4().hex[:12]}:",
        dedupes=spec.dedupes,
        await_reply=await_reply,
    )


@pytest.mark.parametrize(("system", "check"), CASES)
async def test_contract(system: str, check: str, sandbox: SandboxProcess, admin: SandboxAdmin) -> None:
    case = case_for(system, sandbox, admin)
    try:
        await CHECKS[check](case)
    finally:
        await admin.clear_faults(system)
        await case.adapter.aclose()


async def test_run_contract_runs_every_applicable_check(sandbox: SandboxProcess, admin: SandboxAdmin) -> None:
    case = case_for("on-certificates", sandbox, admin)
    try:
        assert await run_contract(case) == list(CHECKS)
    finally:
        await admin.clear_faults("on-certificates")
        await case.adapter.aclose()
    assert "compensation_is_idempotent" not in applicable_checks(ADAPTER_TYPES["cra-aba"])


async def test_a_newborn_fans_out_through_every_adapter(sandbox: SandboxProcess, admin: SandboxAdmin) -> None:
    """Registration first, then its number reaches the programs that need it; fees are charged once."""
    bundle = f"fanout-{uuid.uuid4().hex[:12]}"
    adapters = build_adapters(sandbox.settings())
    try:
        fields: dict[str, Any] = {k: v for k, v in SAMPLE.fields.items() if k != "references"}
        registered = await adapters["on-registrar-births"].submit(
            call_context(f"{bundle}:register:submit"), StepRequest(fields=fields)
        )
        fields["references"] = {"register": registered.reference}
        for system in ("on-certificates", "esdc-sin", "cra-aba", "resp-referral"):
            await adapters[system].submit(
                call_context(f"{bundle}:{system}:submit"), StepRequest(fields=fields)
            )

        # CRA takes its application from a queue: its reply says the effect is recorded.
        await await_reply_on_topic(
            sandbox.settings(), "cra-aba", f"{bundle}:cra-aba:submit", timedelta(seconds=30)
        )
        (cra,) = await admin.ledger("cra-aba", key_prefix=bundle)
        assert cra["fields"]["registration_number"] == registered.reference
        assert "marital_status" not in str(cra["fields"])
        # ESDC reads its request files in a batch run: its reply says the effect is recorded.
        sin_adapter = adapters["esdc-sin"]
        assert isinstance(sin_adapter, BatchFileAdapter)
        await poll_replies(sin_adapter, f"{bundle}:esdc-sin:submit", timedelta(seconds=30))
        (sin,) = await admin.ledger("esdc-sin", key_prefix=bundle)
        assert sin["fields"]["province_registration_number"] == registered.reference
        (order,) = await admin.ledger("on-certificates", key_prefix=bundle)
        assert order["amount_cents"] == 7000
        (referral,) = await admin.ledger("resp-referral", key_prefix=bundle)
        assert "sin" not in str(referral["fields"])
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
