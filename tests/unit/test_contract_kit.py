"""The integrator's kit without a sandbox: the scaffold, the CLI's usage errors, and the kit's own logic."""

from __future__ import annotations

import sys
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters import contracts
from adapters.contract_kit import (
    ContractCase,
    ContractSpec,
    ContractViolationError,
    error_texts,
    leaked_values,
    personal_values,
    settle,
)
from adapters.contracts import CONTRACTS, contract_for, derived_contract
from adapters.http import JsonRestAdapter
from adapters.mapping import FieldMap, Rename, get_path
from adapters.registry import ADAPTER_TYPES
from adapters.samples import NEWBORN_FIELDS
from adapters.sdk import (
    AsyncReply,
    NeedsAttentionError,
    RejectedError,
    StepRequest,
    SubmitResult,
    TransientError,
)
from bundles.models import LocalizedText
from infra import adapters_cli
from infra.adapters_cli import Protocol, scaffold, system_id_problem
from infra.cli import app
from infra.sandbox.client import SandboxAdmin

runner = CliRunner()


@pytest.fixture(autouse=True)
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """`adapters check` configures logging for its process; here it must not reconfigure the tests'."""
    monkeypatch.setattr("infra.logging.configure_logging", lambda *_args, **_kwargs: None)


# --- the scaffold ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(Protocol))
def test_the_scaffold_is_valid_python_for_every_protocol(protocol: Protocol) -> None:
    files = scaffold("on-land-registry", protocol)
    assert set(files) == {
        "adapters/on_land_registry.py",
        "tests/integration/test_on_land_registry_contract.py",
    }
    for path, text in files.items():
        compile(text, path, "exec")
        assert "${" not in text
    assert 'system = "on-land-registry"' in files["adapters/on_land_registry.py"]
    assert "class OnLandRegistryAdapter(" in files["adapters/on_land_registry.py"]


def load_scaffold(system: str) -> types.ModuleType:
    module = types.ModuleType(f"scaffold_{system.replace('-', '_')}")
    exec(
        compile(scaffold(system, Protocol.REST)[f"adapters/{system.replace('-', '_')}.py"], "x", "exec"),
        vars(module),
    )
    return module


def test_the_rest_scaffold_is_a_working_adapter_whose_contract_probes_what_it_sends() -> None:
    module = load_scaffold("demo-system")
    adapter_type = module.DemoSystemAdapter
    assert issubclass(adapter_type, JsonRestAdapter)
    assert adapter_type.system == "demo-system"
    spec = module.CONTRACT
    assert isinstance(spec, ContractSpec)
    mapped, _unused = adapter_type.field_map.apply(spec.sample)
    assert get_path(mapped, spec.probe_field) == NEWBORN_FIELDS["child"]["surname"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("on-land-registry", None),
        ("cra2-benefits", None),
        ("On-Land", "lowercase"),
        ("on_land", "hyphens"),
        ("-land", "starting"),
        ("land--registry", "single hyphens"),
        ("land-", "hyphens"),
        ("9-land", "starting with a letter"),
        ("a" * 41, "at most 40"),
        ("sdk", "replace a module"),
    ],
)
def test_system_ids_are_checked(name: str, problem: str | None) -> None:
    found = system_id_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_new_writes_the_adapter_and_its_test(tmp_path: Path) -> None:
    result = runner.invoke(app, ["adapters", "new", "demo-system", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "adapters" / "demo_system.py").is_file()
    assert (tmp_path / "tests" / "integration" / "test_demo_system_contract.py").is_file()
    assert "tellonce adapters check" in result.output


def test_new_refuses_a_bad_name(tmp_path: Path) -> None:
    result = runner.invoke(app, ["adapters", "new", "Land_Registry", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "invalid system id 'Land_Registry'" in result.output
    assert not (tmp_path / "adapters").exists()


def test_new_never_overwrites(tmp_path: Path) -> None:
    existing = tmp_path / "adapters" / "demo_system.py"
    existing.parent.mkdir()
    existing.write_text("# mine\n")
    result = runner.invoke(app, ["adapters", "new", "demo-system", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "not overwriting adapters/demo_system.py" in result.output
    assert existing.read_text() == "# mine\n"
    assert not (tmp_path / "tests").exists()


# --- check: usage errors --------------------------------------------------------------------------


@pytest.fixture
def module_file(tmp_path: Path) -> Path:
    return tmp_path / "my_adapters.py"


def check(*args: str) -> Any:
    return runner.invoke(app, ["adapters", "check", *args, "--sandbox", "http://127.0.0.1:9"])


def test_check_of_a_module_that_does_not_exist_is_a_usage_error() -> None:
    result = check("adapters.no_such_system")
    assert result.exit_code == 2
    assert "no module named 'adapters.no_such_system'" in result.output


def test_check_of_a_file_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    result = check(str(tmp_path / "nothing.py"))
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_check_of_a_module_that_fails_to_import_says_why(module_file: Path) -> None:
    module_file.write_text("import adapters.sdk\nraise RuntimeError('layout missing')\n")
    result = check(str(module_file))
    assert result.exit_code == 2
    assert "RuntimeError: layout missing" in result.output


def test_check_of_a_module_without_an_adapter_is_a_usage_error(module_file: Path) -> None:
    module_file.write_text("from adapters.http import JsonRestAdapter\nVALUE = 1\n")
    result = check(str(module_file))
    assert result.exit_code == 2
    assert "defines no adapter" in result.output


TWO_ADAPTERS = """
from adapters.http import JsonRestAdapter

class First(JsonRestAdapter):
    system = "first-system"

class Second(JsonRestAdapter):
    system = "second-system"
"""


def test_check_of_a_module_with_two_adapters_needs_a_system(module_file: Path) -> None:
    module_file.write_text(TWO_ADAPTERS)
    result = check(str(module_file))
    assert result.exit_code == 2
    assert "First (first-system), Second (second-system)" in result.output
    assert "--system" in result.output


def test_check_of_an_adapter_without_a_contract_says_how_to_declare_one(module_file: Path) -> None:
    module_file.write_text(TWO_ADAPTERS)
    result = check(str(module_file), "--system", "second-system")
    assert result.exit_code == 2
    assert "no contract for Second" in result.output
    assert "CONTRACT = ContractSpec(" in result.output


def test_check_without_a_sandbox_is_a_usage_error(tmp_path: Path) -> None:
    assert runner.invoke(app, ["adapters", "new", "demo-system", "--dir", str(tmp_path)]).exit_code == 0
    result = check(str(tmp_path / "adapters" / "demo_system.py"))
    assert result.exit_code == 2
    assert "no legacy sandbox at http://127.0.0.1:9" in result.output


def test_check_refuses_production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELLONCE_ENVIRONMENT", "production")
    monkeypatch.setenv("TELLONCE_ACCESS_CODE_SECRET", "s" * 32)
    monkeypatch.setenv("TELLONCE_CORRELATION_SECRET", "c" * 32)
    monkeypatch.setenv("TELLONCE_SFTP_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    monkeypatch.setenv("TELLONCE_KAFKA_BOOTSTRAP", "kafka.example:9093")
    monkeypatch.setenv("TELLONCE_SFTP_PASSWORD", "p" * 32)
    result = check("adapters.on_certificates")
    assert result.exit_code == 2
    assert "never runs in production" in result.output


# --- contracts ------------------------------------------------------------------------------------


def test_every_shipped_adapter_has_a_contract_whose_sample_fills_its_probe() -> None:
    for system, adapter_type in ADAPTER_TYPES.items():
        spec = contract_for(adapter_type)
        assert spec is not None, system
        field_map = getattr(adapter_type, "field_map", None)
        if isinstance(field_map, FieldMap) and system != "esdc-sin":
            mapped, _unused = field_map.apply(spec.sample)
            assert get_path(mapped, spec.probe_field) not in (None, ""), system


def test_a_module_contract_wins_over_the_shipped_one() -> None:
    declared = ContractSpec(sample={"a": 1}, probe_field="a")
    module = types.ModuleType("integrator_module")
    module.CONTRACT = declared  # type: ignore[attr-defined]  # what `adapters new` writes
    adapter_type = type(
        "Mine", (JsonRestAdapter,), {"system": "on-certificates", "__module__": module.__name__}
    )

    sys.modules[module.__name__] = module
    try:
        assert contract_for(adapter_type) is declared
    finally:
        del sys.modules[module.__name__]
    assert contract_for(ADAPTER_TYPES["on-certificates"]) is CONTRACTS["on-certificates"]


def test_a_derived_contract_takes_the_sample_the_map_uses_and_a_name_as_probe() -> None:
    spec = derived_contract(
        FieldMap(
            Rename("language", "lang"),
            Rename("resident.surname", "person.last_name"),
            Rename("new_address.street", "address.line1"),
        )
    )
    assert spec is not None
    assert spec.sample is contracts.ADDRESS_CHANGE_FIELDS
    assert spec.probe_field == "person.last_name"
    assert derived_contract(FieldMap(Rename("nothing.here", "x"))) is None


# --- the kit's own logic --------------------------------------------------------------------------


def test_personal_values_skip_references_languages_and_short_codes() -> None:
    values = personal_values(NEWBORN_FIELDS)
    assert {"tremblay", "élodie", "046454286", "046 454 286", "2026-01-31"} <= values
    assert "fr" not in values
    assert "on-2026-0000042" not in values
    assert "long" not in values


def test_a_value_is_found_in_any_case_and_a_number_without_its_separators() -> None:
    values = personal_values(NEWBORN_FIELDS)
    assert leaked_values("HTTP 422 from esdc-sin", values) == 0
    assert leaked_values("name TREMBLAY refused", values) == 1
    assert leaked_values("sin 046-454-286", values) == 1
    assert leaked_values("HTTP 503 from ottawa-welcome-baby", {"ottawa"}, "ottawa-welcome-baby") == 0


def test_error_texts_follow_the_cause_chain_but_not_a_suppressed_context() -> None:
    try:
        try:
            raise ValueError("Tremblay")
        except ValueError as exc:
            raise TransientError("timeout", detail="no answer") from exc
    except TransientError as error:
        chained = dict(error_texts(error))
    assert "str() of its cause #1 (ValueError)" in chained
    try:
        try:
            raise ValueError("Tremblay")
        except ValueError:
            raise TransientError("timeout") from None
    except TransientError as error:
        suppressed = dict(error_texts(error))
    assert all("cause" not in where for where in suppressed)


class Pending(JsonRestAdapter):
    system = "pending-system"


def pending_case(reply: AsyncReply | None) -> ContractCase:
    async def wait(key: str, within: timedelta) -> AsyncReply:
        assert reply is not None
        return reply.model_copy(update={"correlation_id": key})

    return ContractCase(
        adapter=Pending("http://127.0.0.1:9"),
        admin=SandboxAdmin("http://127.0.0.1:9"),
        sample=StepRequest(fields={}),
        probe_field="x",
        key_prefix="contract-unit:",
        await_reply=wait if reply is not None else None,
    )


PENDING = SubmitResult(reference="receipt-1", pending_reply=True)


async def test_a_pending_submit_settles_on_its_reply() -> None:
    accepted = AsyncReply(correlation_id="-", reply_id="r1", outcome="accepted", reference="REF-1")
    assert (await settle(pending_case(accepted), "k:s:submit", PENDING)).reference == "REF-1"
    rejected = AsyncReply(
        correlation_id="-",
        reply_id="r2",
        outcome="rejected",
        code="too_late",
        message=LocalizedText(en="Too late.", fr="Trop tard."),
    )
    with pytest.raises(RejectedError) as refused:
        await settle(pending_case(rejected), "k:s:submit", PENDING)
    assert refused.value.code == "too_late"
    assert refused.value.message.fr == "Trop tard."
    review = AsyncReply(correlation_id="-", reply_id="r3", outcome="needs_attention")
    with pytest.raises(NeedsAttentionError):
        await settle(pending_case(review), "k:s:submit", PENDING)


async def test_a_pending_submit_without_a_waiter_says_what_to_provide() -> None:
    with pytest.raises(ContractViolationError, match=r"\[pending_reply\].*reply_waiter"):
        await settle(pending_case(None), "k:s:submit", PENDING)


def test_the_check_command_is_registered() -> None:
    result = runner.invoke(app, ["adapters", "--help"])
    assert result.exit_code == 0
    assert "new" in result.output
    assert "check" in result.output
    assert adapters_cli.EXIT_USAGE == 2
