"""English and French for the portal: catalogues compiled at start-up, one Jinja environment per language.

The `.po` files in `locales/` are the source; they are compiled in memory when the portal is
mounted, so `make install` then `make dev` needs no separate compile step and a stale `.mo`
can never be served.
"""

from __future__ import annotations

import gettext
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bundles.models import LocalizedText

Language = Literal["en", "fr"]
LANGUAGES: tuple[Language, ...] = ("en", "fr")
HERE = Path(__file__).resolve().parent
LOCALES = HERE / "locales"
TEMPLATES = HERE / "templates"
DOMAIN = "messages"


def catalogue_path(language: str) -> Path:
    """The `.po` file of a language."""
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_translations(
    language: str, *, locales: Path = LOCALES, domain: str = DOMAIN
) -> gettext.GNUTranslations:
    """Compile a language's `.po` catalogue in memory (the portal's unless told another)."""
    with (locales / language / "LC_MESSAGES" / f"{domain}.po").open("rb") as source:
        catalog = read_po(source, locale=language, domain=domain)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def jinja_environment(
    templates: Path, language: Language, translations: gettext.GNUTranslations
) -> Environment:
    """A language's Jinja environment: autoescaping, the catalogue, and the helpers every page uses.

    Shared by the portal and the ops console, so both render the same way (block lines trimmed,
    `localized` and `json` filters, `lang`/`other_lang`/`translations` globals).
    """
    env = Environment(
        loader=FileSystemLoader(templates),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]  # added by the i18n extension
    env.globals["lang"] = language
    env.globals["translations"] = translations
    env.globals["other_lang"] = other_language(language)
    env.filters["localized"] = lambda text, _lang=language: localized(text, _lang)
    # JSON for GCDS attributes, in the order given (tojson sorts keys); autoescaping quotes it.
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def other_language(language: Language) -> Language:
    """English for French and French for English."""
    return "fr" if language == "en" else "en"


def localized(text: LocalizedText | Mapping[str, str] | None, language: str) -> str:
    """A bilingual text from a bundle definition or a validation message, in one language."""
    if text is None:
        return ""
    if isinstance(text, LocalizedText):
        return text.fr if language == "fr" else text.en
    return text.get(language) or text.get("en", "")


def radio_options(
    spec: Any, translations: gettext.NullTranslations, current: str = ""
) -> list[dict[str, Any]]:
    """The `options` of a `<gcds-radios>` for a field's choices, labelled in one language.

    The current answer is marked `checked`: GCDS radios submit an option checked this way, but not
    one given as their `value` attribute until the resident clicks.
    """
    return [
        {
            "id": f"{spec.field_id}-{value}",
            "label": translations.gettext(label),
            "value": value,
            **({"checked": True} if value == current else {}),
        }
        for value, label in spec.choices
    ]


def translator(env: Environment) -> Callable[[str], str]:
    """The gettext of a language's environment, for text made outside templates."""
    # Not env.globals["gettext"]: with new-style gettext it expects a template context.
    translations = cast("gettext.NullTranslations", env.globals["translations"])
    return translations.gettext


def environments() -> dict[Language, Environment]:
    """One Jinja environment per language, each with its catalogue installed (autoescaping on)."""
    envs: dict[Language, Environment] = {}
    for language in LANGUAGES:
        translations = load_translations(language)
        env = jinja_environment(TEMPLATES, language, translations)
        env.globals["radio_options"] = lambda spec, current="", _t=translations: radio_options(
            spec, _t, current
        )
        envs[language] = env
    return envs
