"""Fees a bundle collects on behalf of a program, in cents, kept in one place.

ServiceOntario charges per birth certificate copy: the short form (the child's details)
costs $25 and the long form (with the parents' details) $35.
"""

from __future__ import annotations

from typing import Literal

CertificateForm = Literal["short", "long"]

CERTIFICATE_FEES_CENTS: dict[CertificateForm, int] = {"short": 2500, "long": 3500}


def certificate_fee_cents(form: CertificateForm, copies: int) -> int:
    """Total fee for a birth certificate order.

    Args:
        form: ``"short"`` or ``"long"``.
        copies: Number of copies (at least 1).

    Returns:
        The amount in cents, e.g. 7000 for two long-form copies.

    Raises:
        ValueError: When `copies` is less than 1.
    """
    if copies < 1:
        raise ValueError("a certificate order has at least one copy")
    return CERTIFICATE_FEES_CENTS[form] * copies
