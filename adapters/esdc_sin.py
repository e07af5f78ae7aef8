"""ESDC Social Insurance Number for a newborn: a nightly batch program that reads request files.

Each request is one fixed-width file (`adapters/layouts/esdc_sin_request.yaml`) dropped in
`esdc-sin/inbox/`; ESDC's run answers in reply files (`esdc_sin_reply.yaml`) in `esdc-sin/outbox/`
with a request reference, never a SIN (the SIN itself is mailed).
"""

from __future__ import annotations

from adapters.batch import BatchFileAdapter
from adapters.fixedwidth import load_layout
from adapters.mapping import FieldMap, Rename, compact_postal_code, digits, language_letter
from adapters.on_registrar_births import registration_number

REQUEST_LAYOUT = load_layout("esdc_sin_request")
REPLY_LAYOUT = load_layout("esdc_sin_reply")


class EsdcSinAdapter(BatchFileAdapter):
    """Newborn SIN application by batch file; the answer is a request reference, never a SIN."""

    system = "esdc-sin"
    request_layout = REQUEST_LAYOUT
    reply_layout = REPLY_LAYOUT
    request_file_type = "SINREQ"
    field_map = FieldMap(
        Rename("references", "province_registration_number", registration_number),
        Rename("child.given_names", "child.first_name"),
        Rename("child.surname", "child.last_name"),
        Rename("child.sex", "child.sex"),
        Rename("child.date_of_birth", "child.birth_date"),
        Rename("child.place_of_birth.facility_name", "child.birth_facility"),
        Rename("child.place_of_birth.municipality", "child.birth_city"),
        Rename("child.place_of_birth.province", "child.birth_province"),
        Rename("birth_parent.given_names", "parent.first_name"),
        Rename("birth_parent.surname", "parent.last_name"),
        Rename("birth_parent.surname_at_birth", "parent.last_name_at_birth"),
        Rename("birth_parent.sin", "parent.sin", digits),
        Rename("birth_parent.status_in_canada", "parent.status_in_canada"),
        Rename("other_parent.given_names", "other_parent.first_name"),
        Rename("other_parent.surname", "other_parent.last_name"),
        Rename("birth_parent.mailing_address.street", "mailing_address.address_line_1"),
        Rename("birth_parent.mailing_address.unit", "mailing_address.address_line_2"),
        Rename("birth_parent.mailing_address.municipality", "mailing_address.city"),
        Rename("birth_parent.mailing_address.province", "mailing_address.province_code"),
        Rename(
            "birth_parent.mailing_address.postal_code", "mailing_address.postal_code", compact_postal_code
        ),
        Rename("language", "language_of_correspondence", language_letter),
    )
