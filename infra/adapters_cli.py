"""`tellonce adapters`: the integrator's kit on the command line — write an adapter, then prove it.

`new` writes a working adapter module and its contract test from `adapters/templates/`; `check`
runs the contract kit against the legacy sandbox and prints one line per check. Exit codes: 0 all
checks pass, 1 a check failed, 2 a usage error (bad name, a file in the way, a module that cannot
be imported or holds no adapter, no sandbox to talk to).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import re
import sys
from enum import StrEnum
from pathlib import Path
from string import Template
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

import adapters
from adapters.sdk import Adapter

if TYPE_CHECKING:
    from adapters.contract_kit import CheckResult, ContractSpec
    from infra.settings import Settings

adapters_app = typer.Typer(
    help="Write an adapter for a legacy system and prove it with the contract kit.", no_args_is_help=True
)

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

EXIT_FAILED = 1
EXIT_USAGE = 2

SYSTEM_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
"""A legacy system id: lowercase words of letters and digits joined by single hyphens."""
MAX_SYSTEM_ID = 40
"""Longer ids make the scaffold's names unwieldy (system ids of configured systems may be longer)."""
TEMPLATES = Path(adapters.__file__).resolve().parent / "templates"


class Protocol(StrEnum):
    """How the legacy system is reached; each has its base class in `adapters/`."""

    REST = "rest"
    SOAP = "soap"
    BATCH = "batch"
    MQ = "mq"


BASE_MODULES: dict[Protocol, str] = {
    Protocol.REST: "adapters.http",
    Protocol.SOAP: "adapters.soap",
    Protocol.BATCH: "adapters.batch",
    Protocol.MQ: "adapters.message_queue",
}
"""The module of each protocol's base class, which the scaffold subclasses."""


def _usage(message: str) -> NoReturn:
    errors.print(message, soft_wrap=True, markup=False)
    raise typer.Exit(EXIT_USAGE)


def system_id_problem(name: str) -> str | None:
    """Why `name` is not a usable system id, or None when it is."""
    if len(name) > MAX_SYSTEM_ID:
        return f"a system id has at most {MAX_SYSTEM_ID} characters"
    if not SYSTEM_ID.match(name):
        return (
            "a system id is lowercase letters and digits in words joined by single hyphens, starting "
            "with a letter (e.g. `on-land-registry`)"
        )
    if name.replace("-", "_") in {"sdk", "http", "soap", "batch", "mapping", "registry", "samples"}:
        return f"`{name}` would replace a module of the adapter SDK; choose a name of the system"
    return None


def class_name(system: str) -> str:
    """`on-land-registry` as `OnLandRegistryAdapter`."""
    return "".join(part.capitalize() for part in system.split("-")) + "Adapter"


def render(template: str, system: str) -> str:
    """A template of `adapters/templates/` filled in for one system."""
    module = system.replace("-", "_")
    title = " ".join(system.split("-")).capitalize()
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    return Template(text).substitute(system=system, module=module, class_name=class_name(system), title=title)


def scaffold(system: str, protocol: Protocol) -> dict[str, str]:
    """The files `adapters new` writes, by path relative to the project root."""
    module = system.replace("-", "_")
    return {
        f"adapters/{module}.py": render(f"{protocol.value}.py.tmpl", system),
        f"tests/integration/test_{module}_contract.py": render("contract_test.py.tmpl", system),
    }


@adapters_app.command("new")
def adapters_new(
    name: Annotated[str, typer.Argument(help="The legacy system's id, e.g. `on-land-registry`.")],
    protocol: Annotated[Protocol, typer.Option(help="How the system is reached.")] = Protocol.REST,
    directory: Annotated[
        Path, typer.Option("--dir", help="The project root to write into.", file_okay=False)
    ] = Path(),
) -> None:
    """Write `adapters/<name>.py` (an adapter with its CONTRACT) and its contract test; never overwrite."""
    if problem := system_id_problem(name):
        _usage(f"invalid system id {name!r}: {problem}")
    if importlib.util.find_spec(BASE_MODULES[protocol]) is None:
        _usage(f"no base class for {protocol.value} adapters in this checkout ({BASE_MODULES[protocol]})")
    files = scaffold(name, protocol)
    taken = [path for path in files if (directory / path).exists()]
    if taken:
        _usage(f"not overwriting {', '.join(taken)}: remove it or choose another name")
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        console.print(f"created: {target}")
    module_path = directory / next(iter(files))
    console.print(f"next: tellonce adapters check {module_path}", markup=False)


# --- check ---------------------------------------------------------------------------------------


def load_module(target: str) -> ModuleType:
    """The module named by a dotted path (`adapters.my_system`) or a file path (`adapters/my_system.py`).

    Raises:
        typer.Exit: 2 when it does not exist or fails to import.
    """
    path = Path(target)
    try:
        if target.endswith(".py") or path.exists():
            if not path.is_file():
                _usage(f"no such file: {target}")
            name = f"tellonce_checked_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                _usage(f"cannot import {target}")
            module = importlib.util.module_from_spec(spec)
            # Registered first: the kit finds the adapter's CONTRACT through its module's name.
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except typer.Exit:
        raise
    except ModuleNotFoundError as exc:
        _usage(f"cannot import {target}: no module named {exc.name!r}")
    except Exception as exc:
        _usage(f"cannot import {target}: {type(exc).__name__}: {exc}")


def find_adapter(module: ModuleType, system: str | None) -> type[Adapter]:
    """The adapter class a module defines (the one for `system` when it defines several).

    Raises:
        typer.Exit: 2 when it defines none, or several and `system` does not choose one.
    """
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Adapter)
        and value.__module__ == module.__name__
        and not inspect.isabstract(value)
        and isinstance(getattr(value, "system", None), str)
    ]
    if not found:
        _usage(f"{module.__name__} defines no adapter (a subclass of adapters.sdk.Adapter with a `system`)")
    chosen = [cls for cls in found if cls.system == system] if system else []
    if len(found) > 1 and not chosen:
        names = ", ".join(f"{cls.__name__} ({cls.system})" for cls in found)
        _usage(f"{module.__name__} defines several adapters: {names}; choose one with --system")
    return chosen[0] if chosen else found[0]


def _check_settings(sandbox: str | None) -> Settings:
    from infra.settings import Settings  # noqa: PLC0415 - keeps `tellonce --help` light

    try:
        overrides: dict[str, Any] = {"sandbox_url": sandbox} if sandbox else {}
        settings = Settings(**overrides)
    except ValidationError as exc:
        _usage(f"invalid settings: {exc}")
    if settings.environment == "production":
        _usage("the contract kit injects faults into the legacy sandbox: it never runs in production")
    # Every system at its sandbox endpoint, whatever the deployment configures for it.
    values = settings.model_dump()
    values["legacy_systems"] = {}
    return Settings(**values)


async def _run(
    adapter_type: type[Adapter], spec: ContractSpec, settings: Settings, target: str
) -> list[CheckResult]:
    from adapters.contract_kit import CheckResult, run_checks  # noqa: PLC0415 - see module docstring
    from infra.sandbox.client import SandboxAdmin  # noqa: PLC0415

    async with SandboxAdmin(settings.sandbox_base_url) as admin:
        try:
            await admin.system(target)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != httpx.codes.NOT_FOUND:
                raise
            message = (
                f"[unknown_system] the sandbox at {settings.sandbox_base_url} has no system {target!r}. "
                f"Fix: check against an existing double with --system (e.g. --system ottawa-welcome-baby), "
                "or give the system a double in the sandbox (docs/adapters.md)"
            )
            return [CheckResult("sandbox_has_system", passed=False, message=message)]
        async with spec.case(adapter_type, settings, admin, system=target) as case:
            return await run_checks(case)


@adapters_app.command("check")
def adapters_check(
    module: Annotated[str, typer.Argument(help="The adapter's module: a dotted path or a .py file.")],
    sandbox: Annotated[
        str | None,
        typer.Option(help="The legacy sandbox's URL [env TELLONCE_SANDBOX_URL; default the dev stack's]."),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            help="Run against this sandbox system instead of the adapter's own (or pick the adapter "
            "for it in a module that has several)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Run the contract kit against the legacy sandbox; exit 1 if any check fails."""
    from adapters.contracts import contract_for  # noqa: PLC0415 - imports every shipped adapter
    from infra.logging import configure_logging  # noqa: PLC0415

    adapter_type = find_adapter(load_module(module), system)
    target = system or adapter_type.system
    spec = contract_for(adapter_type, target)
    if spec is None:
        _usage(
            f"no contract for {adapter_type.__name__}: declare `CONTRACT = ContractSpec(sample=..., "
            "probe_field=...)` in its module (docs/adapters.md)"
        )
    settings = _check_settings(sandbox)
    # The adapter's own logs would bury the results: only errors, on stderr.
    configure_logging("error", "console")
    try:
        results = asyncio.run(_run(adapter_type, spec, settings, target))
    except httpx.HTTPError as exc:
        _usage(
            f"no legacy sandbox at {settings.sandbox_base_url} ({type(exc).__name__}): start `tellonce dev`"
        )
    failed = [result for result in results if not result.passed]
    if json_out:
        body = {
            "adapter": f"{adapter_type.__module__}.{adapter_type.__name__}",
            "system": target,
            "sandbox": settings.sandbox_base_url,
            "passed": not failed,
            "checks": [
                {"name": r.name, "passed": r.passed, "message": r.message, "seconds": round(r.seconds, 2)}
                for r in results
            ],
        }
        console.print_json(json.dumps(body, ensure_ascii=False))
    else:
        table = Table(title=f"{adapter_type.__name__} against {target} at {settings.sandbox_base_url}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("s", justify="right")
        table.add_column("what to fix")
        for result in results:
            mark = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
            # Text, not markup: messages hold `[rule]` and values in brackets.
            table.add_row(result.name, mark, f"{result.seconds:.1f}", Text(result.message))
        console.print(table)
        console.print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    if failed:
        raise typer.Exit(EXIT_FAILED)
