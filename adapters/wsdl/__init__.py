"""The WSDL documents of the SOAP legacy systems, as integrators keep them: local copies, never fetched.

Adapters load them from here (zeep parses a WSDL synchronously, so never at call time), and the
legacy sandbox serves and validates against the same files, so the two cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

WSDL_DIR = Path(__file__).resolve().parent

VITAL_STATISTICS_WSDL = WSDL_DIR / "vital_statistics_registration.wsdl"
"""Ontario's vital statistics birth registration service (`on-registrar-births`)."""

VITAL_STATISTICS_NS = "urn:tellonce:sandbox:on:vital-statistics:v1"
"""Its target namespace: every element of its messages, header and fault detail lives in it."""
