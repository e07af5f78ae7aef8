"""Bilingual (EN/FR) messages for every validation error code a resident can meet.

Custom codes come from `bundles.validators` and the submission schemas; built-in codes are
pydantic's own error types. Messages never contain the submitted value (it may be a SIN):
only constraints from the error context (a length, a bound, the allowed choices) are
interpolated. French follows Canadian usage: a space before the colon, none before the
semicolon, and « » quotation marks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bundles.models import LocalizedText


def _t(en: str, fr: str) -> LocalizedText:
    return LocalizedText(en=en, fr=fr)


# Codes raised by tellonce's own validators and schema rules.
CUSTOM_MESSAGES: dict[str, LocalizedText] = {
    "sin_format": _t(
        "Enter a 9-digit Social Insurance Number; spaces and hyphens are fine",
        "Entrez un numéro d'assurance sociale de 9 chiffres; les espaces et les traits d'union sont acceptés",
    ),
    "sin_checksum": _t(
        "Enter a 9-digit Social Insurance Number; the check digit does not match",
        "Entrez un numéro d'assurance sociale de 9 chiffres; le chiffre de contrôle ne correspond pas",
    ),
    "sin_first_digit": _t(
        "A Social Insurance Number never starts with 0 or 8; check the number on your SIN letter",
        "Un numéro d'assurance sociale ne commence jamais par 0 ou 8; vérifiez le numéro sur votre "
        "lettre de confirmation du NAS",
    ),
    "postal_code_format": _t(
        "Enter a Canadian postal code in the format A1A 1A1",
        "Entrez un code postal canadien au format A1A 1A1",
    ),
    "postal_code_province_mismatch": _t(
        "This postal code is not in the province or territory you chose; check both",
        "Ce code postal ne se trouve pas dans la province ou le territoire choisi; vérifiez les deux",
    ),
    "province_code": _t(
        "Choose a province or territory, for example ON for Ontario",
        "Choisissez une province ou un territoire, par exemple ON pour l'Ontario",
    ),
    "health_number_format": _t(
        "Enter the 10-digit Ontario health number, then the version code of up to 2 letters if your "
        "card has one",
        "Entrez le numéro de carte Santé de l'Ontario de 10 chiffres, puis le code de version d'au "
        "plus 2 lettres si votre carte en a un",
    ),
    "health_number_checksum": _t(
        "Enter the 10-digit Ontario health number as shown on the card; the check digit does not match",
        "Entrez le numéro de carte Santé de l'Ontario tel qu'il figure sur la carte; le chiffre de "
        "contrôle ne correspond pas",
    ),
    "name_characters": _t(
        "Use only letters (accented letters are fine), spaces, hyphens (-), apostrophes (') and "
        "periods (.); no digits or symbols",
        "Utilisez seulement des lettres (les lettres accentuées sont acceptées), des espaces, des "
        "traits d'union (-), des apostrophes (') et des points (.); aucun chiffre ni symbole",
    ),
    "name_start": _t(
        "A name must start with a letter",
        "Un nom doit commencer par une lettre",
    ),
    "name_punctuation": _t(
        "Check the punctuation: a name cannot have two punctuation marks or spaces in a row, or end "
        "with a hyphen or apostrophe",
        "Vérifiez la ponctuation : un nom ne peut pas contenir deux signes de ponctuation ou deux "
        "espaces de suite, ni se terminer par un trait d'union ou une apostrophe",
    ),
    "text_characters": _t(
        "Remove line breaks, tabs and other control characters",
        "Retirez les sauts de ligne, les tabulations et les autres caractères de contrôle",
    ),
    "date_in_future": _t(
        "The date cannot be in the future",
        "La date ne peut pas être dans le futur",
    ),
    "date_too_old": _t(
        "Enter a date after 1 January 1900",
        "Entrez une date postérieure au 1er janvier 1900",
    ),
    "birth_too_old_for_online": _t(
        "A birth can be registered online only within 12 months; for an older birth, apply for a "
        "delayed registration of birth by mail",
        "Une naissance ne peut être enregistrée en ligne que dans les 12 mois; pour une naissance "
        "plus ancienne, demandez un enregistrement tardif de la naissance par la poste",
    ),
    "email_format": _t(
        "Enter an email address in the format name@example.com",
        "Entrez une adresse courriel au format nom@exemple.com",
    ),
    "phone_format": _t(
        "Enter a 10-digit Canadian phone number, for example 613-555-0123",
        "Entrez un numéro de téléphone canadien de 10 chiffres, par exemple 613-555-0123",
    ),
    "birth_order_required": _t(
        "For a multiple birth, enter this child's birth order (1 for the first born)",
        "Pour une naissance multiple, entrez le rang de naissance de cet enfant (1 pour le premier né)",
    ),
    "birth_order_out_of_range": _t(
        "The birth order must be between 1 and the number of children born",
        "Le rang de naissance doit être compris entre 1 et le nombre d'enfants nés",
    ),
    "parent_born_after_child": _t(
        "The parent's date of birth must be before the child's date of birth",
        "La date de naissance du parent doit précéder celle de l'enfant",
    ),
    "sin_required_for_ccb": _t(
        "Enter the birth parent's Social Insurance Number: the Canada Revenue Agency needs it to "
        "apply for the Canada child benefit for you",
        "Entrez le numéro d'assurance sociale du parent biologique : l'Agence du revenu du Canada en "
        "a besoin pour demander l'allocation canadienne pour enfants en votre nom",
    ),
    "certificate_required": _t(
        "Choose the certificate type and the number of copies, or do not order a certificate now",
        "Choisissez le type de certificat et le nombre de copies, ou ne commandez pas de certificat "
        "maintenant",
    ),
    "resp_referral_required": _t(
        "Enter the RESP promoter (bank, credit union or group plan) you want to contact you",
        "Entrez le promoteur de REEE (banque, caisse ou régime collectif) qui doit communiquer avec vous",
    ),
    "unknown_consent_purpose": _t(
        "This consent is not part of this service; remove it",
        "Ce consentement ne fait pas partie de ce service; retirez-le",
    ),
    "birth_outside_jurisdiction": _t(
        "This service is not available for a birth in this province or territory",
        "Ce service n'est pas offert pour une naissance dans cette province ou ce territoire",
    ),
    # Change of address (`address_change/v1`).
    "driver_licence_format": _t(
        "Enter the Ontario driver's licence number as on the card: 1 letter and 14 digits, for "
        "example A1234-56789-01234",
        "Entrez le numéro de permis de conduire de l'Ontario tel qu'il figure sur le permis : 1 lettre "
        "et 14 chiffres, par exemple A1234-56789-01234",
    ),
    "document_last4_format": _t(
        "Enter exactly the last 4 letters or digits of your document's number",
        "Entrez exactement les 4 derniers caractères (lettres ou chiffres) du numéro de votre document",
    ),
    "identity_number_required": _t(
        "Enter your Ontario health number or your driver's licence number: ServiceOntario checks "
        "your identity with one of them",
        "Entrez votre numéro de carte Santé de l'Ontario ou votre numéro de permis de conduire : "
        "ServiceOntario vérifie votre identité avec l'un d'eux",
    ),
    "sin_required_for_cra_address": _t(
        "Enter your Social Insurance Number: the Canada Revenue Agency finds your file with it to "
        "change your address",
        "Entrez votre numéro d'assurance sociale : l'Agence du revenu du Canada s'en sert pour trouver "
        "votre dossier et changer votre adresse",
    ),
    "sin_required_for_service_canada_address": _t(
        "Enter your Social Insurance Number: Service Canada finds your file with it to change your address",
        "Entrez votre numéro d'assurance sociale : Service Canada s'en sert pour trouver votre dossier "
        "et changer votre adresse",
    ),
    "driver_licence_required_for_mto": _t(
        "Enter your Ontario driver's licence number to change the address on your licence and "
        "vehicle permit, or do not choose that change",
        "Entrez votre numéro de permis de conduire de l'Ontario pour changer l'adresse de votre permis "
        "de conduire et de votre certificat d'immatriculation, ou ne choisissez pas ce changement",
    ),
    "health_number_required_for_ohip": _t(
        "Enter your Ontario health number to change the address of your health card, or do not "
        "choose that change",
        "Entrez votre numéro de carte Santé de l'Ontario pour changer l'adresse de votre carte Santé, "
        "ou ne choisissez pas ce changement",
    ),
    "new_address_same_as_old": _t(
        "The new address is the same as the old one; enter the address you are moving to",
        "La nouvelle adresse est identique à l'ancienne; entrez l'adresse où vous déménagez",
    ),
}

# Pydantic's built-in error types that a submission can produce. `{name}` placeholders are
# filled from the error's context, which for these types holds constraints, never input.
BUILTIN_MESSAGES: dict[str, LocalizedText] = {
    "missing": _t("This field is required", "Ce champ est obligatoire"),
    "extra_forbidden": _t(
        "This field is not part of the form; remove it",
        "Ce champ ne fait pas partie du formulaire; retirez-le",
    ),
    "string_type": _t("Enter text", "Entrez du texte"),
    "string_empty": _t("This field cannot be empty", "Ce champ ne peut pas être vide"),
    "string_too_short": _t(
        "Enter at least {min_length} characters", "Entrez au moins {min_length} caractères"
    ),
    "string_too_long": _t("Enter at most {max_length} characters", "Entrez au plus {max_length} caractères"),
    "string_pattern_mismatch": _t(
        "The format of this value is not valid", "Le format de cette valeur n'est pas valide"
    ),
    "date_type": _t("Enter a date in the format YYYY-MM-DD", "Entrez une date au format AAAA-MM-JJ"),
    "date_parsing": _t("Enter a date in the format YYYY-MM-DD", "Entrez une date au format AAAA-MM-JJ"),
    "date_from_datetime_parsing": _t(
        "Enter a date in the format YYYY-MM-DD", "Entrez une date au format AAAA-MM-JJ"
    ),
    "date_from_datetime_inexact": _t(
        "Enter a date without a time, in the format YYYY-MM-DD",
        "Entrez une date sans heure, au format AAAA-MM-JJ",
    ),
    "time_type": _t(
        "Enter a time on the 24-hour clock, in the format HH:MM",
        "Entrez une heure selon le système de 24 heures, au format HH:MM",
    ),
    "time_parsing": _t(
        "Enter a time on the 24-hour clock, in the format HH:MM",
        "Entrez une heure selon le système de 24 heures, au format HH:MM",
    ),
    "literal_error": _t("Choose one of: {expected}", "Choisissez l'une des valeurs suivantes : {expected}"),
    "enum": _t("Choose one of: {expected}", "Choisissez l'une des valeurs suivantes : {expected}"),
    "int_type": _t("Enter a whole number", "Entrez un nombre entier"),
    "int_parsing": _t("Enter a whole number", "Entrez un nombre entier"),
    "int_from_float": _t("Enter a whole number", "Entrez un nombre entier"),
    "greater_than_equal": _t(
        "Enter a number greater than or equal to {ge}", "Entrez un nombre supérieur ou égal à {ge}"
    ),
    "less_than_equal": _t(
        "Enter a number less than or equal to {le}", "Entrez un nombre inférieur ou égal à {le}"
    ),
    "greater_than": _t("Enter a number greater than {gt}", "Entrez un nombre supérieur à {gt}"),
    "less_than": _t("Enter a number less than {lt}", "Entrez un nombre inférieur à {lt}"),
    "bool_type": _t("Answer yes or no (true or false)", "Répondez par oui ou non (true ou false)"),
    "bool_parsing": _t("Answer yes or no (true or false)", "Répondez par oui ou non (true ou false)"),
    "too_short": _t("Enter at least {min_length} items", "Entrez au moins {min_length} éléments"),
    "too_long": _t("Enter at most {max_length} items", "Entrez au plus {max_length} éléments"),
    "model_type": _t(
        "This section must be a group of fields (a JSON object)",
        "Cette section doit être un groupe de champs (un objet JSON)",
    ),
    "model_attributes_type": _t(
        "This section must be a group of fields (a JSON object)",
        "Cette section doit être un groupe de champs (un objet JSON)",
    ),
    "dict_type": _t(
        "This section must be a group of fields (a JSON object)",
        "Cette section doit être un groupe de champs (un objet JSON)",
    ),
    "list_type": _t("Enter a list of values", "Entrez une liste de valeurs"),
    "json_invalid": _t(
        "The form data is not valid JSON", "Les données du formulaire ne sont pas du JSON valide"
    ),
    "value_error": _t("This value is not valid", "Cette valeur n'est pas valide"),
    "assertion_error": _t("This value is not valid", "Cette valeur n'est pas valide"),
}

# Shown with an accepted submission: nothing to fix, but the resident should know.
NOTICES: dict[str, LocalizedText] = {
    "late_registration": _t(
        "Births must be registered within 30 days. This one is late, but it can still be registered "
        "online because the child is less than 12 months old.",
        "Les naissances doivent être enregistrées dans les 30 jours. Cet enregistrement est en "
        "retard, mais il peut encore se faire en ligne parce que l'enfant a moins de 12 mois.",
    ),
    "temporary_sin": _t(
        "The birth parent's Social Insurance Number starts with 9: it is a temporary number that "
        "expires with your immigration document. Make sure it is still valid, or the Canada Revenue "
        "Agency may not be able to process the benefit application.",
        "Le numéro d'assurance sociale du parent biologique commence par 9 : c'est un numéro "
        "temporaire qui expire avec votre document d'immigration. Assurez-vous qu'il est encore "
        "valide, sinon l'Agence du revenu du Canada pourrait ne pas pouvoir traiter la demande de "
        "prestations.",
    ),
    "address_effective_later": _t(
        "Your move takes effect on a later date. Programs that record an address only once it takes "
        "effect will receive it then; the others receive it now.",
        "Votre déménagement prend effet à une date ultérieure. Les programmes qui n'inscrivent une "
        "adresse qu'à sa date d'effet la recevront à ce moment; les autres la reçoivent maintenant.",
    ),
}

FALLBACK_MESSAGE = _t(
    "This value is not valid; check it and try again",
    "Cette valeur n'est pas valide; vérifiez-la et réessayez",
)

# Context keys that only ever hold constraints; anything else in a context may echo input.
_SAFE_CONTEXT_KEYS = frozenset({"min_length", "max_length", "ge", "le", "gt", "lt", "expected"})


def message_for(code: str, context: Mapping[str, Any] | None = None) -> LocalizedText:
    """Return the bilingual message for an error code.

    Args:
        code: A custom code from `CUSTOM_MESSAGES` or a pydantic error type.
        context: The error's context (pydantic's `ctx`); only constraint keys are used.

    Returns:
        The message in both languages; a generic one for a code without its own message.
    """
    ctx = {k: v for k, v in (context or {}).items() if k in _SAFE_CONTEXT_KEYS}
    if code == "string_too_short" and ctx.get("min_length") == 1:
        # "Enter at least 1 characters" reads badly and the usual cause is an empty field.
        code = "string_empty"
    text = CUSTOM_MESSAGES.get(code) or BUILTIN_MESSAGES.get(code) or FALLBACK_MESSAGE
    if "{" not in text.en:
        return text
    try:
        en = text.en.format(**{k: str(v) for k, v in ctx.items()})
        fr_ctx = {k: str(v) for k, v in ctx.items()}
        if "expected" in fr_ctx:
            # pydantic joins the choices with an English "or".
            fr_ctx["expected"] = fr_ctx["expected"].replace(" or ", " ou ")
        fr = text.fr.format(**fr_ctx)
    except (KeyError, IndexError):
        return FALLBACK_MESSAGE
    return LocalizedText(en=en, fr=fr)
