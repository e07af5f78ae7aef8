"""Every adapter tellonce ships, by legacy system id (the `adapter` a bundle step names)."""

from __future__ import annotations

import httpx

from adapters.address_change import ADDRESS_ADAPTERS
from adapters.configured import configured_adapter_types, load_systems
from adapters.cra_aba import CraAbaAdapter
from adapters.esdc_sin import EsdcSinAdapter
from adapters.on_certificates import OntarioCertificateAdapter
from adapters.on_identity import OntarioIdentityAdapter
from adapters.on_registrar_births import OntarioBirthRegistrationAdapter
from adapters.resp_referral import RespReferralAdapter
from adapters.sdk import Adapter
from infra.settings import Settings

_SANDBOX_ADAPTERS: tuple[type[Adapter], ...] = (
    OntarioBirthRegistrationAdapter,
    OntarioCertificateAdapter,
    EsdcSinAdapter,
    CraAbaAdapter,
    RespReferralAdapter,
    OntarioIdentityAdapter,
    *ADDRESS_ADAPTERS,
)

ADAPTER_TYPES: dict[str, type[Adapter]] = {adapter.system: adapter for adapter in _SANDBOX_ADAPTERS}
"""Adapter class by system id: those written in code, then those configured in `bundles/systems/`."""

# Systems added by configuration get a class of their own each (`ConfiguredRestAdapter`), so they
# are built like any other; a broken or clashing system file stops the import with its problems.
CONFIGURED_SYSTEMS = load_systems()
ADAPTER_TYPES.update(configured_adapter_types(CONFIGURED_SYSTEMS, taken=ADAPTER_TYPES))

KNOWN_ADAPTERS: frozenset[str] = frozenset(ADAPTER_TYPES)
"""The system ids a bundle definition may name as a step's `adapter`."""


def build_adapters(settings: Settings, client: httpx.AsyncClient | None = None) -> dict[str, Adapter]:
    """One adapter per known system, each configured by its settings (default: the legacy sandbox).

    Args:
        settings: The deployment's settings; `legacy_systems` gives each system's endpoint and calendar.
        client: An httpx client for the HTTP adapters to share (the caller closes it); without one,
            each adapter opens and closes its own.

    Returns:
        Adapters by system id; call `aclose()` on each when done.
    """
    return {system: cls.from_settings(settings, client) for system, cls in ADAPTER_TYPES.items()}
