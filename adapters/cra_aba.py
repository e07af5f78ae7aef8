"""CRA Automated Benefits Application: applies for the Canada child benefit from the birth registration.

CRA's benefit systems exchange messages through a message-queue bridge: the application goes on
`legacy.cra-aba.requests` and CRA answers later on `legacy.cra-aba.replies` with its own reference
(see `adapters.message_queue` and docs/legacy-protocols.md). CRA's record is flat and upper-case,
like the mainframe it feeds. It receives the birth parent's name, date and place of birth, SIN
and mailing address, and the child's name, date and place of birth, sex and registration
number; marital status is not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.mapping import (
    FieldMap,
    Rename,
    compact_date,
    compact_postal_code,
    digits,
    language_letter,
    upper,
)
from adapters.message_queue import MessageQueueAdapter
from adapters.on_registrar_births import registration_number


def birthplace(place: Any) -> str | None:
    """A place of birth as CRA keeps it: `MUNICIPALITY, PROVINCE` (or country); no facility."""
    if not isinstance(place, Mapping):
        return None
    parts = [str(place[key]) for key in ("municipality", "province", "province_or_country") if place.get(key)]
    return ", ".join(parts).upper() or None


class CraAbaAdapter(MessageQueueAdapter):
    """Canada child benefit through the Automated Benefits Application, over CRA's message queue.

    `submit` returns once the application is queued (`pending_reply`); CRA's reply carries its
    reference, or its refusal with a bilingual reason.
    """

    system = "cra-aba"
    field_map = FieldMap(
        Rename("references", "registration_number", registration_number),
        Rename("child.given_names", "child_given_name", upper),
        Rename("child.surname", "child_surname", upper),
        Rename("child.sex", "child_sex"),
        Rename("child.date_of_birth", "child_birth_date", compact_date),
        Rename("child.place_of_birth", "child_birth_place", birthplace),
        Rename("birth_parent.given_names", "applicant_given_name", upper),
        Rename("birth_parent.surname", "applicant_surname", upper),
        Rename("birth_parent.date_of_birth", "applicant_birth_date", compact_date),
        Rename("birth_parent.place_of_birth", "applicant_birth_place", birthplace),
        Rename("birth_parent.sin", "applicant_sin", digits),
        Rename("birth_parent.mailing_address.street", "mailing_street", upper),
        Rename("birth_parent.mailing_address.unit", "mailing_unit", upper),
        Rename("birth_parent.mailing_address.municipality", "mailing_city", upper),
        Rename("birth_parent.mailing_address.province", "mailing_province"),
        Rename("birth_parent.mailing_address.postal_code", "mailing_postal_code", compact_postal_code),
        Rename("language", "correspondence_language", language_letter),
    )
