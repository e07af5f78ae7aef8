"""Submission schema `newborn/v1`: one newborn form that feeds every program of a newborn bundle.

It combines what Ontario's Statement of Live Birth, the CRA Automated Benefits Application
(Canada child benefit) and the newborn Social Insurance Number application ask for, plus the
optional birth certificate order and education savings referral. Each bundle step receives
only the fields its definition lists.

A single name is recorded as the surname (Ontario has allowed single names since 2016), which
is why given names are optional throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails

from bundles.messages import NOTICES
from bundles.models import LocalizedText
from bundles.submissions.parts import CanadianAddress, Part
from bundles.validators import (
    ChildBirthDate,
    Email,
    LongText,
    OntarioHealthNumber,
    PastBirthDate,
    PersonName,
    Phone,
    ProvinceCode,
    ShortText,
    SocialInsuranceNumber,
    custom_error,
    is_late_registration,
    is_temporary_sin,
)

SCHEMA_NAME = "newborn/v1"

# Consent purposes this schema's own rules depend on; a newborn definition declares them.
CONSENT_CERTIFICATE = "certificate_order"
CONSENT_SIN = "sin_application"
CONSENT_CCB = "ccb_aba"
CONSENT_RESP = "resp_referral"

StatusInCanada = Literal["citizen", "permanent_resident", "temporary_resident", "other"]
MaritalStatus = Literal["never_married", "married", "common_law", "separated", "divorced", "widowed"]


def raise_rule_errors(title: str, failures: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
    """Raise one `ValidationError` holding every failed cross-field rule, each at its own path.

    pydantic keeps the line errors of a `ValidationError` raised inside a validator and
    prefixes their locations, so a rule checked on the whole form can point at the field
    to fix (``birth_parent.sin``) rather than at the form.

    Args:
        title: The model's name, for pydantic's error title.
        failures: ``(location relative to the model, custom error code)`` pairs.

    Raises:
        ValidationError: When there is at least one failure.
    """
    if failures:
        raise ValidationError.from_exception_data(
            title,
            [InitErrorDetails(type=custom_error(code), loc=loc, input=None) for loc, code in failures],
        )


class ChildPlaceOfBirth(Part):
    """Where the child was born."""

    facility_name: LongText | None = Field(
        default=None, description="Hospital or birth centre; leave out for a birth at home or elsewhere."
    )
    municipality: ShortText
    province: ProvinceCode


class ParentPlaceOfBirth(Part):
    """Where a parent was born."""

    municipality: ShortText
    province_or_country: ShortText = Field(
        description="Province or territory if born in Canada, otherwise the country."
    )


class MailingAddress(CanadianAddress):
    """A Canadian mailing address; its postal code must belong to its province or territory."""


class Child(Part):
    """The newborn."""

    given_names: PersonName | None = None
    surname: PersonName
    sex: Literal["F", "M", "X"]
    date_of_birth: ChildBirthDate
    time_of_birth: time | None = None
    plurality: int = Field(
        default=1, ge=1, le=8, description="Children born of this pregnancy (2 for twins)."
    )
    birth_order: int | None = Field(
        default=None, ge=1, le=8, description="This child's order in a multiple birth (1 = first born)."
    )
    place_of_birth: ChildPlaceOfBirth

    @model_validator(mode="after")
    def _birth_order_fits_plurality(self) -> Child:
        if self.plurality > 1 and self.birth_order is None:
            raise_rule_errors("Child", [(("birth_order",), "birth_order_required")])
        if self.birth_order is not None and self.birth_order > self.plurality:
            raise_rule_errors("Child", [(("birth_order",), "birth_order_out_of_range")])
        return self


class BirthParent(Part):
    """The parent who gave birth: the applicant for registration and for the Canada child benefit."""

    given_names: PersonName | None = None
    surname: PersonName
    surname_at_birth: PersonName
    date_of_birth: PastBirthDate
    place_of_birth: ParentPlaceOfBirth
    sin: SocialInsuranceNumber | None = Field(
        default=None, description="Required to apply for the Canada child benefit."
    )
    health_number: OntarioHealthNumber | None = Field(
        default=None, description="Helps match the hospital's Notice of Live Birth."
    )
    status_in_canada: StatusInCanada
    marital_status: MaritalStatus
    mailing_address: MailingAddress
    email: Email | None = None
    phone: Phone | None = None


class OtherParent(Part):
    """The other parent, when there is one to register."""

    given_names: PersonName | None = None
    surname: PersonName
    surname_at_birth: PersonName | None = None
    date_of_birth: PastBirthDate
    place_of_birth: ParentPlaceOfBirth
    status_in_canada: StatusInCanada | None = None


class CertificateOrder(Part):
    """A birth certificate ordered with the registration (fees in `bundles.fees`)."""

    form: Literal["short", "long"] = Field(
        description="Short form: the child's details; long form: also the parents' details."
    )
    copies: int = Field(default=1, ge=1, le=5)


class RespReferral(Part):
    """The RESP promoter the parent chose for the education savings referral."""

    promoter: LongText


class NewbornSubmission(Part):
    """The whole newborn form (`newborn/v1`)."""

    language: Literal["en", "fr"] = Field(description="Language for correspondence from every program.")
    consents: dict[str, bool] = Field(
        default_factory=dict, description="Consent given per purpose of the bundle (purpose id -> yes/no)."
    )
    child: Child
    birth_parent: BirthParent
    other_parent: OtherParent | None = None
    certificate: CertificateOrder | None = None
    resp_referral: RespReferral | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> NewbornSubmission:
        failures: list[tuple[tuple[str | int, ...], str]] = []
        if self.consents.get(CONSENT_CCB) and self.birth_parent.sin is None:
            failures.append((("birth_parent", "sin"), "sin_required_for_ccb"))
        if self.consents.get(CONSENT_CERTIFICATE) and self.certificate is None:
            failures.append((("certificate",), "certificate_required"))
        if self.consents.get(CONSENT_RESP) and self.resp_referral is None:
            failures.append((("resp_referral",), "resp_referral_required"))
        if self.birth_parent.date_of_birth >= self.child.date_of_birth:
            failures.append((("birth_parent", "date_of_birth"), "parent_born_after_child"))
        if self.other_parent is not None and self.other_parent.date_of_birth >= self.child.date_of_birth:
            failures.append((("other_parent", "date_of_birth"), "parent_born_after_child"))
        raise_rule_errors("NewbornSubmission", failures)
        return self

    def notices(self, *, today: date) -> list[LocalizedText]:
        """What the resident should know about an accepted submission.

        Args:
            today: The date the submission is received (America/Toronto).

        Returns:
            A late-registration notice after the 30-day deadline, and a notice when the SIN
            given for the Canada child benefit is a temporary resident's.
        """
        notices: list[LocalizedText] = []
        if is_late_registration(self.child.date_of_birth, today):
            notices.append(NOTICES["late_registration"])
        if self.birth_parent.sin is not None and is_temporary_sin(self.birth_parent.sin):
            notices.append(NOTICES["temporary_sin"])
        return notices
