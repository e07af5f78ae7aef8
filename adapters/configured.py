"""Legacy systems added by configuration: a `bundles/systems/<system-id>.yaml` file, no code.

A system that speaks the standard REST protocol of `JsonRestAdapter` (`POST
{base}/systems/{id}/requests` with `{"fields": ...}` and an `Idempotency-Key`) differs from the
others only in its name, the fields it takes and whether a request can be cancelled. A province
or municipality writes that down::

    id: ottawa-welcome-baby
    name: {en: City of Ottawa — welcome call, fr: Ville d'Ottawa — appel de bienvenue}
    protocol: rest-json
    reversible: true
    field_map:
      - {source: birth_parent.given_names, target: parent.first_name}
      - {source: child.date_of_birth, target: baby.birth_date, transform: compact_date}
    sandbox: {reference_prefix: OTT-HBHC, accepted: {en: ..., fr: ...}}

and the adapter registry turns each file into a `ConfiguredRestAdapter` subclass. Transforms are
chosen by name from `adapters.mapping.TRANSFORMS`: a file can run nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationError

import bundles
from adapters.http import JsonRestAdapter
from adapters.mapping import TRANSFORMS, FieldMap, Rename
from adapters.sdk import CallContext, CompensationRequest, CompensationResult
from bundles.catalogue import DefinitionError, read_yaml
from bundles.models import Frozen, LocalizedText

SYSTEMS_DIRECTORY = Path(bundles.__file__).resolve().parent / "systems"
"""Where the packaged configured systems are."""

SYSTEM_ID_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
_PATH_PATTERN = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"


class FieldMapping(Frozen):
    """Copy one projected field (`source`) to the system's request (`target`), maybe transformed."""

    source: str = Field(pattern=_PATH_PATTERN, description="Dotted path in the step's projected fields.")
    target: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="Dotted path in the system's request.",
    )
    transform: str | None = Field(
        default=None, description="Name of a transform in `adapters.mapping.TRANSFORMS`."
    )


class SandboxDouble(Frozen):
    """How the legacy sandbox simulates the system (development, demos and tests only)."""

    reference_prefix: str = Field(
        pattern=r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$",
        max_length=16,
        description="Prefix of the references it hands out, e.g. `OTT-HBHC` for `OTT-HBHC-7Q2M4K1Z`.",
    )
    accepted_state: str = Field(default="received", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    accepted: LocalizedText = Field(description="What it answers when it accepts a request.")
    honours_keys: bool = Field(
        default=True, description="Whether it de-duplicates on the Idempotency-Key (most systems do)."
    )


class SystemFile(Frozen):
    """One configured legacy system, as written in `bundles/systems/<id>.yaml`."""

    id: str = Field(pattern=SYSTEM_ID_PATTERN, description="The system id a bundle step names as `adapter`.")
    name: LocalizedText
    protocol: Literal["rest-json"] = Field(
        description="`rest-json`: the standard REST protocol of `JsonRestAdapter`."
    )
    field_map: tuple[FieldMapping, ...] = Field(min_length=1)
    reversible: bool = Field(
        default=False, description="Whether an accepted request can be cancelled (compensated)."
    )
    sandbox: SandboxDouble | None = None


def check_system(system: SystemFile) -> list[str]:
    """Problems the model alone cannot see: unknown transforms, targets written twice."""
    problems: list[str] = []
    known = ", ".join(sorted(TRANSFORMS))
    targets: dict[str, str] = {}
    for number, mapping in enumerate(system.field_map, start=1):
        where = f"field_map #{number} ({mapping.source})"
        if mapping.transform is not None and mapping.transform not in TRANSFORMS:
            problems.append(f"{where}: unknown transform '{mapping.transform}' (known: {known})")
        for other, source in targets.items():
            # One value may not land on another's place, nor inside it.
            if (
                mapping.target == other
                or mapping.target.startswith(f"{other}.")
                or other.startswith(f"{mapping.target}.")
            ):
                problems.append(f"{where}: target '{mapping.target}' collides with '{other}' (from {source})")
        targets[mapping.target] = mapping.source
    return problems


def load_system(path: Path | str) -> SystemFile:
    """Read and check one system file.

    Raises:
        DefinitionError: With every problem, each prefixed with the file's name, e.g.
            ``ottawa-welcome-baby.yaml: field_map #2 (child.date_of_birth): unknown transform 'iso'``.
    """
    path = Path(path)
    name = path.name
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise DefinitionError([f"{name}: expected a mapping of system settings (id, name, protocol, ...)"])
    try:
        system = SystemFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            problems.append(f"{name}: {where}: {err['msg']}" if where else f"{name}: {err['msg']}")
        raise DefinitionError(problems) from None
    problems = check_system(system)
    if path.stem != system.id:
        problems.append(f"the file of system '{system.id}' must be named {system.id}.yaml")
    if problems:
        raise DefinitionError([f"{name}: {problem}" for problem in problems])
    return system


def load_systems(directory: Path | str | None = None) -> tuple[SystemFile, ...]:
    """Every system file of a directory (default the packaged `bundles/systems`), ordered by id.

    A directory that does not exist holds no systems: a deployment need not configure any.

    Raises:
        DefinitionError: With the problems of every file.
    """
    root = Path(directory) if directory is not None else SYSTEMS_DIRECTORY
    if not root.is_dir():
        return ()
    problems: list[str] = []
    systems: list[SystemFile] = []
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            systems.append(load_system(path))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DefinitionError(problems)
    return tuple(sorted(systems, key=lambda system: system.id))


class ConfiguredRestAdapter(JsonRestAdapter):
    """A `JsonRestAdapter` whose system id and field map come from a system file.

    Not used directly: `adapter_type` makes one subclass per file, so that every system keeps
    its own class (as the registry and the contract kit expect). Its requests cannot be undone;
    `ReversibleConfiguredRestAdapter` is the base of systems declared `reversible`.
    """

    configuration: ClassVar[SystemFile]

    @classmethod
    def adapter_type(cls, system: SystemFile) -> type[ConfiguredRestAdapter]:
        """The adapter class of one configured system."""
        base = ReversibleConfiguredRestAdapter if system.reversible else ConfiguredRestAdapter
        field_map = FieldMap(
            *(
                Rename(m.source, m.target, TRANSFORMS[m.transform] if m.transform else None)
                for m in system.field_map
            )
        )
        class_name = "".join(part.capitalize() for part in system.id.split("-")) + "Adapter"
        namespace = {
            "system": system.id,
            "field_map": field_map,
            "configuration": system,
            "__doc__": f"{system.name.en} (configured in {system.id}.yaml).",
            "__module__": __name__,
        }
        return type(class_name, (base,), namespace)


class ReversibleConfiguredRestAdapter(ConfiguredRestAdapter):
    """A configured system whose accepted requests can be cancelled."""

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        """Cancel the request by its reference; safe to repeat with the same key.

        Only the reference is sent, never personal data. Cancelling a request the system does not
        know is answered as a no-op.

        Raises:
            TransientError: Outage, timeout, 5xx, 429.
        """
        body = await self.call(ctx, "POST", self.requests_url(request.reference, "cancel"), None)
        return self.parse(CompensationResult, body, ctx)


def configured_adapter_types(
    systems: Collection[SystemFile], *, taken: Collection[str] = ()
) -> dict[str, type[ConfiguredRestAdapter]]:
    """Adapter classes by system id for configured systems.

    Args:
        systems: The configured systems.
        taken: Ids of the adapters written in code; a system file may not reuse one.

    Raises:
        DefinitionError: A system file names an id that an adapter in code already has.
    """
    problems = [
        f"{system.id}.yaml: system id '{system.id}' is already the id of an adapter of tellonce"
        for system in systems
        if system.id in taken
    ]
    if problems:
        raise DefinitionError(problems)
    return {system.id: ConfiguredRestAdapter.adapter_type(system) for system in systems}
