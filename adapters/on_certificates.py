"""ServiceOntario certificate orders: charges a fee per copy; an order can be cancelled and refunded."""

from __future__ import annotations

from adapters.http import JsonRestAdapter
from adapters.mapping import FieldMap, Rename
from adapters.on_registrar_births import registration_number
from adapters.sdk import CallContext, CompensationRequest, CompensationResult


class OntarioCertificateAdapter(JsonRestAdapter):
    """Birth certificate orders (short or long form); the only reversible system of the bundle."""

    system = "on-certificates"
    field_map = FieldMap(
        Rename("certificate.form", "certificate.form"),
        Rename("certificate.copies", "certificate.copies"),
        Rename("references", "registration_number", registration_number),
        Rename("child.given_names", "subject.given_names"),
        Rename("child.surname", "subject.surname"),
        Rename("child.date_of_birth", "subject.date_of_birth"),
        Rename("child.place_of_birth", "subject.place_of_birth"),
        Rename("birth_parent.given_names", "applicant.given_names"),
        Rename("birth_parent.surname", "applicant.surname"),
        Rename("birth_parent.email", "applicant.email"),
        Rename("birth_parent.phone", "applicant.phone"),
        Rename("birth_parent.mailing_address", "delivery_address"),
        Rename("language", "language"),
    )

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        """Cancel the order and have its fee refunded; safe to repeat with the same key.

        No personal data is sent: the order's reference is enough. Cancelling an order the
        system does not know is answered as a no-op, not an error.

        Raises:
            TransientError: Outage, timeout, 5xx, 429.
        """
        body = await self.call(ctx, "POST", self.requests_url(request.reference, "cancel"), None)
        return self.parse(CompensationResult, body, ctx)
