"""SOAP 1.1 endpoints of the sandbox's SOAP systems (placeholder until the SOAP frontend lands)."""

from __future__ import annotations

from fastapi import APIRouter

from infra.sandbox.systems import SystemState


def soap_routes(states: dict[str, SystemState]) -> APIRouter:
    """The SOAP endpoints and WSDLs of the systems that speak SOAP."""
    del states
    return APIRouter(tags=["soap"])
