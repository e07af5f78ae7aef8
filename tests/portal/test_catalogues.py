"""The portal's message catalogues: every string of the templates and code in French, none unused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from infra.portal.i18n import LANGUAGES, catalogue_path

ROOT = Path(__file__).resolve().parents[2]
METHODS = [
    ("infra/portal/**.py", "python"),
    ("infra/portal/templates/**.html", "jinja2"),
]
OPTIONS = {"infra/portal/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}


def used_messages() -> set[str | tuple[str, ...]]:
    """Every message id the portal's code and templates use, as `pybabel extract -F babel.cfg` finds them."""
    found: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        ROOT, method_map=METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def catalogue(language: str) -> dict[str | tuple[str, ...], str | tuple[str, ...]]:
    with catalogue_path(language).open("rb") as source:
        read = read_po(source, locale=language)
    found: dict[str | tuple[str, ...], str | tuple[str, ...]] = {}
    for m in read:
        if not m.id:
            continue
        key = m.id if isinstance(m.id, str) else tuple(m.id)
        found[key] = m.string if isinstance(m.string, str) else tuple(m.string or ())
    return found


@pytest.fixture(scope="module")
def used() -> set[str | tuple[str, ...]]:
    messages = used_messages()
    # A sanity check that extraction sees both kinds of source.
    assert "About your baby" in messages  # forms.py
    assert "Check your answers" in messages  # review.html
    return messages


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_used_message_is_in_the_catalogue_and_every_catalogued_one_is_used(
    used: set[str | tuple[str, ...]], language: str
) -> None:
    messages = catalogue(language)
    assert sorted(map(str, used - messages.keys())) == [], "missing from the catalogue"
    assert sorted(map(str, messages.keys() - used)) == [], "in the catalogue but used nowhere"


def test_every_message_has_a_french_translation(used: set[str | tuple[str, ...]]) -> None:
    french = catalogue("fr")
    untranslated = [
        str(message)
        for message, translation in french.items()
        if not (all(translation) if isinstance(translation, tuple) else translation)
    ]
    assert untranslated == []
    # Text the same in both languages must be a proper name or a format, not a forgotten phrase.
    same = {m for m, t in french.items() if isinstance(m, str) and m == t}
    assert same <= {
        "Alberta", "Manitoba", "Nunavut", "Ontario", "Saskatchewan", "Yukon", "Page %(number)s of %(count)s"
    } | {m for m in same if m.startswith("%(")}, sorted(same)  # fmt: skip


def test_french_keeps_every_placeholder() -> None:
    for message, translation in catalogue("fr").items():
        ids = message if isinstance(message, tuple) else (message,)
        texts = translation if isinstance(translation, tuple) else (translation,)
        for text in texts:
            for placeholder in (
                "%(number)s",
                "%(count)s",
                "%(num)s",
                "%(owner)s",
                "%(label)s",
                "%(program)s",
            ):
                assert (placeholder in ids[-1]) == (placeholder in text), (message, text)


def test_templates_hold_no_text_outside_the_catalogue() -> None:
    # Text between tags must come from an expression: what is left once tags, expressions and
    # comments are removed is only spacing and punctuation.
    templates = sorted((ROOT / "infra/portal/templates").glob("*.html"))
    assert templates
    for template in templates:
        source = template.read_text(encoding="utf-8")
        # (`main_attrs` blocks hold attributes of the base template's <main>, not text.)
        bare = re.sub(r"\{% block main_attrs %\}.*?\{% endblock %\}", " ", source)
        bare = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", bare, flags=re.DOTALL)
        bare = re.sub(r"<[^>]*>", " ", bare, flags=re.DOTALL)
        assert re.findall(r"[^\W\d_]{2,}", bare) == [], template.name
