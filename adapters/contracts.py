"""How the contract kit checks each adapter tellonce ships: its sample, probe field and reply channel.

`CONTRACTS` holds the specs written by hand, keyed by system id; `contract_for` also derives one
for systems added by configuration (`bundles/systems/*.yaml`) from their field map. An adapter
written outside this repository declares its own `CONTRACT = ContractSpec(...)` next to it
(`tellonce adapters new` writes one).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from adapters.contract_kit import ContractSpec, ReplyWaiter
from adapters.mapping import FieldMap, get_path, leaf_paths
from adapters.samples import NEWBORN_FIELDS, address_change_fields
from adapters.sdk import Adapter

if TYPE_CHECKING:
    from infra.settings import Settings

ADDRESS_CHANGE_FIELDS: Mapping[str, Any] = address_change_fields()
"""The change-of-address sample, its move dated the day this module was imported."""


@contextlib.asynccontextmanager
async def message_queue_replies(adapter: Adapter, settings: Settings) -> AsyncIterator[ReplyWaiter]:
    """A `ContractSpec.reply_waiter` for message-queue systems: their replies on `legacy.<system>.replies`."""
    from adapters.message_queue import reply_waiter  # noqa: PLC0415 - only queue adapters need Kafka

    yield reply_waiter(settings, adapter.system)


def _newborn(probe_field: str, **options: Any) -> ContractSpec:
    return ContractSpec(sample=NEWBORN_FIELDS, probe_field=probe_field, **options)


def _address(probe_field: str) -> ContractSpec:
    return ContractSpec(sample=ADDRESS_CHANGE_FIELDS, probe_field=probe_field)


CONTRACTS: dict[str, ContractSpec] = {
    # The newborn bundle (Ontario's 5-in-1).
    "on-registrar-births": _newborn("child.surname"),
    "on-certificates": _newborn("subject.surname"),
    "esdc-sin": _newborn("child.last_name"),
    "cra-aba": _newborn("child_surname", reply_waiter=message_queue_replies),
    # The promoter's intake does not de-duplicate: the kit expects duplicates to be visible.
    "resp-referral": _newborn("contact.last_name", dedupes=False),
    # The change-of-address bundle.
    "on-identity": _address("birth_date"),
    "cra-address": _address("surname"),
    "esdc-address": _address("last_name"),
    "elections-canada": _address("elector.surname"),
    "on-mto": _address("surname"),
    "on-health": _address("surname"),
    "ottawa-revenue": _address("account_holder.surname"),
    "toronto-revenue": _address("account_holder.surname"),
}
"""The contract of every adapter written in code, by system id."""

SAMPLES: tuple[Mapping[str, Any], ...] = (NEWBORN_FIELDS, ADDRESS_CHANGE_FIELDS)
"""The samples a derived contract chooses from."""

MIN_PROBE_LENGTH = 3


def derived_contract(field_map: FieldMap) -> ContractSpec | None:
    """A contract for an adapter known only by its field map (a configured system).

    The sample is the one the map takes most fields from; the probe is the first field of the
    system's request that holds text of a few characters (a name rather than a one-letter code).
    None when no sample fills any field of the map.
    """
    best: tuple[int, Mapping[str, Any], dict[str, Any]] | None = None
    for sample in SAMPLES:
        mapped, _unused = field_map.apply(sample)
        count = len(leaf_paths(mapped))
        if count and (best is None or count > best[0]):
            best = (count, sample, mapped)
    if best is None:
        return None
    _count, sample, mapped = best
    paths = leaf_paths(mapped)
    texts = [path for path in paths if isinstance(value := get_path(mapped, path), str) and value]
    probe = next(
        (path for path in texts if len(str(get_path(mapped, path))) >= MIN_PROBE_LENGTH),
        texts[0] if texts else paths[0],
    )
    return ContractSpec(sample=sample, probe_field=probe)


def contract_for(adapter_type: type[Adapter], system: str | None = None) -> ContractSpec | None:
    """The contract of an adapter: its module's `CONTRACT`, the shipped one, or one derived from its map.

    Args:
        adapter_type: The adapter class.
        system: Look the shipped contract up under this system id instead of the adapter's own.
    """
    declared = getattr(sys.modules.get(adapter_type.__module__), "CONTRACT", None)
    if isinstance(declared, ContractSpec):
        return declared
    shipped = CONTRACTS.get(system or adapter_type.system)
    if shipped is not None:
        return shipped
    field_map = getattr(adapter_type, "field_map", None)
    if isinstance(field_map, FieldMap) and field_map.renames:
        return derived_contract(field_map)
    return None
