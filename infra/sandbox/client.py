"""`SandboxAdmin`: an async client of the sandbox's admin API, for tests, demos and the contract kit."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx


class SandboxAdmin:
    """Read ledgers and set faults on a running legacy sandbox.

    Args:
        base_url: The sandbox's base URL, e.g. `http://127.0.0.1:8001`.
        client: An httpx client to reuse; when given, the caller closes it.
    """

    def __init__(self, base_url: str, client: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._client.request(method, f"{self.base_url}{path}", **kwargs)
        response.raise_for_status()
        return response.json()

    async def systems(self) -> list[dict[str, Any]]:
        """Every system: id, name, availability, fault settings, counts, fee totals."""
        body = await self._call("GET", "/sandbox/systems")
        systems: list[dict[str, Any]] = body["systems"]
        return systems

    async def system(self, system: str) -> dict[str, Any]:
        """One system, as in `systems()`."""
        found: dict[str, Any] = await self._call("GET", f"/sandbox/systems/{system}")
        return found

    async def ledger(self, system: str, key_prefix: str | None = None) -> list[dict[str, Any]]:
        """The effects a system had, oldest first; only keys starting with `key_prefix` if given."""
        params = {"key_prefix": key_prefix} if key_prefix else None
        body = await self._call("GET", f"/sandbox/systems/{system}/ledger", params=params)
        entries: list[dict[str, Any]] = body["entries"]
        return entries

    async def request(self, system: str, reference: str) -> dict[str, Any]:
        """What a system says about one request it accepted: `reference`, `state`, `message`, and
        for certificate orders `fee_cents`, `refunded` and `refunded_cents`.

        Faults set without a `key_prefix` apply to this read too (it is the system's own endpoint).

        Raises:
            httpx.HTTPStatusError: 404 when the system does not know the reference.
        """
        found: dict[str, Any] = await self._call(
            "GET", f"/systems/{system}/requests/{quote(reference, safe='')}"
        )
        return found

    async def set_faults(self, system: str, **faults: Any) -> dict[str, Any]:
        """Merge-update a system's faults (`down`, `down_for_s`, `error_rate`, `fail_next`,
        `latency_ms`, `reject_when`, `review_when`, `rate_limit_per_s`, `maintenance_for_s`,
        `malformed_replies`, `drop_replies`, `key_prefix`).

        Returns:
            The system as `system()` shows it after the update.

        Raises:
            httpx.HTTPStatusError: 422 when a fault setting is invalid.
        """
        shown: dict[str, Any] = await self._call("PUT", f"/sandbox/systems/{system}/faults", json=faults)
        return shown

    async def clear_faults(self, system: str) -> dict[str, Any]:
        """Clear every fault of a system."""
        shown: dict[str, Any] = await self._call("DELETE", f"/sandbox/systems/{system}/faults")
        return shown

    async def reset(self) -> None:
        """Forget every ledger, order, fee and fault. Tests sharing a sandbox should prefer key prefixes."""
        await self._call("POST", "/sandbox/reset")
