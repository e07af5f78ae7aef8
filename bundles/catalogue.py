"""Load and check bundle definitions from YAML files: the catalogue the API and workers serve.

A definition is edited by people who are not programmers, so every load-time problem is
reported with the file, the step and what is wrong, and all problems of a file are reported
together rather than one per attempt.

A definition may also be written as changes to another bundle of the same directory
(`extends:`, see `DerivedDefinition`): it is resolved here, at load time, into an ordinary
`BundleDefinition`, so plans and workflows never see the difference.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ValidationError

from bundles.models import BundleDefinition, ConsentPurpose, DerivedDefinition, StepDefinition
from bundles.plan import merge_fields
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


def read_yaml(path: Path) -> Any:
    """Parse one YAML file with the strict loader (no duplicate keys, only true/false as booleans).

    Raises:
        DefinitionError: The file cannot be read or is not valid YAML; the problem names the file
            and, where known, the line and column.
    """
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([f"{name}: cannot read the file: {exc}"]) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise DefinitionError([f"{name}: invalid YAML{where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([f"{name}: invalid YAML: {exc}"]) from None


def load_definition(path: Path | str, *, known_adapters: Collection[str]) -> BundleDefinition:
    """Read one definition file and check it completely.

    A derived definition (`extends: <bundle id>`) finds its base among the other definition files
    of its directory and is returned resolved; the base's own problems are listed with its file.

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
    resolver = _Resolver(path.parent, known_adapters, explain_bases=True)
    return resolver.resolve(path)


DEFINITION_SUFFIXES = (".yaml", ".yml")


class _Resolver:
    """Loads the definitions of one directory, resolving derived ones onto their bases (memoised)."""

    def __init__(self, directory: Path, known_adapters: Collection[str], *, explain_bases: bool) -> None:
        self.directory = directory
        self.known_adapters = known_adapters
        # Loading one file alone, a broken base's problems are shown with it; loading the whole
        # directory, the base's file reports them itself.
        self.explain_bases = explain_bases
        self._data: dict[Path, dict[str, Any] | DefinitionError] = {}
        self._done: dict[Path, BundleDefinition | DefinitionError] = {}
        self._index: dict[str, list[Path]] | None = None

    def data_of(self, path: Path) -> dict[str, Any]:
        """The file's top-level mapping (a DefinitionError is remembered and raised again)."""
        if path not in self._data:
            try:
                data = read_yaml(path)
                if not isinstance(data, dict):
                    raise DefinitionError(
                        [f"{path.name}: expected a mapping of bundle settings (id, version, steps, ...)"]
                    )
                self._data[path] = data
            except DefinitionError as exc:
                self._data[path] = exc
        found = self._data[path]
        if isinstance(found, DefinitionError):
            raise found
        return found

    def files_by_id(self) -> dict[str, list[Path]]:
        """Every definition file of the directory by the bundle id it declares."""
        if self._index is None:
            self._index = {}
            if self.directory.is_dir():
                for path in sorted(self.directory.iterdir()):
                    if path.suffix not in DEFINITION_SUFFIXES or not path.is_file():
                        continue
                    try:
                        bundle_id = self.data_of(path).get("id")
                    except DefinitionError:
                        continue  # that file reports its own problem
                    if isinstance(bundle_id, str):
                        self._index.setdefault(bundle_id, []).append(path)
        return self._index

    def resolve(self, path: Path, chain: tuple[Path, ...] = ()) -> BundleDefinition:
        """The checked definition of one file; `chain` holds the files whose base this one is."""
        if path not in self._done:
            try:
                self._done[path] = self._resolve(path, (*chain, path))
            except DefinitionError as exc:
                self._done[path] = exc
        found = self._done[path]
        if isinstance(found, DefinitionError):
            raise found
        return found

    def _resolve(self, path: Path, chain: tuple[Path, ...]) -> BundleDefinition:
        name = path.name
        data = self.data_of(path)
        if "extends" in data:
            definition = self._derive(path, data, chain)
        else:
            try:
                definition = BundleDefinition.model_validate(data)
            except ValidationError as exc:
                raise DefinitionError([f"{name}: {_describe(data, err)}" for err in exc.errors()]) from None
        problems = check_definition(definition, known_adapters=self.known_adapters)
        if problems:
            raise DefinitionError([f"{name}: {problem}" for problem in problems])
        return definition

    def _derive(self, path: Path, data: dict[str, Any], chain: tuple[Path, ...]) -> BundleDefinition:
        name = path.name
        try:
            overlay = DerivedDefinition.model_validate(data)
        except ValidationError as exc:
            raise DefinitionError([f"{name}: {_describe(data, err)}" for err in exc.errors()]) from None
        if overlay.extends == overlay.id:
            raise DefinitionError([f"{name}: bundle '{overlay.id}' extends itself"])
        candidates = [p for p in self.files_by_id().get(overlay.extends, []) if p != path]
        if not candidates:
            known = ", ".join(sorted(i for i in self.files_by_id() if i != overlay.id)) or "none"
            raise DefinitionError(
                [
                    f"{name}: extends unknown bundle '{overlay.extends}': no definition in the same "
                    f"directory has that id (known: {known})"
                ]
            )
        if len(candidates) > 1:
            files = ", ".join(p.name for p in candidates)
            raise DefinitionError(
                [f"{name}: extends '{overlay.extends}', which more than one file defines ({files})"]
            )
        base_path = candidates[0]
        if base_path in chain:
            ids = [str(self.data_of(p).get("id")) for p in chain[chain.index(base_path) :]]
            cycle = " -> ".join([*ids, ids[0]])
            raise DefinitionError([f"{name}: extends form a cycle: {cycle}"])
        try:
            base = self.resolve(base_path, chain)
        except DefinitionError as exc:
            problems = [f"{name}: extends '{overlay.extends}' ({base_path.name}), which is invalid"]
            if self.explain_bases:
                problems.extend(exc.problems)
            raise DefinitionError(problems) from None
        definition, problems = derive_definition(base, overlay)
        if definition is None:
            raise DefinitionError([f"{name}: {problem}" for problem in problems])
        return definition


def derive_definition(
    base: BundleDefinition, overlay: DerivedDefinition
) -> tuple[BundleDefinition | None, list[str]]:
    """Apply a derived definition's changes to its (resolved, checked) base.

    Steps are removed, then replaced (deep-merge of the listed keys), then added at the end.
    Consent purposes that only removed steps used are dropped with them, since a derived file has
    no other way to drop them.

    Returns:
        The resolved definition (not yet cross-checked: see `check_definition`) and no problems,
        or None and every problem found, each naming the list and step it concerns.
    """
    problems: list[str] = []
    removed = _removed_steps(base, overlay, problems)
    replaced = _replaced_steps(base, overlay, removed, problems)
    steps = [replaced.get(step.id, step) for step in base.steps if step.id not in removed]
    kept = {step.id for step in steps}
    for step in overlay.add_steps:
        if step.id in kept:
            problems.append(
                f"add_steps: step '{step.id}' is already a step of '{base.id}'; change it with replace_steps"
            )
        steps.append(step)
    for step_id in sorted(removed):
        users = [step.id for step in steps if step_id in step.needs or step_id in step.references]
        if users:
            named = ", ".join(f"'{user}'" for user in users)
            problems.append(
                f"remove_steps: step '{step_id}' is still needed or referenced by {named}; "
                "remove them too or replace their needs and references"
            )
    purposes = _purposes(base, overlay, removed, steps, problems)
    if problems:
        return None, problems
    try:
        definition = BundleDefinition.model_validate(
            {
                **dict(base),
                "id": overlay.id,
                "version": overlay.version,
                "jurisdiction": overlay.jurisdiction,
                "title": overlay.title or base.title,
                "description": overlay.description or base.description,
                "timezone": overlay.timezone or base.timezone,
                "consent_purposes": purposes,
                "submission_rules": (*base.submission_rules, *overlay.add_submission_rules),
                "steps": tuple(steps),
            }
        )
    except ValidationError as exc:
        return None, [_describe({}, err) for err in exc.errors()]
    return definition, []


def _removed_steps(base: BundleDefinition, overlay: DerivedDefinition, problems: list[str]) -> set[str]:
    base_ids = [step.id for step in base.steps]
    removed: set[str] = set()
    for step_id in overlay.remove_steps:
        if step_id not in base_ids:
            problems.append(
                f"remove_steps: '{step_id}' is not a step of '{base.id}' (its steps: {', '.join(base_ids)})"
            )
        elif step_id in removed:
            problems.append(f"remove_steps: '{step_id}' is listed twice")
        else:
            removed.add(step_id)
    return removed


def _replaced_steps(
    base: BundleDefinition, overlay: DerivedDefinition, removed: set[str], problems: list[str]
) -> dict[str, StepDefinition]:
    base_ids = [step.id for step in base.steps]
    replaced: dict[str, StepDefinition] = {}
    for override in overlay.replace_steps:
        label = f"replace_steps: step '{override.id}'"
        changes = override.model_extra or {}
        if override.id not in base_ids:
            problems.append(f"{label} is not a step of '{base.id}' (its steps: {', '.join(base_ids)})")
        elif override.id in removed:
            problems.append(f"{label} is also in remove_steps")
        elif override.id in replaced:
            problems.append(f"{label} is listed twice")
        elif not changes:
            problems.append(f"{label} changes nothing: list the keys to change after its id")
        else:
            merged = merge_fields(base.step(override.id).model_dump(), changes)
            try:
                replaced[override.id] = StepDefinition.model_validate(merged)
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(part) for part in err["loc"])
                    problems.append(f"{label}: {where}: {err['msg']}" if where else f"{label}: {err['msg']}")
    return replaced


def _purposes(
    base: BundleDefinition,
    overlay: DerivedDefinition,
    removed: set[str],
    steps: list[StepDefinition],
    problems: list[str],
) -> dict[str, ConsentPurpose]:
    purposes = dict(base.consent_purposes)
    for purpose, declared in overlay.add_consent_purposes.items():
        if purpose in purposes:
            problems.append(f"add_consent_purposes: '{purpose}' is already declared by '{base.id}'")
        purposes[purpose] = declared
    still_used = {step.consent for step in steps}
    for step in base.steps:
        if step.id in removed and step.consent is not None and step.consent not in still_used:
            purposes.pop(step.consent, None)
    return purposes


_STEP_LISTS = ("steps", "add_steps", "replace_steps")


def _describe(data: Mapping[str, Any], err: Any) -> str:
    # Point at the step by its id when the YAML gives one, since list positions are hard to count.
    loc: tuple[Any, ...] = tuple(err["loc"])
    where = ".".join(str(part) for part in loc)
    if len(loc) >= 2 and loc[0] in _STEP_LISTS and isinstance(loc[1], int):
        steps = data.get(loc[0])
        raw = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
        step_id = raw.get("id") if isinstance(raw, dict) else None
        label = f"step '{step_id}'" if isinstance(step_id, str) else f"step #{loc[1] + 1}"
        if loc[0] != "steps":
            label = f"{loc[0]}: {label}"
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

    problems.extend(_check_timezone(definition.timezone))
    for step in definition.steps:
        problems.extend(_check_step(definition, step, steps, paths, known_adapters))
        problems.extend(_check_variants(definition, step, paths, known_adapters))
        problems.extend(_check_effective_date(definition, step, paths))
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
    problems.extend(
        f"submission rule '{rule.code}': date_within sets neither months_behind nor months_ahead, "
        "so it limits nothing"
        for rule in definition.submission_rules
        if rule.date_within is not None
        and rule.date_within.months_behind is None
        and rule.date_within.months_ahead is None
    )
    return problems


def _check_timezone(name: str) -> list[str]:
    # ZoneInfo also reads paths: refuse anything but an IANA name before asking it.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", name):
        return [f"timezone '{name}' is not an IANA time zone name such as 'America/Toronto'"]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [f"timezone '{name}' is not an IANA time zone name such as 'America/Toronto'"]
    return []


def _check_variants(
    definition: BundleDefinition,
    step: StepDefinition,
    paths: frozenset[str] | None,
    known_adapters: Collection[str],
) -> list[str]:
    label = f"step '{step.id}'"
    if not step.variants:
        if step.no_variant is not None:
            return [f"{label}: no_variant guidance is given but the step has no variants"]
        return []
    problems: list[str] = []
    if step.no_variant is None:
        # Without it a resident whose case no variant covers would see the step skipped unexplained.
        problems.append(
            f"{label}: has variants but no 'no_variant' guidance for a resident whom no variant covers"
        )
    known = ", ".join(sorted(known_adapters)) or "none"
    claimed: dict[tuple[str, str], int] = {}
    for number, variant in enumerate(step.variants, start=1):
        where = f"{label}: variant #{number} ({variant.adapter})"
        if variant.adapter not in known_adapters:
            problems.append(f"{where}: unknown adapter '{variant.adapter}' (known: {known})")
        if paths is not None and variant.when.field not in paths:
            problems.append(
                f"{where}: field '{variant.when.field}' is not in submission schema "
                f"'{definition.submission_schema}'"
            )
        for value in variant.when.one_of:
            # The plan compares trimmed and case-insensitively, so "Ottawa" and "OTTAWA " collide.
            slot = (variant.when.field, value.strip().casefold())
            first = claimed.setdefault(slot, number)
            if first != number:
                problems.append(
                    f"{where}: value '{value}' of '{variant.when.field}' is already chosen by "
                    f"variant #{first} ({step.variants[first - 1].adapter}); the first match would always win"
                )
            elif value != value.strip():
                problems.append(f"{where}: value '{value}' has spaces around it")
    return problems


def _check_effective_date(
    definition: BundleDefinition, step: StepDefinition, paths: frozenset[str] | None
) -> list[str]:
    rule = step.effective_date
    if rule is None:
        return []
    label = f"step '{step.id}'"
    if rule.field in step.fields:
        return []  # a field of the step that the schema lacks is reported with the step's fields
    if paths is not None and rule.field not in paths:
        return [
            f"{label}: effective_date field '{rule.field}' is not in submission schema "
            f"'{definition.submission_schema}'"
        ]
    return [
        f"{label}: effective_date field '{rule.field}' is not among the step's fields, "
        "so its system would not learn when the change takes effect"
    ]


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
        """Load every ``*.yaml`` / ``*.yml`` definition of a directory, derived ones resolved.

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
        resolver = _Resolver(root, known_adapters, explain_bases=False)
        problems: list[str] = []
        definitions: dict[str, BundleDefinition] = {}
        sources: dict[str, Path] = {}
        for path in files:
            try:
                definition = resolver.resolve(path)
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
