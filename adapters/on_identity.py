"""ServiceOntario identity check: the pivot of the change of address; nothing is sent before it passes.

ServiceOntario finds the resident's file by health number or driver's licence number and checks
the birth date, the old postal code and the last 4 characters of a citizenship or immigration
document. A wrong answer is refused (`identity_mismatch`, saying how many attempts remain); after
too many, the check is locked for a day (`identity_locked`). Both are `RejectedError`s carrying
ServiceOntario's own bilingual message. The check cannot be undone and needs no undoing.
"""

from __future__ import annotations

from adapters.http import JsonRestAdapter
from adapters.mapping import FieldMap, Rename, compact_postal_code


class OntarioIdentityAdapter(JsonRestAdapter):
    """Checks a resident's identity; the answer is a check reference (`ID-…`), never personal data.

    The system counts every wrong answer it receives: retries always carry the same idempotency
    key, so a repeated request is answered from the first record and is not another attempt.
    """

    system = "on-identity"
    field_map = FieldMap(
        Rename("resident.health_number", "health_number"),
        Rename("resident.driver_licence_number", "licence_number"),
        Rename("resident.date_of_birth", "birth_date"),
        Rename("identity.document_type", "document.type"),
        Rename("identity.document_last4", "document.last4"),
        Rename("identity.old_postal_code", "postal_code", compact_postal_code),
    )
