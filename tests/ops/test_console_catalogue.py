"""The ops console's `ops` catalogues: every message its code and templates use is in both
languages, translated into French with its placeholders kept, and none is left unused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from infra.ops.auth import Role
from infra.ops.console import LANGUAGES, LOCALES, TEMPLATES
from infra.ops.models import BreakerState, OpsActionKind, StuckReason
from workflows.models import BundleState, StepState

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|%%")

Message = str | tuple[str, ...]


def used_messages() -> set[Message]:
    """Every message id the console's code and templates name, as `pybabel extract` finds them."""
    sources: list[tuple[Path, str, dict[str, str]]] = [(ROOT / "infra/ops/console.py", "python", {})]
    sources += [(t, "jinja2", {"extensions": "jinja2.ext.i18n"}) for t in sorted(TEMPLATES.glob("*.html"))]
    found: set[Message] = set()
    for path, method, options in sources:
        for _line, message, _comments, _context in extract_from_file(
            method, path, keywords=KEYWORDS, options=options
        ):
            found.add(message if isinstance(message, str) else tuple(message))
    return found


def dynamic_messages() -> set[Message]:
    """Codes the templates translate by value (`_(state)`): states, roles and attempt outcomes."""
    codes = {s.value for s in BundleState} | {s.value for s in StepState} | {r.value for r in Role}
    outcomes = {"accepted", "acknowledged", "closed", "held", "replied", "rejected", "failed"}
    return set(codes | outcomes)


def catalogue(language: str) -> dict[Message, Message]:
    with (LOCALES / language / "LC_MESSAGES" / "ops.po").open("rb") as source:
        read = read_po(source, locale=language)
    found: dict[Message, Message] = {}
    for m in read:
        if not m.id:
            continue
        key = m.id if isinstance(m.id, str) else tuple(m.id)
        found[key] = m.string if isinstance(m.string, str) else tuple(m.string or ())
    return found


@pytest.fixture(scope="module")
def used() -> set[Message]:
    messages = used_messages()
    assert "Stuck bundles" in messages and "Legacy systems" in messages  # templates are read
    assert "Breaker open: calls are held after too many errors." in messages  # console.py is read
    return messages


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_used_message_is_catalogued(used: set[Message], language: str) -> None:
    messages = catalogue(language)
    assert sorted(map(str, used - messages.keys())) == [], "missing from the catalogue"
    unused = messages.keys() - used - dynamic_messages()
    assert sorted(map(str, unused)) == [], "in the catalogue but used nowhere"


def test_enumerations_shown_by_value_are_catalogued() -> None:
    french = catalogue("fr")
    for code in dynamic_messages():
        assert code in french, code
    # Reasons, actions and breaker states are shown through words the code marks for extraction.
    from infra.ops.console import ACTION_WORDS, BREAKER_WORDS, REASON_WORDS

    assert set(REASON_WORDS) == set(StuckReason)
    assert set(ACTION_WORDS) == set(OpsActionKind)
    assert set(BREAKER_WORDS) == set(BreakerState)


def test_every_message_is_translated_into_french_with_its_placeholders() -> None:
    for message, translation in catalogue("fr").items():
        ids = message if isinstance(message, tuple) else (message,)
        texts = translation if isinstance(translation, tuple) else (translation,)
        assert all(texts), f"untranslated: {message!r}"
        for text in texts:
            assert sorted(PLACEHOLDER.findall(ids[-1])) == sorted(PLACEHOLDER.findall(text)), (message, text)


def test_templates_hold_no_text_outside_the_catalogue() -> None:
    templates = sorted(TEMPLATES.glob("*.html"))
    assert len(templates) >= 10
    for template in templates:
        bare = re.sub(
            r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", template.read_text(encoding="utf-8"), flags=re.DOTALL
        )
        bare = re.sub(r"<[^>]*>", " ", bare, flags=re.DOTALL)
        assert re.findall(r"[^\W\d_]{2,}", bare) == [], template.name
