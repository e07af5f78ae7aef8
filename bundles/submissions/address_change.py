"""Submission schema `address_change/v1`: one change of address for every program that needs it.

It holds what ServiceOntario's online address change asks to check identity (old postal code,
the last 4 characters of a citizenship or immigration document, birth date), the numbers each
program finds the resident's file with (SIN for CRA and Service Canada, driver's licence for
the Ministry of Transportation, health number for OHIP), the old and new addresses and the date
the move takes effect. Each bundle step receives only the fields its definition lists.

How far ahead or back the effective date may lie is the bundle's rule (`submission_rules`), not
the schema's: jurisdictions differ.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    WithJsonSchema,
    model_validator,
)

from bundles.messages import NOTICES
from bundles.models import LocalizedText
from bundles.submissions.newborn import raise_rule_errors
from bundles.submissions.parts import CanadianAddress, Part
from bundles.validators import (
    EARLIEST_BIRTH_DATE,
    Email,
    OntarioHealthNumber,
    PastBirthDate,
    PersonName,
    Phone,
    PostalCode,
    SocialInsuranceNumber,
    custom_error,
)

SCHEMA_NAME = "address_change/v1"

# Consent purposes this schema's own rules depend on; an address-change definition declares them.
CONSENT_CRA = "cra_address"
CONSENT_SERVICE_CANADA = "service_canada_address"
CONSENT_ELECTIONS = "elections_canada"
CONSENT_MTO = "mto_address"
CONSENT_OHIP = "ohip_address"
CONSENT_MUNICIPAL = "municipal_address"

DocumentType = Literal[
    "citizenship_certificate",
    "permanent_resident_card",
    "confirmation_of_permanent_residence",
    "ontario_photo_card",
]
"""Documents whose number's last 4 characters ServiceOntario accepts to check identity."""

_DRIVER_LICENCE = re.compile(r"^[A-Z]\d{14}$")
_LAST4 = re.compile(r"^[A-Z0-9]{4}$")


def normalize_ontario_driver_licence(value: str) -> str:
    """Validate an Ontario driver's licence number: 1 letter then 14 digits.

    Args:
        value: The number as on the card, e.g. ``"A1234-56789-01234"``; case, spaces and
            hyphens are tolerated.

    Returns:
        The 15 characters, upper case, without separators, e.g. ``"A12345678901234"``.

    Raises:
        PydanticCustomError: ``driver_licence_format``.
    """
    compact = re.sub(r"[\s-]", "", value).upper()
    if not _DRIVER_LICENCE.match(compact):
        raise custom_error("driver_licence_format")
    return compact


def normalize_document_last4(value: str) -> str:
    """Validate the last 4 characters of a document number: exactly 4 letters or digits.

    Raises:
        PydanticCustomError: ``document_last4_format``.
    """
    compact = value.strip().upper()
    if not _LAST4.match(compact):
        raise custom_error("document_last4_format")
    return compact


def check_effective_date(value: date) -> date:
    """Reject a date no program could take (before 1900); the bundle bounds the window.

    Raises:
        PydanticCustomError: ``date_too_old``.
    """
    if value < EARLIEST_BIRTH_DATE:
        raise custom_error("date_too_old")
    return value


OntarioDriverLicence = Annotated[
    str,
    AfterValidator(normalize_ontario_driver_licence),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z][\d -]{14,18}$"}),
]
DocumentLast4 = Annotated[
    str,
    AfterValidator(normalize_document_last4),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9]{4}$"}),
]
EffectiveDate = Annotated[date, AfterValidator(check_effective_date)]


class Address(CanadianAddress):
    """A Canadian address; its postal code must belong to its province or territory."""

    def same_place(self, other: Address) -> bool:
        """Whether two addresses name the same place, ignoring case and spacing."""

        def key(address: Address) -> tuple[str, ...]:
            parts = (address.street, address.unit or "", address.municipality, address.postal_code)
            return tuple(" ".join(part.casefold().split()) for part in parts)

        return key(self) == key(other)


class Resident(Part):
    """The person who moves, and the numbers each program knows them by."""

    given_names: PersonName | None = None
    surname: PersonName
    date_of_birth: PastBirthDate
    sin: SocialInsuranceNumber | None = Field(
        default=None, description="Required to change the address at CRA or Service Canada."
    )
    health_number: OntarioHealthNumber | None = Field(
        default=None, description="Required to change the address of the health card (OHIP)."
    )
    driver_licence_number: OntarioDriverLicence | None = Field(
        default=None, description="Required to change the address of the driver's licence and vehicle permit."
    )


class Identity(Part):
    """What ServiceOntario checks before any program is told (never stored by tellonce's steps)."""

    document_type: DocumentType
    document_last4: DocumentLast4 = Field(description="The last 4 characters of the document's number.")
    old_postal_code: PostalCode = Field(description="The postal code ServiceOntario has on file.")


class Contact(Part):
    """How programs may reach the resident about this change."""

    email: Email | None = None
    phone: Phone | None = None


class AddressChangeSubmission(Part):
    """The whole change-of-address form (`address_change/v1`)."""

    language: Literal["en", "fr"] = Field(description="Language for correspondence from every program.")
    consents: dict[str, bool] = Field(
        default_factory=dict, description="Consent given per program (purpose id -> yes/no)."
    )
    resident: Resident
    identity: Identity
    old_address: Address
    new_address: Address
    effective_date: EffectiveDate = Field(description="The day the move takes effect (ISO date).")
    contact: Contact | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> AddressChangeSubmission:
        failures: list[tuple[tuple[str | int, ...], str]] = []
        resident = self.resident
        if resident.health_number is None and resident.driver_licence_number is None:
            failures.append((("resident",), "identity_number_required"))
        if resident.sin is None:
            if self.consents.get(CONSENT_CRA):
                failures.append((("resident", "sin"), "sin_required_for_cra_address"))
            elif self.consents.get(CONSENT_SERVICE_CANADA):
                failures.append((("resident", "sin"), "sin_required_for_service_canada_address"))
        if self.consents.get(CONSENT_MTO) and resident.driver_licence_number is None:
            failures.append((("resident", "driver_licence_number"), "driver_licence_required_for_mto"))
        if self.consents.get(CONSENT_OHIP) and resident.health_number is None:
            failures.append((("resident", "health_number"), "health_number_required_for_ohip"))
        if self.new_address.same_place(self.old_address):
            failures.append((("new_address",), "new_address_same_as_old"))
        raise_rule_errors("AddressChangeSubmission", failures)
        return self

    def notices(self, *, today: date) -> list[LocalizedText]:
        """What the resident should know about an accepted submission.

        Args:
            today: The date the submission is received (America/Toronto).

        Returns:
            A notice when the move takes effect later: some programs receive it only then.
        """
        return [NOTICES["address_effective_later"]] if self.effective_date > today else []
