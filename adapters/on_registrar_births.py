"""Office of the Registrar General (Ontario): registers a birth from the parents' Statement of Live Birth.

The registrar's vital statistics system is a SOAP 1.1 web service (`adapters/wsdl/
vital_statistics_registration.wsdl`): `RegisterBirth` takes the statement and answers with the
registration number, `GetRegistration` tells a registration's state. The registration number
it returns is the bundle's pivot: programs after it receive it. A registered birth cannot be
undone, so the adapter has no compensation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adapters.mapping import FieldMap, Rename
from adapters.sdk import CallContext, RejectedError, StatusResult, StepRequest, SubmitResult
from adapters.soap import SoapAdapter
from adapters.wsdl import VITAL_STATISTICS_NS, VITAL_STATISTICS_WSDL

REGISTRATION_NUMBER = re.compile(r"^ON-\d{4}-\d{7}$")
"""The registrar's number: `ON-<year>-<7 digits>`."""

UNKNOWN_REGISTRATION = "unknown_registration"
"""The fault code of `GetRegistration` for a number the registrar does not know."""


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


class OntarioBirthRegistrationAdapter(SoapAdapter):
    """Ontario birth registration over SOAP; the idempotency key is the `RequestId` header."""

    system = "on-registrar-births"
    wsdl = VITAL_STATISTICS_WSDL
    binding = f"{{{VITAL_STATISTICS_NS}}}VitalStatisticsRegistrationBinding"
    service_path = "/soap/on-registrar-births"
    # Targets are the WSDL's element paths under `RegisterBirth`; zeep puts them in schema order.
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
        Rename("birth_notice.notice_id", "notice_of_live_birth.number"),
        Rename("language", "correspondence_language"),
    )

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        """Register the birth; the registrar answers a repeated `RequestId` from the first registration.

        Raises:
            TransientError: Outage, maintenance (`ClosedError`), timeout, `Server` fault, 429/5xx.
            RejectedError: The registrar refused the statement (`Client.Rejected`, its code and
                message), or the request did not fit its WSDL (our bug).
            NeedsAttentionError: A registrar's agent must review it (`Client.NeedsReview`), or
                the answer could not be read.
        """
        answer = await self.call(ctx, "RegisterBirth", self.to_request(ctx, request.fields))
        return self.parse(
            SubmitResult,
            {"reference": answer.get("registration_number"), "message": answer.get("message")},
            ctx,
        )

    async def status(self, ctx: CallContext, reference: str) -> StatusResult | None:
        """The registrar's view of a registration; None when it does not know the number."""
        try:
            answer = await self.call(ctx, "GetRegistration", {"registration_number": reference})
        except RejectedError as exc:
            if exc.code == UNKNOWN_REGISTRATION:
                return None
            raise
        return self.parse(
            StatusResult,
            {
                "reference": answer.get("registration_number"),
                "state": answer.get("state"),
                "message": answer.get("message"),
            },
            ctx,
        )
