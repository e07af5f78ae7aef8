"""Load and check bundle definitions from YAML files: the catalogue the API and workers serve.

A definition is edited by people who are not programmers, so every load-time problem is
reported with the file, the step and what is wrong, and all problems of a file are reported
together rather than one per attempt.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bundles.models import BundleDefinition, StepDefinition
from bundles.submissions.registry import SUBMISSION_SCHEMAS, field_paths

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "definitions"


class DefinitionError(Exception):
    """One or more problems in bundle definitions; each problem names its file and step."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which plain YAML silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads ON, NO, Yes and Off as booleans: "one_of: [ON]" would silently mean
# [true]. Only true/false are booleans here, as in YAML 1.2.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_definition(path: Path | str, *, known_adapters: Collection[str]) -> BundleDefinition:
    """Read one definition file and check it completely.

    Args:
        path: A ``.yaml`` file.
        known_adapters: Ids of the adapters this deployment has (the caller asks the adapter
            registry; `bundles` does not import adapters).

    Returns:
        The checked definition.

    Raises:
        DefinitionError: With every problem found, e.g.
            ``newborn-on.yaml: step 'ccb': needs unknown step 'registraton'``.
    """
    path = Path(path)
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([f"{name}: cannot read the file: {exc}"]) from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise DefinitionError([f"{name}: invalid YAML{where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([f"{name}: invalid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise DefinitionError([f"{name}: expected a mapping of bundle settings (id, version, steps, ...)"])
    try:
        definition = BundleDefinition.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError([f"{name}: {_describe(data, err)}" for err in exc.errors()]) from None
    problems = check_definition(definition, known_adapters=known_adapters)
    if problems:
        raise DefinitionError([f"{name}: {problem}" for problem in problems])
    return definition


def _describe(data: Mapping[str, Any], err: Any) -> str:
    # Point at the step by its id when the YAML gives one, since list positions are hard to count.
    loc: tuple[Any, ...] = tuple(err["loc"])
    where = ".".join(str(part) for part in loc)
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps")
        raw = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
        step_id = raw.get("id") if isinstance(raw, dict) else None
        label = f"step '{step_id}'" if isinstance(step_id, str) else f"step #{loc[1] + 1}"
        rest = ".".join(str(part) for part in loc[2:])
        return f"{label}: {rest}: {err['msg']}" if rest else f"{label}: {err['msg']}"
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def check_definition(definition: BundleDefinition, *, known_adapters: Collection[str]) -> list[str]:
    """Check the rules that span steps, which the models alone cannot.

    Args:
        definition: A definition that already passed model validation.
        known_adapters: Ids of the adapters this deployment has.

    Returns:
        Problems, each prefixed with the step it concerns (empty when the definition is sound).
    """
    problems: list[str] = []
    steps = {step.id: step for step in definition.steps}
    seen: set[str] = set()
    for step in definition.steps:
        if step.id in seen:
            problems.append(f"step '{step.id}': duplicate step id")
        seen.add(step.id)

    schema = SUBMISSION_SCHEMAS.get(definition.submission_schema)
    paths: frozenset[str] | None = None
    if schema is None:
        known = ", ".join(sorted(SUBMISSION_SCHEMAS))
        problems.append(f"unknown submission schema '{definition.submission_schema}' (known: {known})")
    else:
        paths = field_paths(schema)

    for step in definition.steps:
        problems.extend(_check_step(definition, step, steps, paths, known_adapters))
    problems.extend(_check_cycles(definition.steps, steps))
    problems.extend(_check_pivot(definition, steps))

    used = {step.consent for step in definition.steps if step.consent is not None}
    if used <= set(definition.consent_purposes):
        # With a misspelt purpose in a step, "declared but unused" would only repeat that problem.
        problems.extend(
            f"consent purpose '{purpose}' is declared but no step uses it"
            for purpose in definition.consent_purposes
            if purpose not in used
        )
    if paths is not None:
        problems.extend(
            f"submission rule: field '{rule.field}' is not in submission schema "
            f"'{definition.submission_schema}'"
            for rule in definition.submission_rules
            if rule.field not in paths
        )
    return problems


def _check_step(
    definition: BundleDefinition,
    step: StepDefinition,
    steps: Mapping[str, StepDefinition],
    paths: frozenset[str] | None,
    known_adapters: Collection[str],
) -> list[str]:
    label = f"step '{step.id}'"
    schema = definition.submission_schema
    problems = [f"{label}: needs unknown step '{need}'" for need in step.needs if need not in steps]
    if step.adapter not in known_adapters:
        known = ", ".join(sorted(known_adapters)) or "none"
        problems.append(f"{label}: unknown adapter '{step.adapter}' (known: {known})")
    if paths is not None:
        problems.extend(
            f"{label}: field '{path}' is not in submission schema '{schema}'"
            for path in step.fields
            if path not in paths
        )
        if step.eligibility is not None and step.eligibility.field not in paths:
            problems.append(
                f"{label}: eligibility field '{step.eligibility.field}' "
                f"is not in submission schema '{schema}'"
            )
    if step.consent is not None and step.consent not in definition.consent_purposes:
        problems.append(f"{label}: consent purpose '{step.consent}' is not declared in consent_purposes")
    ancestors = _transitive_needs(step.id, steps)
    problems.extend(
        f"{label}: references '{ref}', which is not among the steps it needs (directly or not)"
        for ref in step.references
        if ref not in ancestors
    )
    if step.pivot and step.optional:
        problems.append(f"{label}: the pivot step cannot be optional")
    if step.awaits == "birth_notice":
        problems.extend(
            f"{label}: awaits a birth notice, so it must receive '{path}' to match it"
            for path in BIRTH_NOTICE_MATCH_FIELDS
            if path not in step.fields
        )
    return problems


BIRTH_NOTICE_MATCH_FIELDS = ("birth_parent.health_number", "child.date_of_birth")
"""Fields a step awaiting a birth notice needs: the notice is correlated on them."""


def _transitive_needs(step_id: str, steps: Mapping[str, StepDefinition]) -> set[str]:
    """Ids a step needs directly or not, unknown ones included (they end the walk)."""
    found: set[str] = set()
    todo = list(steps[step_id].needs) if step_id in steps else []
    while todo:
        need = todo.pop()
        if need in found:
            continue
        found.add(need)
        if need in steps:
            todo.extend(steps[need].needs)
    return found


def _check_cycles(order: Iterable[StepDefinition], steps: Mapping[str, StepDefinition]) -> list[str]:
    problems: list[str] = []
    reported: set[tuple[str, ...]] = set()
    done: set[str] = set()

    def visit(step_id: str, stack: list[str]) -> None:
        if step_id in stack:
            cycle = stack[stack.index(step_id) :]
            # The same cycle is met from each of its members; report it once.
            start = cycle.index(min(cycle))
            canonical = tuple(cycle[start:] + cycle[:start])
            if canonical not in reported:
                reported.add(canonical)
                path = " -> ".join([*canonical, canonical[0]])
                problems.append(f"step '{canonical[0]}': needs form a cycle: {path}")
            return
        if step_id in done or step_id not in steps:
            return
        stack.append(step_id)
        for need in steps[step_id].needs:
            visit(need, stack)
        stack.pop()
        done.add(step_id)

    for step in order:
        visit(step.id, [])
    return problems


def _check_pivot(definition: BundleDefinition, steps: Mapping[str, StepDefinition]) -> list[str]:
    pivots = [step.id for step in definition.steps if step.pivot]
    if len(pivots) > 1:
        names = ", ".join(f"'{p}'" for p in pivots)
        return [f"more than one pivot step ({names}); a bundle has at most one"]
    if not pivots:
        return []
    pivot = pivots[0]
    # Nothing leaves for another program before the pivot unless it can be undone.
    problems: list[str] = []
    for step in definition.steps:
        ancestors = _transitive_needs(step.id, steps)
        if step.id == pivot or step.compensation is not None or pivot in ancestors:
            continue
        if not ancestors <= steps.keys():
            continue  # an unknown need is reported already, and may well be the pivot misspelt
        problems.append(
            f"step '{step.id}': neither needs the pivot '{pivot}' (directly or not) nor has a compensation; "
            "a step that may run before the pivot must be reversible"
        )
    return problems


@dataclass(frozen=True)
class Catalogue:
    """The checked definitions of one directory, by bundle id."""

    definitions: Mapping[str, BundleDefinition]
    sources: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path | str | None = None, *, known_adapters: Collection[str]) -> Catalogue:
        """Load every ``*.yaml`` / ``*.yml`` definition of a directory.

        Args:
            directory: Where the definitions are; defaults to the packaged ``bundles/definitions``.
            known_adapters: Ids of the adapters this deployment has.

        Returns:
            The catalogue.

        Raises:
            DefinitionError: With the problems of every file, and bundle ids defined twice.
        """
        root = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        if not root.is_dir():
            raise DefinitionError([f"{root}: no such directory of bundle definitions"])
        files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
        problems: list[str] = []
        definitions: dict[str, BundleDefinition] = {}
        sources: dict[str, Path] = {}
        for path in files:
            try:
                definition = load_definition(path, known_adapters=known_adapters)
            except DefinitionError as exc:
                problems.extend(exc.problems)
                continue
            if definition.id in definitions:
                problems.append(
                    f"{path.name}: bundle id '{definition.id}' is already defined "
                    f"in {sources[definition.id].name}"
                )
                continue
            definitions[definition.id] = definition
            sources[definition.id] = path
        if problems:
            raise DefinitionError(problems)
        return cls(definitions=definitions, sources=sources)

    def get(self, bundle_id: str) -> BundleDefinition:
        """Return a bundle's definition.

        Raises:
            KeyError: When the catalogue has no such bundle.
        """
        return self.definitions[bundle_id]

    def all(self) -> list[BundleDefinition]:
        """Every definition, ordered by bundle id."""
        return [self.definitions[bundle_id] for bundle_id in sorted(self.definitions)]

    def schema_for(self, bundle_id: str) -> type[BaseModel]:
        """Return the submission model of a bundle (e.g. for its JSON Schema).

        Raises:
            KeyError: When the catalogue has no such bundle.
        """
        return SUBMISSION_SCHEMAS[self.get(bundle_id).submission_schema]

    def __contains__(self, bundle_id: object) -> bool:
        return bundle_id in self.definitions
