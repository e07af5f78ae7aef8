"""A private RESP promoter's referral intake (education savings: Canada Learning Bond).

This intake does not de-duplicate on idempotency keys: a retried call makes a second referral.
tellonce keeps retries rare (one attempt per lost answer), and the sandbox's ledger shows any
duplicate so an operator can withdraw it with the promoter.
"""

from __future__ import annotations

from adapters.http import JsonRestAdapter
from adapters.mapping import FieldMap, Rename


class RespReferralAdapter(JsonRestAdapter):
    """Education savings referral to the promoter the parent chose; contact details only."""

    system = "resp-referral"
    field_map = FieldMap(
        Rename("resp_referral.promoter", "promoter_name"),
        Rename("birth_parent.given_names", "contact.first_name"),
        Rename("birth_parent.surname", "contact.last_name"),
        Rename("birth_parent.email", "contact.email"),
        Rename("birth_parent.phone", "contact.phone"),
        Rename("birth_parent.mailing_address", "contact.mailing_address"),
        Rename("language", "contact.preferred_language"),
        Rename("child.given_names", "beneficiary.first_name"),
        Rename("child.date_of_birth", "beneficiary.birth_date"),
    )
