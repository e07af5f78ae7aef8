"""The portal's pages without Temporal: languages, form pages, validation, the sealed draft, safe URLs."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import cast

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.client import Client

from bundles.validators import toronto_today
from infra.api import create_app
from infra.intake import Intake
from infra.portal.draft import Draft, DraftInvalid, DraftSealer
from infra.portal.forms import JOURNEYS, journey_for
from infra.settings import Settings
from tests.portal.conftest import CATALOGUE
from tests.portal.support import Browser, Page, address_example, flatten, newborn_example

BUNDLES = sorted(CATALOGUE.definitions)
LANGS = ("en", "fr")
NONCE = re.compile(r'<meta name="csp-nonce" content="([^"]+)">')


def assert_well_formed(page: Page, lang: str) -> None:
    """What every portal page must be: its language, a toggle, nonces on scripts, no inline style."""
    text = page.text
    assert f'<html lang="{lang}">' in text
    nonce = NONCE.search(text)
    assert nonce is not None and nonce.group(1)
    for tag in re.findall(r"<(?:script|style)\b[^>]*>", text):
        assert f'nonce="{nonce.group(1)}"' in tag, tag
    assert " style=" not in text
    assert not re.search(r"\son[a-z]+=", text), "inline event handler"
    other = "fr" if lang == "en" else "en"
    assert f'lang-href="/{other}/' in text
    assert 'href="#main-content"' in text
    # No page loads anything from another host.
    for url in page.urls():
        assert not url.startswith(("http:", "https:", "//")), url


@pytest.mark.parametrize("lang", LANGS)
async def test_home_start_and_status_pages_render_in_each_language(browser: Browser, lang: str) -> None:
    home = await browser.get(f"/{lang}/")
    assert home.status == 200
    assert_well_formed(home, lang)
    for bundle in BUNDLES:
        definition = CATALOGUE.get(bundle)
        title = definition.title.fr if lang == "fr" else definition.title.en
        assert f'href="/{lang}/{bundle}/"' in home.text
        start = await browser.get(f"/{lang}/{bundle}/")
        assert start.status == 200
        assert_well_formed(start, lang)
        assert start.page == "start"
        assert title in start.title
        # Every program and organization of the bundle is named, in the page's language.
        for step in definition.steps:
            assert (step.program.fr if lang == "fr" else step.program.en) in start.text.replace("&#39;", "'")
        assert f'href="/{lang}/{bundle}/form"' in start.text
    access = await browser.get(f"/{lang}/status")
    assert access.status == 200
    assert_well_formed(access, lang)
    assert ('name="tracking_id"' in access.text) and ('name="access_code"' in access.text)


async def test_the_splash_page_offers_both_languages(browser: Browser) -> None:
    splash = await browser.get("/")
    assert splash.status == 200
    assert 'href="/en/" lang="en"' in splash.text
    assert 'href="/fr/" lang="fr"' in splash.text
    assert ">English<" in splash.text
    assert ">Français<" in splash.text


@pytest.mark.parametrize("lang", LANGS)
async def test_unknown_pages_get_an_html_404_and_the_api_keeps_its_problem_json(
    browser: Browser, lang: str
) -> None:
    page = await browser.get(f"/{lang}/no-such-service/")
    assert page.status == 404
    assert page.response.headers["content-type"].startswith("text/html")
    assert_well_formed(page, lang)
    assert page.page == "error"
    assert (await browser.get("/de/")).status == 404
    api = await browser.client.get("/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("bundle", "lang"), [("newborn-on", "en"), ("address-change-on", "fr")])
async def test_a_whole_journey_renders_every_page_and_reaches_the_review(
    browser: Browser, bundle: str, lang: str
) -> None:
    data = newborn_example() if bundle == "newborn-on" else address_example()
    journey = journey_for(CATALOGUE.get(bundle))
    consents = dict.fromkeys(CATALOGUE.get(bundle).consent_purposes, True)
    review = await browser.fill_journey(lang, bundle, journey, flatten(data), consents)
    assert_well_formed(review, lang)
    # The review shows the answers (choices by their label) and a change button per page.
    for page in journey.pages:
        assert f'value="{page.id}"' in review.text
    assert 'value="consent"' in review.text
    surname = data["child"]["surname"] if bundle == "newborn-on" else data["resident"]["surname"]
    assert surname.replace("'", "&#39;") in review.text


async def test_every_field_of_each_schema_is_asked_on_some_page() -> None:
    for name, journey in JOURNEYS.items():
        asked = {spec.path for spec in journey.fields}
        leaves = {
            path for path in journey.labels if not any(p.startswith(path + ".") for p in journey.labels)
        }
        assert leaves - {"consents"} <= asked, name


async def test_a_configured_variant_gets_the_pages_of_its_schema(browser: Browser) -> None:
    page = await browser.get("/fr/newborn-on-ottawa/form")
    assert page.status == 200
    assert page.page == "child"
    start = await browser.get("/fr/newborn-on-ottawa/")
    assert "Santé publique Ottawa" in start.text


@pytest.mark.parametrize(
    ("bundle", "page_id", "answers", "expected"),
    [
        # Missing and malformed fields, each at its own id.
        (
            "newborn-on",
            "child",
            {"child.surname": "Tremblay", "child.date_of_birth": "2999-01-01", "child.sex": "F"},
            {"child-date-of-birth", "child-place-of-birth-municipality", "child-place-of-birth-province"},
        ),
        # A rule across fields points at the field to fix (birth order beyond the number of children).
        (
            "newborn-on",
            "child",
            {
                "child.surname": "Tremblay",
                "child.sex": "X",
                "child.date_of_birth": "TODAY",
                "child.plurality": "2",
                "child.birth_order": "3",
                "child.place_of_birth.municipality": "Ottawa",
                "child.place_of_birth.province": "ON",
            },
            {"child-birth-order"},
        ),
        # The bundle's own rule (births in Ontario only) maps to the province field.
        (
            "newborn-on",
            "child",
            {
                "child.surname": "Tremblay",
                "child.sex": "M",
                "child.date_of_birth": "TODAY",
                "child.place_of_birth.municipality": "Gatineau",
                "child.place_of_birth.province": "QC",
            },
            {"child-place-of-birth-province"},
        ),
        (
            "address-change-on",
            "resident",
            {"resident.surname": "Roy", "resident.date_of_birth": "1980-02-30", "resident.sin": "123"},
            {"resident-date-of-birth", "resident-sin"},
        ),
    ],
)
async def test_validation_errors_map_to_the_fields_of_the_page(
    browser: Browser, bundle: str, page_id: str, answers: dict[str, str], expected: set[str]
) -> None:
    first = await browser.get(f"/en/{bundle}/form")
    assert first.page == page_id
    filled = {k: (toronto_today().isoformat() if v == "TODAY" else v) for k, v in answers.items()}
    page = await browser.post(f"/en/{bundle}/form", first, filled)
    assert page.status == 422
    assert page.page == page_id
    links = page.error_links()
    assert set(links) == {f"#{field_id}" for field_id in expected}
    assert page.title.startswith(f"Error: {len(expected)} problem")
    for field_id in expected:
        # The summary links to an element with that id, which shows its own message.
        shown = rf'<gcds-[a-z]+ [^>]*\bid="{field_id}"[^>]*error-message="[^"]+"'
        assert re.search(shown, page.text), field_id
    # Answers already given are shown again, radios as a checked option (which GCDS submits).
    if "child.sex" in filled:
        options = re.search(r'<gcds-radios [^>]*id="child-sex"[^>]*options="([^"]*)"', page.text)
        assert options is not None
        checked = [o["value"] for o in json.loads(html.unescape(options.group(1))) if o.get("checked")]
        assert checked == [filled["child.sex"]]
    # Nothing the resident typed is echoed in an error message.
    for message in links.values():
        for value in filled.values():
            if len(value) > 3:
                assert value not in message


async def test_a_rule_on_a_whole_section_sends_the_resident_back_to_the_field_that_fixes_it(
    browser: Browser,
) -> None:
    # No health number and no driver's licence: the schema reports it on `resident`, once every
    # section is complete, so the resident is sent back from the consent page.
    data = address_example()
    del data["resident"]["health_number"], data["resident"]["driver_licence_number"]
    definition = CATALOGUE.get("address-change-on")
    journey = journey_for(definition)
    page = await browser.get("/fr/address-change-on/form")
    for form_page in journey.pages:
        answers = {spec.path: flatten(data).get(spec.path, "") for spec in form_page.fields}
        page = await browser.post("/fr/address-change-on/form", page, answers)
    assert page.page == "consent"
    # A change of address is all or nothing: a required program's refusal undoes the others.
    cra = page.text[page.text.index('id="purpose-cra_address"') :]
    assert "Essentiel une fois choisi" in cra[: cra.index("</section>")]
    choices = {f"consents.{p}": "no" for p in definition.consent_purposes}
    back = await browser.post("/fr/address-change-on/form", page, choices)
    assert back.status == 422
    assert back.page == "resident"
    assert list(back.error_links()) == ["#resident-health-number"]
    assert back.title.startswith("Erreur : 1 problème")


async def test_the_consent_page_lists_each_program_and_exactly_what_it_receives(browser: Browser) -> None:
    data = newborn_example()
    definition = CATALOGUE.get("newborn-on")
    journey = journey_for(definition)
    page = await browser.get("/en/newborn-on/form")
    for form_page in journey.pages:
        answers = {spec.path: flatten(data).get(spec.path, "") for spec in form_page.fields}
        page = await browser.post("/en/newborn-on/form", page, answers)
    assert page.page == "consent"
    text = page.text.replace("&#39;", "'")
    for purpose in definition.consent_purposes:
        assert f'name="consents.{purpose}"' in text
    # The Canada child benefit's section names its data, and not data it never receives.
    ccb = text[text.index('id="purpose-ccb_aba"') :]
    ccb = ccb[: ccb.index("</section>")]
    assert "Birth parent: Social Insurance Number" in ccb
    assert "Birth parent: Marital status" not in ccb
    assert "Canada Revenue Agency" in ccb
    # What happens if a program cannot act follows the bundle's rules: after the registration
    # (the pivot) staff follow up; an optional program never holds the rest back.
    assert "our staff follow it up" in ccb
    resp = text[text.index('id="purpose-resp_referral"') :]
    assert "Optional: if this program cannot act" in resp[: resp.index("</section>")]
    # The birth registration needs no consent: it is explained as always included.
    assert "Always included" in text
    # Unanswered choices are errors at each choice.
    refused = await browser.post("/en/newborn-on/form", page, {})
    assert refused.status == 422
    assert set(refused.error_links()) == {
        f"#consents-{p.replace('_', '-')}" for p in definition.consent_purposes
    }
    # Saying yes to the child benefit without the parent's SIN sends the resident to that field.
    del data["birth_parent"]["sin"]
    page = await browser.get("/en/newborn-on/form")
    for form_page in journey.pages:
        answers = {spec.path: flatten(data).get(spec.path, "") for spec in form_page.fields}
        page = await browser.post("/en/newborn-on/form", page, answers)
    choices = {f"consents.{p}": "yes" for p in definition.consent_purposes}
    back = await browser.post("/en/newborn-on/form", page, choices)
    assert back.status == 422
    assert back.page == "benefits"
    assert list(back.error_links()) == ["#birth-parent-sin"]


async def test_switching_language_keeps_the_answers_and_the_page(browser: Browser) -> None:
    first = await browser.get("/en/newborn-on/form")
    page = await browser.post("/en/newborn-on/form", first, {"child.surname": "Gagnon", "action": "language"})
    assert page.status == 200
    assert page.page == "child"
    assert '<html lang="fr">' in page.text
    assert 'action="/fr/newborn-on/form"' in page.text
    assert 'value="Gagnon"' in page.text
    # And back: the answers follow.
    # (A browser posts the field again, filled with the value the page shows.)
    again = await browser.post("/fr/newborn-on/form", page, {"child.surname": "Gagnon", "action": "language"})
    assert '<html lang="en">' in again.text
    assert 'value="Gagnon"' in again.text


async def test_personal_data_never_appears_in_an_address(browser: Browser) -> None:
    data = newborn_example()
    values = flatten(data)
    journey = journey_for(CATALOGUE.get("newborn-on"))
    consents = dict.fromkeys(CATALOGUE.get("newborn-on").consent_purposes, True)
    review = await browser.fill_journey("en", "newborn-on", journey, values, consents)
    # Back to a page and on again: every answer stays in the sealed draft, in the body only.
    changed = await browser.post("/en/newborn-on/form", review, {"goto": "child"})
    assert changed.page == "child"
    secrets = {v for v in values.values() if (len(v) >= 4 and not v.isdigit()) or len(v) >= 9}
    for url in browser.visited + changed.urls() + review.urls():
        for secret in secrets:
            assert secret.lower() not in url.lower(), (secret, url)
    assert all("draft" not in url for url in browser.visited)
    # The draft itself is not the answers in clear (nor in base64 of them).
    draft = review.hidden["draft"]
    assert draft.startswith("tlc1.")
    for secret in secrets:
        assert secret not in draft


async def test_the_sealed_draft_cannot_be_read_forged_moved_or_kept_past_its_expiry(
    browser: Browser, tmp_path: object
) -> None:
    first = await browser.get("/en/newborn-on/form")
    page = await browser.post("/en/newborn-on/form", first, {"child.surname": "Gagnon", "action": "back"})
    draft = page.hidden["draft"]
    prefix, kid, body = draft.split(".")
    flipped = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    for forged in (f"{prefix}.{kid}.{flipped}", "tlc1.k1.AAAA", "", "not a draft"):
        refused = await browser.post("/en/newborn-on/form", page, {"draft": forged})
        assert refused.status == 400
        assert refused.page == "expired"
    # A newborn draft does not open in the address-change journey.
    moved = await browser.post("/en/address-change-on/form", page, {})
    assert moved.status == 400

    sealer = DraftSealer(Settings(environment="test"))
    token = sealer.seal(Draft(values={"child.surname": "Gagnon"}), "newborn-on", now=1000.0)
    assert sealer.open(token, "newborn-on", now=1001.0).values == {"child.surname": "Gagnon"}
    with pytest.raises(DraftInvalid):
        sealer.open(token, "newborn-on", now=1000.0 + 3 * 60 * 60)
    with pytest.raises(DraftInvalid):
        sealer.open(token, "newborn-on-ottawa", now=1001.0)


async def test_a_review_page_cannot_be_reached_by_skipping_pages(browser: Browser) -> None:
    first = await browser.get("/en/newborn-on/form")
    page = await browser.post("/en/newborn-on/form", first, {"page": "review", "action": "submit"})
    assert page.page == "child"
    page = await browser.post("/en/newborn-on/form", first, {"goto": "review"})
    assert page.page == "child"
    # Nor a later form page posted before the first one was done.
    page = await browser.post(
        "/en/newborn-on/form", first, {"page": "birth_parent", "birth_parent.surname": "X"}
    )
    assert page.page == "child"


@pytest.mark.parametrize("lang", LANGS)
async def test_status_needs_the_access_code_and_never_puts_it_in_an_address(
    browser: Browser, lang: str
) -> None:
    tracking_id = "0b6f9d1e-9a53-4c6a-8f2f-2d0c1b7a9e11"
    # Without having proved the code, the status page sends the resident to the access form.
    direct = await browser.client.get(f"/{lang}/status/{tracking_id}")
    assert direct.status_code == 303
    assert direct.headers["location"] == f"/{lang}/status?tracking_id={tracking_id}"
    live = await browser.client.get(f"/{lang}/status/{tracking_id}/live")
    assert live.status_code == 403
    withdraw_page = await browser.client.get(f"/{lang}/status/{tracking_id}/withdraw")
    assert withdraw_page.status_code == 303
    form = await browser.get(f"/{lang}/status?tracking_id={tracking_id}")
    assert f'value="{tracking_id}"' in form.text
    # A wrong code is refused, with the same answer as an unknown tracking number.
    wrong = await browser.post(
        f"/{lang}/status", form, {"tracking_id": tracking_id, "access_code": "AAAA-BBBB-CCCC-DDDD"}
    )
    assert wrong.status == 400
    assert list(wrong.error_links()) == ["#tracking-id"]
    assert "AAAA-BBBB" not in wrong.text
    assert "tellonce_status" not in wrong.response.headers.get("set-cookie", "")
    missing = await browser.post(f"/{lang}/status", form, {"tracking_id": "nope", "access_code": ""})
    assert set(missing.error_links()) == {"#tracking-id", "#access-code"}
    # A forged grant cookie opens nothing.
    browser.client.cookies.set("tellonce_status", "eyJpZHMiOlsi.0000")
    assert (await browser.client.get(f"/{lang}/status/{tracking_id}")).status_code == 303


async def test_gcds_and_its_fonts_are_served_here_without_any_other_host(browser: Browser) -> None:
    css = await browser.client.get("/assets/gcds/gcds.css")
    assert css.status_code == 200
    assert "googleapis" not in css.text
    assert "cdn.design-system.canada.ca" not in css.text
    assert "/assets/gcds-fonts/icons/gcds-icons.woff" in css.text
    fonts = await browser.client.get("/assets/gcds-fonts/fonts.css")
    urls = re.findall(r'url\("([^"]+)"\)', fonts.text)
    assert urls
    for url in [*urls, "/assets/gcds-fonts/icons/gcds-icons.woff"]:
        assert url.startswith("/assets/gcds-fonts/")
        assert (await browser.client.get(url)).status_code == 200, url
    for url in ("/assets/gcds/gcds.esm.js", "/assets/portal/portal.js", "/assets/portal/portal.css"):
        assert (await browser.client.get(url)).status_code == 200, url


async def _broken(request: Request) -> Response:
    raise RuntimeError("a bug that names 123 456 782")


@pytest.mark.parametrize("lang", LANGS)
async def test_an_unexpected_error_on_a_page_is_an_html_apology_with_a_correlation_id(
    tmp_path: Path, lang: str
) -> None:
    settings = Settings(environment="test", data_dir=tmp_path)
    app = create_app(settings, intake=Intake(cast("Client", None), CATALOGUE, settings))
    app.router.routes[:0] = [Route(f"/{lang}/broken", _broken), Route("/api/v1/broken", _broken)]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as client:
        page = Page(await client.get(f"/{lang}/broken"))
        api = await client.get("/api/v1/broken")
    assert page.status == 500
    assert page.response.headers["content-type"].startswith("text/html")
    assert_well_formed(page, lang)
    correlation_id = page.response.headers["x-correlation-id"]
    assert f'id="correlation-id" class="portal-code">{correlation_id}<' in page.text
    assert "123 456 782" not in page.text
    assert "RuntimeError" not in page.text
    assert api.status_code == 500
    assert api.headers["content-type"] == "application/problem+json"
