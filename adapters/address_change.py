"""Adapters of the systems a change of address reaches: CRA, Service Canada, Elections Canada,
ServiceOntario (driver's licence and vehicle permit, health card) and municipal revenue services.

Every one of them files the new address against the number it knows the person by and keeps the
address it replaced. Each change can be undone: `compensate` asks the system to cancel it and
sends the old address to put back (the system's own record of it wins when it has one).
Systems name address parts their own way: federal ones use address lines and a compact postal
code, Ontario's use street, unit and municipality.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.http import JsonRestAdapter
from adapters.mapping import (
    FieldMap,
    Rename,
    compact_date,
    compact_postal_code,
    digits,
    language_letter,
    upper,
)
from adapters.sdk import CallContext, CompensationRequest, CompensationResult


def federal_address(address: Any) -> dict[str, str] | None:
    """An address as federal systems take it: lines, city, province code and compact postal code."""
    if not isinstance(address, Mapping):
        return None
    names = {"street": "line1", "unit": "line2", "municipality": "city", "province": "province_code"}
    mapped = {target: str(address[source]) for source, target in names.items() if address.get(source)}
    if address.get("postal_code"):
        mapped["postal_code"] = compact_postal_code(address["postal_code"])
    return mapped


def federal_address_upper(address: Any) -> dict[str, str] | None:
    """`federal_address` in upper case, as CRA's records keep addresses."""
    mapped = federal_address(address)
    return {key: value.upper() for key, value in mapped.items()} if mapped is not None else None


def ontario_address(address: Any) -> dict[str, str] | None:
    """An address as Ontario's systems take it: street, unit, municipality, province, compact postal code."""
    if not isinstance(address, Mapping):
        return None
    parts = ("street", "unit", "municipality", "province")
    mapped = {part: str(address[part]) for part in parts if address.get(part)}
    if address.get("postal_code"):
        mapped["postal_code"] = compact_postal_code(address["postal_code"])
    return mapped


def health_number_digits(value: Any) -> str:
    """The 10 digits of an Ontario health number: the version code changes with each card."""
    return digits(value)[:10]


class AddressChangeAdapter(JsonRestAdapter):
    """Base of the address systems: submit files the change; compensate puts the old address back.

    Subclasses map `old_address` to `previous_address` in their `field_map`: that is what a
    compensation sends back.
    """

    async def compensate(self, ctx: CallContext, request: CompensationRequest) -> CompensationResult:
        """Cancel the change and restore the previous address; safe to repeat with the same key.

        Only the address to restore is sent with the cancellation (the reference names the
        change). Cancelling a change the system does not know is answered as a no-op.

        Raises:
            TransientError: Outage, timeout, 5xx, 429.
        """
        mapped = self.to_request(ctx, request.fields) if request.fields else {}
        previous = mapped.get("previous_address")
        body = {"fields": {"restore_address": previous}} if previous else None
        answer = await self.call(ctx, "POST", self.requests_url(request.reference, "cancel"), body)
        return self.parse(CompensationResult, answer, ctx)


class CraAddressAdapter(AddressChangeAdapter):
    """CRA: the address on the resident's tax and benefit file, found by SIN; records in upper case."""

    system = "cra-address"
    field_map = FieldMap(
        Rename("resident.sin", "sin", digits),
        Rename("resident.given_names", "given_name", upper),
        Rename("resident.surname", "surname", upper),
        Rename("resident.date_of_birth", "birth_date", compact_date),
        Rename("new_address", "new_address", federal_address_upper),
        Rename("old_address", "previous_address", federal_address_upper),
        Rename("effective_date", "effective_date"),
        Rename("language", "correspondence_language", language_letter),
    )


class EsdcAddressAdapter(AddressChangeAdapter):
    """Service Canada: the address for Employment Insurance, CPP and OAS, found by SIN."""

    system = "esdc-address"
    field_map = FieldMap(
        Rename("resident.sin", "sin", digits),
        Rename("resident.given_names", "first_name"),
        Rename("resident.surname", "last_name"),
        Rename("resident.date_of_birth", "birth_date"),
        Rename("new_address", "new_address", federal_address),
        Rename("old_address", "previous_address", federal_address),
        Rename("effective_date", "effective_date"),
        Rename("language", "language_of_correspondence", language_letter),
    )


class ElectionsCanadaAdapter(AddressChangeAdapter):
    """Elections Canada's National Register of Electors: no number, the elector's name and birth date."""

    system = "elections-canada"
    field_map = FieldMap(
        Rename("resident.given_names", "elector.given_names"),
        Rename("resident.surname", "elector.surname"),
        Rename("resident.date_of_birth", "elector.date_of_birth"),
        Rename("new_address", "new_address", federal_address),
        Rename("old_address", "previous_address", federal_address),
        Rename("effective_date", "effective_date"),
        Rename("language", "language"),
    )


class OntarioMtoAddressAdapter(AddressChangeAdapter):
    """Ministry of Transportation: one change for the driver's licence and the vehicle permits."""

    system = "on-mto"
    field_map = FieldMap(
        Rename("resident.driver_licence_number", "licence_number"),
        Rename("resident.given_names", "given_names"),
        Rename("resident.surname", "surname"),
        Rename("resident.date_of_birth", "date_of_birth"),
        Rename("new_address", "new_address", ontario_address),
        Rename("old_address", "previous_address", ontario_address),
        Rename("effective_date", "effective_date"),
        Rename("language", "language"),
    )


class OntarioHealthAddressAdapter(AddressChangeAdapter):
    """Ministry of Health: the address of the health card (OHIP), found by the health number."""

    system = "on-health"
    field_map = FieldMap(
        Rename("resident.health_number", "health_number", health_number_digits),
        Rename("resident.given_names", "given_names"),
        Rename("resident.surname", "surname"),
        Rename("resident.date_of_birth", "date_of_birth"),
        Rename("new_address", "new_address", ontario_address),
        Rename("old_address", "previous_address", ontario_address),
        Rename("effective_date", "effective_date"),
        Rename("language", "language"),
    )


MUNICIPAL_FIELDS = FieldMap(
    Rename("resident.given_names", "account_holder.given_names"),
    Rename("resident.surname", "account_holder.surname"),
    Rename("old_address", "previous_address", ontario_address),
    Rename("new_address", "new_address", ontario_address),
    Rename("effective_date", "move_date"),
    Rename("language", "language"),
    Rename("contact.email", "contact.email"),
    Rename("contact.phone", "contact.phone"),
)
"""Municipal revenue services know an account by the property it bills; no birth date, no number."""


class OttawaRevenueAdapter(AddressChangeAdapter):
    """City of Ottawa — Revenue Services (property tax and water billing)."""

    system = "ottawa-revenue"
    field_map = MUNICIPAL_FIELDS


class TorontoRevenueAdapter(AddressChangeAdapter):
    """City of Toronto — Revenue Services (property tax and water billing)."""

    system = "toronto-revenue"
    field_map = MUNICIPAL_FIELDS


ADDRESS_ADAPTERS: tuple[type[AddressChangeAdapter], ...] = (
    CraAddressAdapter,
    EsdcAddressAdapter,
    ElectionsCanadaAdapter,
    OntarioMtoAddressAdapter,
    OntarioHealthAddressAdapter,
    OttawaRevenueAdapter,
    TorontoRevenueAdapter,
)
