"""Bilingual texts the bundle workflow shows residents (program-specific texts live in definitions)."""

from __future__ import annotations

from datetime import datetime

from adapters.sdk import TEMPORARILY_UNAVAILABLE
from bundles.models import LocalizedText

STOPPED_WITHDRAWN = LocalizedText(
    en="Not sent: you withdrew your request before this program was contacted.",
    fr="Non envoyé : vous avez retiré votre demande avant que ce programme soit contacté.",
)
STOPPED_BUNDLE_FAILED = LocalizedText(
    en="Not sent: your request could not be completed, so this program was not contacted.",
    fr="Non envoyé : votre demande n'a pas pu être traitée, ce programme n'a donc pas été contacté.",
)
DEPENDENCY_NOT_DONE = LocalizedText(
    en="Not sent: a step this program depends on did not complete. Please apply to it directly.",
    fr=(
        "Non envoyé : une étape dont dépend ce programme n'a pas abouti. "
        "Veuillez présenter une demande directement à ce programme."
    ),
)
UNDER_REVIEW = LocalizedText(
    en="An agent is reviewing this request. You do not need to do anything for now.",
    fr="Un agent examine cette demande. Vous n'avez rien à faire pour le moment.",
)
RETRYING = TEMPORARILY_UNAVAILABLE
"""The same words an adapter uses for a transient error, so residents see one message."""
SKIPPED_BY_OPERATOR = LocalizedText(
    en="This program could not be notified through this service. Please apply to it directly.",
    fr=(
        "Ce programme n'a pas pu être avisé par ce service. "
        "Veuillez présenter une demande directement à ce programme."
    ),
)
FAILED_BY_OPERATOR = LocalizedText(
    en="This request could not be completed. The program will contact you if it needs anything.",
    fr="Cette demande n'a pas pu être traitée. Le programme communiquera avec vous au besoin.",
)
COMPENSATED = LocalizedText(
    en="This request was cancelled.",
    fr="Cette demande a été annulée.",
)
SENT = LocalizedText(
    en="Sent to the program.",
    fr="Transmis au programme.",
)
WAITING_REPLY = LocalizedText(
    en="Sent to the program. We are waiting for its answer.",
    fr="Transmis au programme. Nous attendons sa réponse.",
)
NO_REPLY = LocalizedText(
    en="Sent to the program, which has not answered. Please contact it directly to confirm.",
    fr="Transmis au programme, qui n'a pas répondu. Veuillez communiquer avec lui pour confirmer.",
)
WAITING_BIRTH_NOTICE = LocalizedText(
    en=(
        "Waiting for the hospital's or midwife's notice of the birth. The birth is registered once "
        "it matches your statement; you do not need to do anything."
    ),
    fr=(
        "En attente de l'avis de naissance de l'hôpital ou de la sage-femme. La naissance est "
        "enregistrée dès qu'il correspond à votre déclaration; vous n'avez rien à faire."
    ),
)
NO_BIRTH_NOTICE = LocalizedText(
    en=(
        "We have not yet received the hospital's or midwife's notice of the birth. An agent is "
        "looking into it; you do not need to do anything for now."
    ),
    fr=(
        "Nous n'avons pas encore reçu l'avis de naissance de l'hôpital ou de la sage-femme. Un agent "
        "s'en occupe; vous n'avez rien à faire pour le moment."
    ),
)


def birth_notice_differs(labels: list[LocalizedText]) -> LocalizedText:
    """The resident's message when the hospital's notice differs from their statement."""
    en = ", ".join(label.en for label in labels) or "some details"
    fr = ", ".join(label.fr for label in labels) or "certains renseignements"
    return LocalizedText(
        en=(
            f"The hospital's or midwife's notice of the birth differs from your statement ({en}). "
            "An agent will review it and may contact you."
        ),
        fr=(
            f"L'avis de naissance de l'hôpital ou de la sage-femme diffère de votre déclaration ({fr}). "
            "Un agent l'examinera et pourrait communiquer avec vous."
        ),
    )


def waiting_for_effective_date(not_before: datetime) -> LocalizedText:
    """The resident's message while a step waits until its system takes an effective-dated change."""
    day = not_before.date().isoformat()
    return LocalizedText(
        en=(
            f"This program accepts the change from {day}. We will send it then; you do not need to "
            "do anything."
        ),
        fr=(
            f"Ce programme accepte le changement à partir du {day}. Nous le lui transmettrons à ce "
            "moment; vous n'avez rien à faire."
        ),
    )
