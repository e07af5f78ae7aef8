"""Synthetic projected fields of a newborn bundle, for adapter tests and the contract kit.

Every value is made up: the SIN is the CRA's published sample number, the address a fictional one.
"""

from __future__ import annotations

from typing import Any

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
