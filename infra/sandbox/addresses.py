"""Simulated systems of the change-of-address bundle: ServiceOntario's identity check and address books.

* `on-identity` checks a resident against a small directory of SYNTHETIC residents (below, and in
  docs/address-change.md) and locks a resident out for a day after three wrong answers.
* `cra-address`, `esdc-address`, `elections-canada`, `on-mto`, `on-health`, `ottawa-revenue` and
  `toronto-revenue` each keep the current address of the people they know, keyed by the number
  that system files people under. A change records the address it replaced; cancelling it puts
  that address back. Each checks the move's effective date by its own rule.

Keys of people are never shown or logged as such: the admin view shows a keyed hash of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from bundles.models import LocalizedText
from bundles.submissions.validation import add_months
from bundles.validators import TORONTO
from infra.sandbox.faults import utcnow
from infra.sandbox.systems import Behaviour, BusinessError, Order, Outcome, SystemSpec

_MASK_KEY = secrets.token_bytes(16)
"""Per process: the masked keys of the admin view cannot be reversed by hashing every SIN."""


def masked(system: str, raw: str) -> str:
    """The form a person's key takes outside the system: a keyed hash, stable within one process."""
    digest = hmac.new(_MASK_KEY, f"{system}\0{raw}".encode(), hashlib.sha256).hexdigest()
    return f"p-{digest[:16]}"


def _prefixed(prefix: str, length: int) -> Callable[[datetime], str]:
    alphabet = string.digits + string.ascii_uppercase

    def make(_now: datetime) -> str:
        return f"{prefix}-{''.join(secrets.choice(alphabet) for _ in range(length))}"

    return make


def _compact(value: Any) -> str:
    return re.sub(r"[\s-]", "", str(value)).upper()


def _text(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


# --- the identity check --------------------------------------------------------------------------

MAX_ATTEMPTS = 3
LOCKOUT = timedelta(hours=24)


@dataclass(frozen=True)
class SyntheticResident:
    """A made-up resident ServiceOntario's identity check knows (for demos and tests only)."""

    label: str
    given_names: str
    surname: str
    date_of_birth: str
    health_number: str
    driver_licence_number: str
    sin: str
    document_type: str
    document_last4: str
    postal_code: str


SYNTHETIC_RESIDENTS: tuple[SyntheticResident, ...] = (
    SyntheticResident(
        "demo", "Amélie", "Tremblay", "1988-04-12", "4532017888", "T65123456880412", "135792463",
        "citizenship_certificate", "4821", "K2P 1L4",
    ),
    SyntheticResident(
        "future-move", "Jordan", "Whitfield", "1975-09-30", "6123409572", "W31056789550930", "271828188",
        "permanent_resident_card", "PA73", "M4C 1B5",
    ),
    SyntheticResident(
        "lockout", "Priya", "Raman", "1992-01-23", "2398765418", "R15001234220123", "314159260",
        "permanent_resident_card", "RK19", "K1S 3W7",
    ),
    SyntheticResident(
        "rollback", "Samuel", "Okafor", "1983-06-05", "5088123467", "O21004567830605", "161803390",
        "ontario_photo_card", "0356", "K1Y 4E9",
    ),
    SyntheticResident(
        "francophone", "Léa", "Gagnon", "1999-12-01", "7012456393", "G25007890991201", "141421354",
        "citizenship_certificate", "9904", "K1N 6N5",
    ),
)  # fmt: skip
"""Every value is invented; the numbers pass their format checks and belong to nobody."""

VERIFIED = LocalizedText(
    en="ServiceOntario confirmed your identity.", fr="ServiceOntario a confirmé votre identité."
)
NO_IDENTITY_NUMBER = LocalizedText(
    en="A health number or a driver's licence number is needed to find your file.",
    fr="Un numéro de carte Santé ou de permis de conduire est nécessaire pour trouver votre dossier.",
)


def mismatch(remaining: int) -> LocalizedText:
    """The refusal of a wrong answer, saying how many attempts are left (nothing about the person)."""
    en_left = "1 attempt" if remaining == 1 else f"{remaining} attempts"
    fr_left = "1 essai" if remaining == 1 else f"{remaining} essais"
    return LocalizedText(
        en=(
            "The information you gave does not match ServiceOntario's records. Check your old postal "
            f"code, date of birth and document, then try again: {en_left} left."
        ),
        fr=(
            "Les renseignements fournis ne correspondent pas aux dossiers de ServiceOntario. Vérifiez "
            f"votre ancien code postal, votre date de naissance et votre document, puis réessayez : "
            f"il vous reste {fr_left}."
        ),
    )


def locked(until: datetime) -> LocalizedText:
    """The refusal while a resident is locked out, with the time it ends (Toronto time)."""
    local = until.astimezone(TORONTO)
    when = f"{local:%Y-%m-%d %H:%M}"
    return LocalizedText(
        en=(
            f"Too many attempts: the online identity check is locked until {when} (Toronto time). "
            "Try again after that, or visit a ServiceOntario centre with your documents."
        ),
        fr=(
            "Trop d'essais : la vérification d'identité en ligne est bloquée jusqu'au "
            f"{when} (heure de Toronto). Réessayez après ce moment, ou présentez-vous dans un centre "
            "ServiceOntario avec vos documents."
        ),
    )


@dataclass
class _Attempts:
    failures: list[datetime] = field(default_factory=list)
    locked_until: datetime | None = None


class IdentityDirectory(Behaviour):
    """ServiceOntario's identity check over `SYNTHETIC_RESIDENTS`, with its attempt lockout.

    A request names the resident by health number or driver's licence number and answers with
    birth date, old postal code and the last 4 characters of a document. Attempts are counted per
    resident (per number presented, for numbers it does not know, so as not to reveal which exist).
    """

    def __init__(self, residents: tuple[SyntheticResident, ...] = SYNTHETIC_RESIDENTS) -> None:
        self.by_health = {r.health_number: r for r in residents}
        self.by_licence = {r.driver_licence_number: r for r in residents}
        self.attempts: dict[str, _Attempts] = {}

    def submit(self, reference: str, fields: dict[str, Any], now: datetime) -> Outcome:
        """Verify, or refuse with the attempts left, or refuse while locked out."""
        health = _compact(fields.get("health_number") or "")[:10]
        licence = _compact(fields.get("licence_number") or "")
        if not health and not licence:
            raise BusinessError("identity_number_missing", NO_IDENTITY_NUMBER)
        found = {r for r in (self.by_health.get(health), self.by_licence.get(licence)) if r is not None}
        resident = found.pop() if len(found) == 1 else None
        who = f"resident:{resident.label}" if resident else masked("on-identity", f"{health}|{licence}")
        attempts = self.attempts.setdefault(who, _Attempts())
        if attempts.locked_until is not None:
            if now < attempts.locked_until:
                return Outcome(False, "locked", locked(attempts.locked_until), "identity_locked")
            attempts.locked_until = None
        attempts.failures = [t for t in attempts.failures if now - t < LOCKOUT]
        if resident is not None and _answers_match(resident, fields):
            attempts.failures.clear()
            return Outcome(True, "verified", VERIFIED)
        attempts.failures.append(now)
        if len(attempts.failures) >= MAX_ATTEMPTS:
            attempts.failures.clear()
            attempts.locked_until = now + LOCKOUT
            return Outcome(False, "locked", locked(attempts.locked_until), "identity_locked")
        return Outcome(
            False, "mismatch", mismatch(MAX_ATTEMPTS - len(attempts.failures)), "identity_mismatch"
        )

    def view(self) -> dict[str, Any]:
        """How many residents it knows and how many are locked out now (never who)."""
        now = utcnow()
        locked_now = sum(1 for a in self.attempts.values() if a.locked_until and a.locked_until > now)
        return {"identity": {"residents": len(self.by_health), "locked": locked_now}}


def _answers_match(resident: SyntheticResident, fields: Mapping[str, Any]) -> bool:
    document = fields.get("document")
    document = document if isinstance(document, Mapping) else {}
    return (
        str(fields.get("birth_date", "")) == resident.date_of_birth
        and _compact(fields.get("postal_code", "")) == _compact(resident.postal_code)
        and str(document.get("type", "")) == resident.document_type
        and _compact(document.get("last4", "")) == resident.document_last4
    )


# --- address books ---------------------------------------------------------------------------------

ADDRESS_PARTS = ("street", "unit", "municipality", "province", "postal_code")


@dataclass(frozen=True)
class AddressFormat:
    """The names a system gives the parts of an address, in `ADDRESS_PARTS` order."""

    names: tuple[str, str, str, str, str]

    def read(self, value: Any) -> dict[str, str] | None:
        """The address in the book's own shape (`ADDRESS_PARTS`), or None when it has none."""
        if not isinstance(value, Mapping):
            return None
        address = {
            part: str(value[name])
            for part, name in zip(ADDRESS_PARTS, self.names, strict=True)
            if value.get(name)
        }
        if not {"street", "postal_code"} <= set(address):
            return None
        address["postal_code"] = _compact(address["postal_code"])
        return address


FEDERAL_FORMAT = AddressFormat(("line1", "line2", "city", "province_code", "postal_code"))
ONTARIO_FORMAT = AddressFormat(("street", "unit", "municipality", "province", "postal_code"))


@dataclass(frozen=True)
class DateRule:
    """How far from today (Toronto) a system takes a move's effective date."""

    months_ahead: int
    months_behind: int | None = None

    def check(self, effective: date, today: date, system: LocalizedText) -> None:
        """Refuse a date the system does not take.

        The earliest day to send a change is computed exactly as the engine computes its wait
        (`bundles.plan.not_before`): a change held until then is always accepted.

        Raises:
            BusinessError: `future_date_not_accepted` or `effective_date_out_of_range`.
        """
        if add_months(effective, -self.months_ahead) > today:
            if self.months_ahead == 0:
                raise BusinessError(
                    "future_date_not_accepted",
                    LocalizedText(
                        en=f"{system.en} records a new address only from the day of the move.",
                        fr=f"{system.fr} n'inscrit une nouvelle adresse qu'à partir du jour du déménagement.",
                    ),
                )
            raise BusinessError("effective_date_out_of_range", self._range_message(system))
        if self.months_behind is not None and effective < add_months(today, -self.months_behind):
            raise BusinessError("effective_date_out_of_range", self._range_message(system))

    def _range_message(self, system: LocalizedText) -> LocalizedText:
        behind = f"{self.months_behind}" if self.months_behind is not None else "any number of"
        behind_fr = f"{self.months_behind}" if self.months_behind is not None else "plusieurs"
        return LocalizedText(
            en=(
                f"{system.en} takes an address change dated from {behind} months back to "
                f"{self.months_ahead} months ahead."
            ),
            fr=(
                f"{system.fr} accepte un changement d'adresse daté d'au plus {behind_fr} mois dans le "
                f"passé et d'au plus {self.months_ahead} mois dans l'avenir."
            ),
        )


INCOMPLETE = LocalizedText(
    en="The request does not say who moves or to which address.",
    fr="La demande ne précise pas qui déménage ni à quelle adresse.",
)
DATE_MISSING = LocalizedText(
    en="The request does not give the date of the move in the format YYYY-MM-DD.",
    fr="La demande ne donne pas la date du déménagement au format AAAA-MM-JJ.",
)
RESTORED = LocalizedText(
    en="The change is withdrawn: the previous address is back on file.",
    fr="Le changement est retiré : l'adresse précédente est rétablie au dossier.",
)
SUPERSEDED = LocalizedText(
    en="The change is withdrawn; a later change of address stays on file.",
    fr="Le changement est retiré; un changement d'adresse plus récent reste au dossier.",
)


@dataclass
class _Change:
    person: str
    previous: dict[str, str] | None
    new: dict[str, str]
    effective_date: str
    state: str = "applied"


class AddressBook(Behaviour):
    """One system's current address per person, and every change it applied (reversible).

    Args:
        system: The system id (for masking keys).
        name: The system's name, for refusals.
        person_key: The key the system files a person under, from its request fields (None: missing).
        address_format: How the system names address parts.
        date_field: The request field holding the move's ISO date.
        rule: Which effective dates the system takes.
        accepted: The answer to an applied change.
    """

    def __init__(
        self,
        *,
        system: str,
        name: LocalizedText,
        person_key: Callable[[Mapping[str, Any]], str | None],
        address_format: AddressFormat,
        date_field: str,
        rule: DateRule,
        accepted: LocalizedText,
    ) -> None:
        self.system = system
        self.name = name
        self.person_key = person_key
        self.format = address_format
        self.date_field = date_field
        self.rule = rule
        self.accepted = accepted
        self.current: dict[str, dict[str, str]] = {}
        self.changes: dict[str, _Change] = {}

    def submit(self, reference: str, fields: dict[str, Any], now: datetime) -> Outcome:
        """Check the date, then file the new address, remembering the one it replaces."""
        key = self.person_key(fields)
        new = self.format.read(fields.get("new_address"))
        if not key or new is None:
            raise BusinessError("request_incomplete", INCOMPLETE)
        try:
            effective = date.fromisoformat(str(fields.get(self.date_field)))
        except ValueError:
            raise BusinessError("effective_date_missing", DATE_MISSING) from None
        self.rule.check(effective, now.astimezone(TORONTO).date(), self.name)
        person = masked(self.system, key)
        # The system's own record wins over what the request says the old address was.
        previous = self.current.get(person) or self.format.read(fields.get("previous_address"))
        self.current[person] = new
        self.changes[reference] = _Change(person, previous, new, effective.isoformat())
        return Outcome(True, "address_changed", self.accepted)

    def cancel(self, order: Order, fields: dict[str, Any], now: datetime) -> tuple[str, LocalizedText]:
        """Put the previous address back, once; a change already overtaken by a later one stays."""
        change = self.changes.get(order.reference)
        if change is None or change.state != "applied":
            return "already_restored", RESTORED
        if self.current.get(change.person) != change.new:
            change.state = order.state = "superseded"
            return "superseded", SUPERSEDED
        previous = change.previous or self.format.read(fields.get("restore_address"))
        if previous is None:
            del self.current[change.person]
        else:
            self.current[change.person] = previous
        change.state = order.state = "restored"
        return "restored", RESTORED

    def view(self) -> dict[str, Any]:
        """Current addresses by masked person key, and each change's person, date and state."""
        return {
            "addresses": {person: dict(address) for person, address in self.current.items()},
            "changes": {
                reference: {
                    "person": change.person,
                    "effective_date": change.effective_date,
                    "state": change.state,
                }
                for reference, change in self.changes.items()
            },
        }


def _field(
    *path: str, transform: Callable[[str], str] = _compact
) -> Callable[[Mapping[str, Any]], str | None]:
    def key(fields: Mapping[str, Any]) -> str | None:
        value: Any = fields
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        return transform(str(value)) if value else None

    return key


def _elector(fields: Mapping[str, Any]) -> str | None:
    # The register has no number for an elector: it knows them by name and date of birth.
    elector = fields.get("elector")
    if not isinstance(elector, Mapping) or not elector.get("surname") or not elector.get("date_of_birth"):
        return None
    return "|".join(_text(elector.get(part, "")) for part in ("surname", "given_names", "date_of_birth"))


def _service_address(fields: Mapping[str, Any]) -> str | None:
    # A municipality knows an account by the property it bills, not by a person's name or birth date.
    address = ONTARIO_FORMAT.read(fields.get("previous_address"))
    if address is None:
        return None
    return "|".join(_text(address.get(part, "")) for part in ("street", "unit", "postal_code"))


@dataclass(frozen=True)
class _AddressSystem:
    id: str
    name: LocalizedText
    prefix: str
    person_key: Callable[[Mapping[str, Any]], str | None]
    address_format: AddressFormat
    rule: DateRule
    accepted: LocalizedText
    date_field: str = "effective_date"

    def spec(self) -> SystemSpec:
        def book() -> AddressBook:
            return AddressBook(
                system=self.id,
                name=self.name,
                person_key=self.person_key,
                address_format=self.address_format,
                date_field=self.date_field,
                rule=self.rule,
                accepted=self.accepted,
            )

        return SystemSpec(
            id=self.id,
            name=self.name,
            honours_keys=True,
            reversible=True,
            new_reference=_prefixed(self.prefix, 10),
            accepted_state="address_changed",
            accepted=self.accepted,
            behaviour=book,
        )


_ADDRESS_BOOKS = (
    _AddressSystem(
        "cra-address",
        LocalizedText(en="The Canada Revenue Agency", fr="L'Agence du revenu du Canada"),
        "CRA-ADDR",
        _field("sin"),
        FEDERAL_FORMAT,
        # A home address up to 12 months back; a future-dated one up to 6 months ahead.
        DateRule(months_ahead=6, months_behind=12),
        LocalizedText(en="CRA has the new address.", fr="L'ARC a la nouvelle adresse."),
    ),
    _AddressSystem(
        "esdc-address",
        LocalizedText(en="Service Canada", fr="Service Canada"),
        "ESDC-ADDR",
        _field("sin"),
        FEDERAL_FORMAT,
        DateRule(months_ahead=1),
        LocalizedText(en="Service Canada has the new address.", fr="Service Canada a la nouvelle adresse."),
    ),
    _AddressSystem(
        "elections-canada",
        LocalizedText(en="Elections Canada", fr="Élections Canada"),
        "EC-NRE",
        _elector,
        FEDERAL_FORMAT,
        DateRule(months_ahead=0),
        LocalizedText(
            en="The National Register of Electors has the new address.",
            fr="Le Registre national des électeurs a la nouvelle adresse.",
        ),
    ),
    _AddressSystem(
        "on-mto",
        LocalizedText(en="The Ministry of Transportation", fr="Le ministère des Transports"),
        "MTO",
        _field("licence_number"),
        ONTARIO_FORMAT,
        DateRule(months_ahead=0),
        LocalizedText(
            en="The driver's licence and vehicle permit records have the new address.",
            fr=(
                "Les dossiers du permis de conduire et du certificat d'immatriculation ont la "
                "nouvelle adresse."
            ),
        ),
    ),
    _AddressSystem(
        "on-health",
        LocalizedText(en="The Ministry of Health", fr="Le ministère de la Santé"),
        "OHIP",
        # The version code changes with each card; the 10 digits are the person.
        _field("health_number", transform=lambda value: _compact(value)[:10]),
        ONTARIO_FORMAT,
        DateRule(months_ahead=0),
        LocalizedText(
            en="The health card record has the new address.",
            fr="Le dossier de la carte Santé a la nouvelle adresse.",
        ),
    ),
    _AddressSystem(
        "ottawa-revenue",
        LocalizedText(en="The City of Ottawa", fr="La Ville d'Ottawa"),
        "OTT-REV",
        _service_address,
        ONTARIO_FORMAT,
        DateRule(months_ahead=1),
        LocalizedText(
            en="The City of Ottawa's tax and water accounts have the new address.",
            fr="Les comptes de taxes et d'eau de la Ville d'Ottawa ont la nouvelle adresse.",
        ),
        date_field="move_date",
    ),
    _AddressSystem(
        "toronto-revenue",
        LocalizedText(en="The City of Toronto", fr="La Ville de Toronto"),
        "TOR-REV",
        _service_address,
        ONTARIO_FORMAT,
        DateRule(months_ahead=1),
        LocalizedText(
            en="The City of Toronto's tax and water accounts have the new address.",
            fr="Les comptes de taxes et d'eau de la Ville de Toronto ont la nouvelle adresse.",
        ),
        date_field="move_date",
    ),
)

ADDRESS_SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec(
        id="on-identity",
        name=LocalizedText(
            en="ServiceOntario — identity check", fr="ServiceOntario — vérification de l'identité"
        ),
        honours_keys=True,
        reversible=False,
        new_reference=_prefixed("ID", 10),
        accepted_state="verified",
        accepted=VERIFIED,
        behaviour=IdentityDirectory,
    ),
    *(system.spec() for system in _ADDRESS_BOOKS),
)
"""The change-of-address bundle's systems, added to the sandbox by `systems.fresh_states`."""
