"""Synthetic projected fields of a newborn bundle, for adapter tests and the contract kit.

Every value is made up: the SIN is the CRA's published sample number, the address a fictional one.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from bundles.validators import toronto_today

NEWBORN_FIELDS: dict[str, Any] = {
    "language": "fr",
    "child": {
        "given_names": "Élodie",
        "surname": "Tremblay",
        "sex": "F",
        "date_of_birth": "2026-01-31",
        "place_of_birth": {"facility_name": "Hôpital Montfort", "municipality": "Ottawa", "province": "ON"},
    },
    "birth_parent": {
        "given_names": "Marie",
        "surname": "Tremblay",
        "surname_at_birth": "Gagnon",
        "date_of_birth": "1994-05-02",
        "place_of_birth": {"municipality": "Gatineau", "province_or_country": "QC"},
        "sin": "046 454 286",
        "marital_status": "married",
        "mailing_address": {
            "street": "100 rue Principale",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "k1a 0b1",
        },
    },
    "certificate": {"form": "long", "copies": 2},
    "resp_referral": {"promoter": "Fonds Exemple"},
    "references": {"register_birth": "ON-2026-0000042", "other": "SO-CERT-XYZ"},
}
"""The union of what the five newborn steps may receive, as `bundles.plan.project` shapes it."""


def address_change_fields(effective_date: date | None = None) -> dict[str, Any]:
    """Synthetic projected fields of a change of address, for adapter tests and the contract kit.

    The resident is the sandbox's `demo` resident (`infra/sandbox/addresses.py`): ServiceOntario's
    simulated identity check knows them, so the identity step accepts the sample. Every value is
    made up. The move takes effect today in Ontario unless `effective_date` says otherwise: every
    address system takes a change dated today.
    """
    return {
        "language": "fr",
        "resident": {
            "given_names": "Amélie",
            "surname": "Tremblay",
            "date_of_birth": "1988-04-12",
            "sin": "135792463",
            "health_number": "4532017888",
            "driver_licence_number": "T65123456880412",
        },
        "identity": {
            "document_type": "citizenship_certificate",
            "document_last4": "4821",
            "old_postal_code": "K2P 1L4",
        },
        "old_address": {
            "street": "200 rue Elgin",
            "unit": "1204",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "K2P 1L4",
        },
        "new_address": {
            "street": "45 avenue Beechwood",
            "municipality": "Ottawa",
            "province": "ON",
            "postal_code": "K1M 1L9",
        },
        "effective_date": (effective_date or toronto_today()).isoformat(),
        "contact": {"email": "amelie.tremblay@example.ca", "phone": "613-555-0142"},
    }
