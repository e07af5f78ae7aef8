"""The five simulated legacy systems of Ontario's newborn bundle, and their in-memory records.

Each system keeps a ledger of every effect it had (a submit or a cancel), which is what tests
and demos inspect to prove that retries did not duplicate anything.
"""

from __future__ import annotations

import abc
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from pydantic import BaseModel

from bundles.fees import CERTIFICATE_FEES_CENTS, certificate_fee_cents
from bundles.models import LocalizedText
from infra.sandbox.faults import FaultState, FieldRule, utcnow

log = structlog.get_logger("tellonce.sandbox")

LedgerOperation = Literal["submit", "cancel"]


class LedgerEntry(BaseModel):
    """One effect a system had.

    `replays` counts the times the same key was sent again and answered from this record;
    `duplicate_of` points at the first record with the same key when the system does not
    de-duplicate; `amount_cents` is the fee charged (positive) or refunded (negative).
    """

    seq: int
    system: str
    operation: LedgerOperation
    idempotency_key: str
    fields: dict[str, Any]
    received_at: datetime
    reference: str
    outcome: str
    replays: int = 0
    duplicate_of: int | None = None
    amount_cents: int | None = None


@dataclass
class Answer:
    """A recorded answer, sent again unchanged when the same key comes back."""

    status: int
    body: dict[str, Any]


class BusinessError(Exception):
    """A system's own refusal of a request (422), before anything is recorded."""

    def __init__(self, code: str, message: LocalizedText) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """What a system's own logic made of a request.

    A refusal (`accepted=False`) is still an effect the system keeps (e.g. a failed identity
    attempt counts towards a lockout): it is recorded, and a retry with the same key gets the
    same answer without counting again.
    """

    accepted: bool
    state: str
    message: LocalizedText
    code: str | None = None


class Behaviour(abc.ABC):
    """A system's own business logic beyond recording requests (an identity directory, an address book).

    One instance per `SystemState`: it lives and is reset with the system's records.
    """

    @abc.abstractmethod
    def submit(self, reference: str, fields: dict[str, Any], now: datetime) -> Outcome:
        """Apply a request.

        Raises:
            BusinessError: The request is refused before anything happens (nothing is recorded).
        """

    def cancel(self, order: Order, fields: dict[str, Any], now: datetime) -> tuple[str, LocalizedText]:
        """Undo an accepted request: the ledger outcome and the message; sets `order.state`."""
        if order.state == "cancelled":
            return "already_cancelled", CANCELLED
        order.state = "cancelled"
        return "cancelled", CANCELLED

    def view(self) -> dict[str, Any]:
        """What `GET /sandbox/systems/{id}` adds for this system."""
        return {}


@dataclass(frozen=True)
class SystemSpec:
    """What distinguishes one simulated system from another."""

    id: str
    name: LocalizedText
    honours_keys: bool
    reversible: bool
    new_reference: Callable[[datetime], str]
    accepted_state: str
    accepted: LocalizedText
    fee_cents: Callable[[dict[str, Any]], int] | None = None
    behaviour: Callable[[], Behaviour] | None = None
    """Makes the system's own logic, fresh for each `SystemState`; None: record and accept."""


def _random_code(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _registration_number(now: datetime) -> str:
    return f"ON-{now.year}-{_random_code(string.digits, 7)}"


def _prefixed(prefix: str, length: int) -> Callable[[datetime], str]:
    def make(_now: datetime) -> str:
        return f"{prefix}-{_random_code(string.digits + string.ascii_uppercase, length)}"

    return make


MAX_COPIES = 10
"""ServiceOntario's own ceiling per order (the newborn form itself allows fewer)."""


def certificate_fee(fields: dict[str, Any]) -> int:
    """The fee of a certificate order, from `certificate.form` and `certificate.copies`.

    The simulated ServiceOntario charges from the same table the bundle quotes to residents.
    """
    certificate = fields.get("certificate")
    if not isinstance(certificate, dict):
        raise BusinessError(
            "certificate_order_incomplete",
            LocalizedText(
                en="The certificate order does not say which certificate to print.",
                fr="La commande ne précise pas quel certificat imprimer.",
            ),
        )
    form = certificate.get("form")
    copies = certificate.get("copies", 1)
    if form not in CERTIFICATE_FEES_CENTS:
        raise BusinessError(
            "certificate_form_unknown",
            LocalizedText(
                en="The certificate type must be short form or long form.",
                fr="Le type de certificat doit être le format abrégé ou le format long.",
            ),
        )
    if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= MAX_COPIES:
        raise BusinessError(
            "certificate_copies_invalid",
            LocalizedText(
                en=f"The number of copies must be between 1 and {MAX_COPIES}.",
                fr=f"Le nombre de copies doit être entre 1 et {MAX_COPIES}.",
            ),
        )
    return certificate_fee_cents(form, copies)


SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec(
        id="on-registrar-births",
        name=LocalizedText(
            en="Office of the Registrar General — birth registration",
            fr="Bureau du registraire général — enregistrement des naissances",
        ),
        honours_keys=True,
        reversible=False,
        new_reference=_registration_number,
        accepted_state="registered",
        accepted=LocalizedText(en="The birth is registered.", fr="La naissance est enregistrée."),
    ),
    SystemSpec(
        id="on-certificates",
        name=LocalizedText(
            en="ServiceOntario — certificate orders", fr="ServiceOntario — commandes de certificats"
        ),
        honours_keys=True,
        reversible=True,
        new_reference=_prefixed("SO-CERT", 8),
        accepted_state="ordered",
        accepted=LocalizedText(
            en="The certificate is ordered; it will be mailed once printed.",
            fr="Le certificat est commandé; il sera posté une fois imprimé.",
        ),
        fee_cents=certificate_fee,
    ),
    SystemSpec(
        id="esdc-sin",
        name=LocalizedText(
            en="Employment and Social Development Canada — Social Insurance Number",
            fr="Emploi et Développement social Canada — numéro d'assurance sociale",
        ),
        honours_keys=True,
        reversible=False,
        new_reference=_prefixed("SIN-REQ", 10),
        accepted_state="received",
        accepted=LocalizedText(
            en="The application is received; the SIN will be mailed within 10 business days.",
            fr="La demande est reçue; le NAS sera posté dans un délai de 10 jours ouvrables.",
        ),
    ),
    SystemSpec(
        id="cra-aba",
        name=LocalizedText(
            en="Canada Revenue Agency — Automated Benefits Application",
            fr="Agence du revenu du Canada — Demande automatisée de prestations",
        ),
        honours_keys=True,
        reversible=False,
        new_reference=_prefixed("CRA-ABA", 10),
        accepted_state="received",
        accepted=LocalizedText(
            en="The Canada child benefit application is received.",
            fr="La demande d'allocation canadienne pour enfants est reçue.",
        ),
    ),
    SystemSpec(
        id="resp-referral",
        name=LocalizedText(
            en="Education savings (RESP) promoter — referral intake",
            fr="Promoteur de REEE — réception des recommandations",
        ),
        # Many private intakes simply insert a row per call; duplicates must then be visible.
        honours_keys=False,
        reversible=False,
        new_reference=_prefixed("RESP", 8),
        accepted_state="received",
        accepted=LocalizedText(
            en="The referral is sent; the promoter will contact you.",
            fr="La recommandation est transmise; le promoteur communiquera avec vous.",
        ),
    ),
)


REJECTED = LocalizedText(
    en="The request was refused by the program.", fr="La demande a été refusée par le programme."
)
NEEDS_REVIEW = LocalizedText(
    en="An agent must review this request before it can go further.",
    fr="Un agent doit examiner cette demande avant qu'elle puisse aller plus loin.",
)
CANCELLED = LocalizedText(
    en="The order is cancelled; any fee paid is refunded.",
    fr="La commande est annulée; les frais payés sont remboursés.",
)
NOTHING_TO_CANCEL = LocalizedText(
    en="There is no such order: nothing to cancel.", fr="Cette commande n'existe pas : rien à annuler."
)


def rule_answer(rule: FieldRule, status: int, code: str, message: LocalizedText) -> Answer:
    """The 422/409 answer of a matching `reject_when`/`review_when` rule."""
    return Answer(status, {"code": rule.code or code, "message": (rule.message or message).model_dump()})


@dataclass
class Order:
    """An accepted request, as the system knows it."""

    reference: str
    state: str
    fee_cents: int | None = None
    refunded: bool = False
    message: LocalizedText | None = None
    """The system's own words on the request's state, when its logic has some (e.g. restored)."""


@dataclass
class Counts:
    """What a system received, faulted or not."""

    requests: int = 0
    effects: int = 0
    replays: int = 0
    duplicates: int = 0
    faulted: int = 0
    rejected: int = 0
    needs_review: int = 0


@dataclass
class SystemState:
    """One system's in-memory records: ledger, answers by key, orders, faults and fee totals."""

    spec: SystemSpec
    ledger: list[LedgerEntry] = field(default_factory=list)
    answers: dict[tuple[LedgerOperation, str], tuple[LedgerEntry, Answer]] = field(default_factory=dict)
    first_seq_by_key: dict[str, int] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    faults: FaultState = field(default_factory=FaultState)
    counts: Counts = field(default_factory=Counts)
    charged_cents: int = 0
    refunded_cents: int = 0
    behaviour: Behaviour | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.spec.behaviour is not None:
            self.behaviour = self.spec.behaviour()

    def new_reference(self, now: datetime) -> str:
        """A reference this system has not handed out yet."""
        while True:
            reference = self.spec.new_reference(now)
            if reference not in self.orders:
                return reference

    def replay(self, operation: LedgerOperation, key: str) -> Answer | None:
        """The recorded answer to a key already seen, if the system de-duplicates on keys."""
        if not self.spec.honours_keys:
            return None
        found = self.answers.get((operation, key))
        if found is None:
            return None
        entry, answer = found
        entry.replays += 1
        self.counts.replays += 1
        return answer

    def record(
        self,
        *,
        operation: LedgerOperation,
        key: str,
        fields: dict[str, Any],
        now: datetime,
        reference: str,
        outcome: str,
        answer: Answer,
        amount_cents: int | None = None,
    ) -> LedgerEntry:
        """Append an effect to the ledger and remember its answer for replays."""
        duplicate_of = self.first_seq_by_key.get(key) if operation == "submit" else None
        entry = LedgerEntry(
            seq=len(self.ledger) + 1,
            system=self.spec.id,
            operation=operation,
            idempotency_key=key,
            fields=fields,
            received_at=now,
            reference=reference,
            outcome=outcome,
            duplicate_of=duplicate_of,
            amount_cents=amount_cents,
        )
        self.ledger.append(entry)
        self.answers.setdefault((operation, key), (entry, answer))
        if operation == "submit":
            self.first_seq_by_key.setdefault(key, entry.seq)
        self.counts.effects += 1
        if duplicate_of is not None:
            self.counts.duplicates += 1
        return entry

    def submit(self, key: str, fields: dict[str, Any]) -> Answer:
        """Apply business rules, then create the request and record the effect."""
        faults = self.faults
        if faults.applies_to(key):
            if faults.reject_when is not None and faults.reject_when.matches(fields):
                self.counts.rejected += 1
                return rule_answer(faults.reject_when, 422, "rejected", REJECTED)
            if faults.review_when is not None and faults.review_when.matches(fields):
                self.counts.needs_review += 1
                return rule_answer(faults.review_when, 409, "needs_review", NEEDS_REVIEW)
        spec = self.spec
        try:
            fee = spec.fee_cents(fields) if spec.fee_cents is not None else None
        except BusinessError as exc:
            self.counts.rejected += 1
            return Answer(422, {"code": exc.code, "message": exc.message.model_dump()})
        now = utcnow()
        reference = self.new_reference(now)
        outcome = Outcome(True, spec.accepted_state, spec.accepted)
        if self.behaviour is not None:
            try:
                outcome = self.behaviour.submit(reference, fields, now)
            except BusinessError as exc:
                self.counts.rejected += 1
                return Answer(422, {"code": exc.code, "message": exc.message.model_dump()})
            if not outcome.accepted:
                return self._refused(key, fields, now, reference, outcome)
        self.orders[reference] = Order(
            reference, outcome.state, fee_cents=fee, message=outcome.message if self.behaviour else None
        )
        body: dict[str, Any] = {
            "reference": reference,
            "state": outcome.state,
            "message": outcome.message.model_dump(),
        }
        if fee is not None:
            body["fee_cents"] = fee
            self.charged_cents += fee
        answer = Answer(201, body)
        entry = self.record(
            operation="submit",
            key=key,
            fields=fields,
            now=now,
            reference=reference,
            outcome="accepted",
            answer=answer,
            amount_cents=fee,
        )
        log.info("sandbox.submitted", system=spec.id, seq=entry.seq, duplicate_of=entry.duplicate_of)
        return answer

    def _refused(
        self, key: str, fields: dict[str, Any], now: datetime, reference: str, outcome: Outcome
    ) -> Answer:
        """Record a refusal that counts (the system's logic said so) and answer 422."""
        code = outcome.code or "rejected"
        self.counts.rejected += 1
        answer = Answer(422, {"code": code, "message": outcome.message.model_dump()})
        entry = self.record(
            operation="submit",
            key=key,
            fields=fields,
            now=now,
            reference=reference,
            outcome=code,
            answer=answer,
        )
        log.info("sandbox.refused", system=self.spec.id, seq=entry.seq, code=code)
        return answer

    def cancel(self, key: str, reference: str, fields: dict[str, Any]) -> Answer:
        """Cancel an order once, refunding its fee once; an unknown order is a no-op."""
        order = self.orders.get(reference)
        refund = 0
        if order is None:
            outcome, message = "not_found", NOTHING_TO_CANCEL
        elif self.behaviour is not None:
            outcome, message = self.behaviour.cancel(order, fields, utcnow())
            order.message = message
        elif order.state == "cancelled":
            outcome, message = "already_cancelled", CANCELLED
        else:
            outcome, message = "cancelled", CANCELLED
            order.state = "cancelled"
            if order.fee_cents and not order.refunded:
                order.refunded = True
                refund = order.fee_cents
                self.refunded_cents += refund
        answer = Answer(
            200,
            {
                "reference": reference,
                "state": "not_found" if order is None else order.state,
                "message": message.model_dump(),
                "refunded_cents": refund,
            },
        )
        entry = self.record(
            operation="cancel",
            key=key,
            fields=fields,
            now=utcnow(),
            reference=reference,
            outcome=outcome,
            answer=answer,
            amount_cents=-refund if refund else None,
        )
        log.info("sandbox.cancelled", system=self.spec.id, seq=entry.seq, outcome=outcome)
        return answer

    def view(self, now: datetime) -> dict[str, Any]:
        """The system as `GET /sandbox/systems` shows it."""
        shown: dict[str, Any] = {
            "id": self.spec.id,
            "name": self.spec.name.model_dump(),
            "honours_idempotency_keys": self.spec.honours_keys,
            "reversible": self.spec.reversible,
            "available": not self.faults.is_down(now),
            "faults": self.faults.view(now),
            "counts": vars(self.counts).copy(),
        }
        if self.behaviour is not None:
            shown.update(self.behaviour.view())
        if self.spec.fee_cents is not None:
            shown["fees"] = {
                "charged_cents": self.charged_cents,
                "refunded_cents": self.refunded_cents,
                "net_cents": self.charged_cents - self.refunded_cents,
            }
        return shown


def fresh_states() -> dict[str, SystemState]:
    """Every system, empty, as a new sandbox process starts: the built-in ones and those configured."""
    from infra.sandbox.addresses import ADDRESS_SYSTEMS  # noqa: PLC0415 - it imports this module
    from infra.sandbox.configured import configured_specs  # noqa: PLC0415 - it imports this module

    return {spec.id: SystemState(spec) for spec in (*SYSTEMS, *ADDRESS_SYSTEMS, *configured_specs())}
