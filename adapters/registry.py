"""Every adapter tellonce ships, by legacy system id (the `adapter` a bundle step names)."""

from __future__ import annotations

import httpx

from adapters.cra_aba import CraAbaAdapter
from adapters.esdc_sin import EsdcSinAdapter
from adapters.http import JsonRestAdapter
from adapters.on_certificates import OntarioCertificateAdapter
from adapters.on_registrar_births import OntarioBirthRegistrationAdapter
from adapters.resp_referral import RespReferralAdapter
from adapters.sdk import Adapter

_SANDBOX_ADAPTERS: tuple[type[JsonRestAdapter], ...] = (
    OntarioBirthRegistrationAdapter,
    OntarioCertificateAdapter,
    EsdcSinAdapter,
    CraAbaAdapter,
    RespReferralAdapter,
)

ADAPTER_TYPES: dict[str, type[Adapter]] = {adapter.system: adapter for adapter in _SANDBOX_ADAPTERS}
"""Adapter class by system id."""

KNOWN_ADAPTERS: frozenset[str] = frozenset(ADAPTER_TYPES)
"""The system ids a bundle definition may name as a step's `adapter`."""


def build_adapters(sandbox_base_url: str, client: httpx.AsyncClient | None = None) -> dict[str, Adapter]:
    """One adapter per known system, all pointed at the legacy sandbox.

    Args:
        sandbox_base_url: The sandbox's base URL (`Settings.sandbox_base_url`).
        client: An httpx client for all adapters to share (the caller closes it); without one,
            each adapter opens and closes its own.

    Returns:
        Adapters by system id; call `aclose()` on each when done.
    """
    return {adapter.system: adapter(sandbox_base_url, client) for adapter in _SANDBOX_ADAPTERS}
