"""The portal's form journeys: which fields each page asks for, read from the submission models.

A submission schema (`newborn/v1`, `address_change/v1`) is split into pages here; everything
else about a field (its kind, whether it is required, its choices) is read from the schema's
JSON Schema, so a bundle that reuses a schema (e.g. `newborn-on-ottawa`) gets the same pages.
Labels and hints are message ids, translated by the page's catalogue.

Values travel as the strings a browser posts; `submission_from` turns them into the JSON the
API would receive, so the pages validate with the API's own `validate_submission`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bundles.models import BundleDefinition
from bundles.submissions import SUBMISSION_SCHEMAS, FieldError


def N_(message: str) -> str:  # noqa: N802 - the name gettext's extractors look for
    """Mark a message for the catalogues without translating it here (it is translated on the page)."""
    return message


FieldKind = Literal["text", "email", "tel", "number", "date", "time", "radios", "select"]


@dataclass(frozen=True)
class FieldSpec:
    """One form field, at a dotted submission path."""

    path: str
    kind: FieldKind
    label: str
    hint: str | None
    required: bool
    choices: tuple[tuple[str, str], ...] = ()
    optional_section: str | None = None
    """The nearest enclosing section that may be left out entirely (e.g. `other_parent`)."""
    autocomplete: str | None = None

    @property
    def field_id(self) -> str:
        """The element id of the field (and the target of its error-summary link)."""
        return self.path.replace(".", "-").replace("_", "-")


@dataclass(frozen=True)
class Group:
    """Fields shown together, in a fieldset when they have a legend."""

    legend: str | None
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class Page:
    """One page of a form journey."""

    id: str
    title: str
    intro: str | None
    groups: tuple[Group, ...]

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Every field of the page, in order."""
        return tuple(f for g in self.groups for f in g.fields)


@dataclass(frozen=True)
class Journey:
    """The pages of one submission schema, and its field labels by path (sections included)."""

    schema: str
    pages: tuple[Page, ...]
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Every field of every page, in order."""
        return tuple(f for p in self.pages for f in p.fields)

    def page(self, page_id: str) -> Page:
        """The page with this id (KeyError when absent)."""
        for page in self.pages:
            if page.id == page_id:
                return page
        raise KeyError(page_id)

    def field_for(self, error_path: str) -> FieldSpec | None:
        """The field an error at this path belongs to: the field itself, or the first one inside it.

        A rule on a whole section points at the field that fixes it (`SECTION_ERROR_FIELDS`).
        """
        error_path = SECTION_ERROR_FIELDS.get(error_path, error_path)
        for spec in self.fields:
            if spec.path == error_path or spec.path.startswith(error_path + "."):
                return spec
        return None

    def page_of(self, spec: FieldSpec) -> Page:
        """The page that asks for a field."""
        return next(p for p in self.pages if spec in p.fields)

    def label(self, path: str) -> str:
        """The label (message id) of a field or section path."""
        return self.labels[path]


# Where an error on a whole section is fixed: "give a health or licence number" belongs with
# the health number, "the new address is the old one" with the new street.
SECTION_ERROR_FIELDS: dict[str, str] = {
    "resident": "resident.health_number",
    "new_address": "new_address.street",
}

# Labels by the last segment of a path, shared by every section that has a field of that name.
LEAF_LABELS: dict[str, str] = {
    "given_names": N_("Given names"),
    "surname": N_("Surname"),
    "surname_at_birth": N_("Surname at birth"),
    "sex": N_("Sex"),
    "date_of_birth": N_("Date of birth"),
    "time_of_birth": N_("Time of birth"),
    "plurality": N_("Number of children born of this pregnancy"),
    "birth_order": N_("Birth order (for a multiple birth)"),
    "facility_name": N_("Hospital or birth centre"),
    "municipality": N_("City, town or municipality"),
    "province": N_("Province or territory"),
    "province_or_country": N_("Province, territory or country"),
    "status_in_canada": N_("Status in Canada"),
    "marital_status": N_("Marital status"),
    "health_number": N_("Ontario health number"),
    "sin": N_("Social Insurance Number"),
    "street": N_("Street address"),
    "unit": N_("Apartment or unit"),
    "postal_code": N_("Postal code"),
    "email": N_("Email address"),
    "phone": N_("Phone number"),
    "language": N_("Language for letters and messages from the programs"),
    "form": N_("Type of birth certificate"),
    "copies": N_("Number of copies"),
    "promoter": N_("Name of the RESP promoter (bank, credit union or group plan)"),
    "driver_licence_number": N_("Ontario driver's licence number"),
    "document_type": N_("Identity document"),
    "document_last4": N_("Last 4 characters of the document's number"),
    "old_postal_code": N_("Postal code ServiceOntario has on file for you"),
    "effective_date": N_("Date of your move"),
}
HINTS: dict[str, str] = {
    "date": N_("Year, month and day, for example 2026-03-14."),
    "time": N_("24-hour clock, for example 14:30."),
    "given_names": N_("Leave blank if the person has a single name (enter it as the surname)."),
    "sin": N_("9 digits, as on the SIN letter."),
    "health_number": N_("10 digits, then the version code if the card has one."),
    "postal_code": N_("For example K1A 0B1."),
    "phone": N_("10 digits, for example 613-555-0123."),
    "driver_licence_number": N_("1 letter and 14 digits, as on the licence."),
    "birth_order": N_("1 for the first born; leave blank for a single birth."),
    "facility_name": N_("Leave blank for a birth at home or elsewhere."),
}
# Labels of choices by field name and value.
CHOICE_LABELS: dict[str, dict[str, str]] = {
    "sex": {"F": N_("Female"), "M": N_("Male"), "X": N_("Another gender (X)")},
    "language": {"en": N_("English"), "fr": N_("French")},
    "status_in_canada": {
        "citizen": N_("Canadian citizen"),
        "permanent_resident": N_("Permanent resident"),
        "temporary_resident": N_("Temporary resident"),
        "other": N_("Other"),
    },
    "marital_status": {
        "never_married": N_("Never married"),
        "married": N_("Married"),
        "common_law": N_("Common-law"),
        "separated": N_("Separated"),
        "divorced": N_("Divorced"),
        "widowed": N_("Widowed"),
    },
    "form": {
        "short": N_("Short form ($25 a copy)"),
        "long": N_("Long form, with the parents' details ($35)"),
    },
    "document_type": {
        "citizenship_certificate": N_("Citizenship certificate"),
        "permanent_resident_card": N_("Permanent resident card"),
        "confirmation_of_permanent_residence": N_("Confirmation of permanent residence"),
        "ontario_photo_card": N_("Ontario photo card"),
    },
    "province": {
        "AB": N_("Alberta"),
        "BC": N_("British Columbia"),
        "MB": N_("Manitoba"),
        "NB": N_("New Brunswick"),
        "NL": N_("Newfoundland and Labrador"),
        "NS": N_("Nova Scotia"),
        "NT": N_("Northwest Territories"),
        "NU": N_("Nunavut"),
        "ON": N_("Ontario"),
        "PE": N_("Prince Edward Island"),
        "QC": N_("Quebec"),
        "SK": N_("Saskatchewan"),
        "YT": N_("Yukon"),
    },
}
AUTOCOMPLETE: dict[str, str] = {
    "email": "email",
    "phone": "tel-national",
    "street": "address-line1",
    "unit": "address-line2",
    "postal_code": "postal-code",
}
# Radios for short lists; a select for long ones (provinces).
MAX_RADIOS = 6

# Section labels, by path, for the consent page's "what each program receives".
SECTION_LABELS: dict[str, str] = {
    "child.place_of_birth": N_("The child's place of birth"),
    "birth_parent.place_of_birth": N_("The birth parent's place of birth"),
    "other_parent.place_of_birth": N_("The other parent's place of birth"),
    "birth_parent.mailing_address": N_("Mailing address"),
    "old_address": N_("Old address"),
    "new_address": N_("New address"),
}
# Whose field it is, for a label that names the person: "Child: Given names".
OWNER_LABELS: dict[str, str] = {
    "child": N_("Child"),
    "birth_parent": N_("Birth parent"),
    "other_parent": N_("Other parent"),
    "resident": N_("You"),
    "identity": N_("Identity check"),
    "certificate": N_("Birth certificate"),
    "resp_referral": N_("Education savings"),
    "contact": N_("Contact"),
}

_PageLayout = tuple[str, str, str | None, tuple[tuple[str | None, tuple[str, ...]], ...]]

_ADDRESS = ("street", "unit", "municipality", "province", "postal_code")


def _under(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{name}" for name in names)


LAYOUTS: dict[str, tuple[_PageLayout, ...]] = {
    "newborn/v1": (
        (
            "child",
            N_("About your baby"),
            None,
            (
                (
                    None,
                    _under(
                        "child",
                        ("given_names", "surname", "sex", "date_of_birth", "time_of_birth"),
                    ),
                ),
                (N_("Multiple birth"), _under("child", ("plurality", "birth_order"))),
                (
                    N_("Place of birth"),
                    _under("child.place_of_birth", ("facility_name", "municipality", "province")),
                ),
            ),
        ),
        (
            "birth_parent",
            N_("About the birth parent"),
            N_("The parent who gave birth."),
            (
                (
                    None,
                    _under(
                        "birth_parent",
                        (
                            "given_names",
                            "surname",
                            "surname_at_birth",
                            "date_of_birth",
                            "status_in_canada",
                            "marital_status",
                            "health_number",
                        ),
                    ),
                ),
                (
                    N_("Birth parent's place of birth"),
                    _under("birth_parent.place_of_birth", ("municipality", "province_or_country")),
                ),
            ),
        ),
        (
            "contact",
            N_("Mailing address and contact"),
            None,
            (
                (N_("Mailing address"), _under("birth_parent.mailing_address", _ADDRESS)),
                (None, (*_under("birth_parent", ("email", "phone")), "language")),
            ),
        ),
        (
            "other_parent",
            N_("About the other parent"),
            N_("Leave this page blank if there is no other parent to register."),
            (
                (
                    None,
                    _under(
                        "other_parent",
                        ("given_names", "surname", "surname_at_birth", "date_of_birth", "status_in_canada"),
                    ),
                ),
                (
                    N_("Other parent's place of birth"),
                    _under("other_parent.place_of_birth", ("municipality", "province_or_country")),
                ),
            ),
        ),
        (
            "benefits",
            N_("Benefits and options"),
            N_(
                "Fill in what the programs you will choose on the next page need. "
                "Leave blank what you do not want."
            ),
            (
                (N_("Canada child benefit"), ("birth_parent.sin",)),
                (N_("Birth certificate"), _under("certificate", ("form", "copies"))),
                (N_("Education savings"), ("resp_referral.promoter",)),
            ),
        ),
    ),
    "address_change/v1": (
        (
            "resident",
            N_("About you"),
            N_("Give the numbers of the programs you want to tell; you need a health or licence number."),
            (
                (
                    None,
                    _under(
                        "resident",
                        (
                            "given_names",
                            "surname",
                            "date_of_birth",
                            "sin",
                            "health_number",
                            "driver_licence_number",
                        ),
                    ),
                ),
            ),
        ),
        (
            "identity",
            N_("Confirm your identity"),
            N_("ServiceOntario checks these details before any program is told about your move."),
            ((None, _under("identity", ("document_type", "document_last4", "old_postal_code"))),),
        ),
        (
            "addresses",
            N_("Your old and new addresses"),
            None,
            (
                (N_("Old address"), _under("old_address", _ADDRESS)),
                (N_("New address"), _under("new_address", _ADDRESS)),
                (None, ("effective_date",)),
            ),
        ),
        (
            "contact",
            N_("How to reach you"),
            None,
            ((None, (*_under("contact", ("email", "phone")), "language")),),
        ),
    ),
}


@dataclass(frozen=True)
class _SchemaField:
    kind: FieldKind
    required: bool
    choices: tuple[str, ...]
    optional_section: str | None


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The node behind `$ref` / `anyOf [x, null]`, and whether null is allowed."""
    nullable = False
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        node = options[0]
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node, nullable


def _schema_fields(schema: Mapping[str, Any]) -> dict[str, _SchemaField]:
    found: dict[str, _SchemaField] = {}

    def walk(node: Mapping[str, Any], prefix: str, optional_section: str | None) -> None:
        required = set(node.get("required", ()))
        for name, raw in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            target, nullable = _resolve(schema, raw)
            if target.get("type") == "object" and "properties" in target:
                inner = optional_section or (path if nullable or name not in required else None)
                walk(target, f"{path}.", inner)
                continue
            if "enum" in target:
                kind: FieldKind = "select" if len(target["enum"]) > MAX_RADIOS else "radios"
            elif target.get("format") in ("date", "time"):
                kind = target["format"]
            elif target.get("type") == "integer":
                kind = "number"
            elif name in ("email",):
                kind = "email"
            elif name in ("phone",):
                kind = "tel"
            else:
                kind = "text"
            found[path] = _SchemaField(
                kind=kind,
                required=name in required and not nullable and "default" not in raw,
                choices=tuple(str(v) for v in target.get("enum", ())),
                optional_section=optional_section,
            )

    walk(schema, "", None)
    return found


def _label_of(path: str) -> str:
    return LEAF_LABELS[path.rsplit(".", 1)[-1]]


def _hint_of(path: str, kind: FieldKind) -> str | None:
    leaf = path.rsplit(".", 1)[-1]
    if kind in ("date", "time"):
        return HINTS[kind]
    return HINTS.get(leaf)


def build_journey(schema_name: str) -> Journey:
    """The pages of a submission schema, with each field's kind and choices read from its model.

    Raises:
        KeyError: a schema without a page layout, or a layout naming a field the schema lacks.
    """
    model = SUBMISSION_SCHEMAS[schema_name]
    known = _schema_fields(model.model_json_schema())
    pages: list[Page] = []
    for page_id, title, intro, groups in LAYOUTS[schema_name]:
        built_groups = []
        for legend, paths in groups:
            specs = []
            for path in paths:
                info = known[path]
                leaf = path.rsplit(".", 1)[-1]
                labels = CHOICE_LABELS.get(leaf, {})
                specs.append(
                    FieldSpec(
                        path=path,
                        kind=info.kind,
                        label=_label_of(path),
                        hint=_hint_of(path, info.kind),
                        required=info.required,
                        choices=tuple((value, labels[value]) for value in info.choices),
                        optional_section=info.optional_section,
                        autocomplete=AUTOCOMPLETE.get(leaf),
                    )
                )
            built_groups.append(Group(legend, tuple(specs)))
        pages.append(Page(page_id, title, intro, tuple(built_groups)))
    labels = {path: _label_of(path) for path in known if path != "consents"}
    labels.update({p: t for p, t in SECTION_LABELS.items() if any(k.startswith(p + ".") for k in known)})
    return Journey(schema_name, tuple(pages), labels)


JOURNEYS: dict[str, Journey] = {name: build_journey(name) for name in LAYOUTS}


def journey_for(definition: BundleDefinition) -> Journey:
    """The journey of a bundle (by its submission schema)."""
    return JOURNEYS[definition.submission_schema]


def submission_from(
    journey: Journey,
    values: Mapping[str, str],
    consents: Mapping[str, bool],
    *,
    language: str,
    upto: int | None = None,
) -> dict[str, Any]:
    """The JSON submission the API would receive for these form values.

    Blank values are left out. A section every field of which is optional and blank (e.g. no
    other parent) is left out; a required section is always present once its page was reached
    (pages before `upto`, or all), so a missing field is reported at the field, not the section.
    """
    raw: dict[str, Any] = {}
    reached = journey.pages if upto is None else journey.pages[: upto + 1]
    filled_sections = {
        spec.optional_section
        for spec in journey.fields
        if spec.optional_section and values.get(spec.path, "").strip()
    }
    for page in reached:
        for spec in page.fields:
            if spec.optional_section and spec.optional_section not in filled_sections:
                continue
            *parents, leaf = spec.path.split(".")
            node = raw
            for parent in parents:
                node = node.setdefault(parent, {})
            value = values.get(spec.path, "").strip()
            if not value:
                continue
            node[leaf] = int(value) if spec.kind == "number" and value.isdigit() else value
    raw.setdefault("language", language)
    raw["consents"] = dict(consents)
    return raw


def errors_by_field(
    journey: Journey, errors: list[FieldError]
) -> tuple[dict[str, FieldError], list[FieldError]]:
    """Errors keyed by the field they belong to (first error per field), and those of no field."""
    by_field: dict[str, FieldError] = {}
    general: list[FieldError] = []
    for error in errors:
        spec = journey.field_for(error.path) if error.path else None
        if spec is None:
            general.append(error)
        else:
            by_field.setdefault(spec.path, error)
    return by_field, general
