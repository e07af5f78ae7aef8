"""Office of the Registrar General (Ontario): registers a birth from the parents' Statement of Live Birth.

The registration number it returns is the bundle's pivot: programs after it receive it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adapters.http import JsonRestAdapter
from adapters.mapping import FieldMap, Rename

REGISTRATION_NUMBER = re.compile(r"^ON-\d{4}-\d{7}$")
"""The registrar's number: `ON-<year>-<7 digits>`."""


def registration_number(references: Any) -> str | None:
    """The birth registration number among the references of earlier steps, if there is one.

    Steps send references keyed by step id, which is configuration; the number's format is a
    fact of the registrar's system, so adapters find it by its format, not by a step's name.
    """
    if not isinstance(references, Mapping):
        return None
    for value in references.values():
        if isinstance(value, str) and REGISTRATION_NUMBER.match(value):
            return value
    return None


def _parent(source: str, target: str) -> tuple[Rename, ...]:
    return (
        Rename(f"{source}.given_names", f"{target}.given_names"),
        Rename(f"{source}.surname", f"{target}.surname"),
        Rename(f"{source}.surname_at_birth", f"{target}.surname_at_birth"),
        Rename(f"{source}.date_of_birth", f"{target}.birth_date"),
        Rename(f"{source}.place_of_birth", f"{target}.birthplace"),
        Rename(f"{source}.marital_status", f"{target}.marital_status"),
        Rename(f"{source}.health_number", f"{target}.health_number"),
    )


class OntarioBirthRegistrationAdapter(JsonRestAdapter):
    """Ontario birth registration (Statement of Live Birth); keys are honoured, nothing is undone."""

    system = "on-registrar-births"
    field_map = FieldMap(
        Rename("child.given_names", "child.given_names"),
        Rename("child.surname", "child.surname"),
        Rename("child.sex", "child.sex"),
        Rename("child.date_of_birth", "child.birth_date"),
        Rename("child.time_of_birth", "child.birth_time"),
        Rename("child.plurality", "child.plurality"),
        Rename("child.birth_order", "child.birth_order"),
        Rename("child.place_of_birth.facility_name", "child.birth_facility"),
        Rename("child.place_of_birth.municipality", "child.birth_municipality"),
        Rename("child.place_of_birth.province", "child.birth_province"),
        *_parent("birth_parent", "parent_1"),
        *_parent("other_parent", "parent_2"),
        Rename("birth_parent.mailing_address", "informant.address"),
        Rename("birth_parent.email", "informant.email"),
        Rename("birth_parent.phone", "informant.phone"),
        Rename("language", "correspondence_language"),
        Rename("birth_notice.notice_id", "notice_of_live_birth.number"),
    )
