"""Driving the portal's pages over HTTP as a browser without JavaScript would: forms, hidden fields, links."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bundles.validators import toronto_today
from infra.portal.forms import Journey

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BASE = "http://tellonce.test"

_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
_PAGE = re.compile(r'<main id="main-content"[^>]*data-page="([a-z_-]+)"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)
_ERROR_LINKS = re.compile(r'<gcds-error-summary [^>]*error-links="([^"]*)"')
_URLS = re.compile(r'(?:href|action|src|lang-href|data-live)="([^"]*)"')


@dataclass
class Page:
    """One answer of the portal, read as HTML."""

    response: httpx.Response
    hidden: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.hidden = dict(_HIDDEN.findall(self.text))

    @property
    def text(self) -> str:
        return self.response.text

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def page(self) -> str | None:
        found = _PAGE.search(self.text)
        return found.group(1) if found else None

    @property
    def title(self) -> str:
        found = _TITLE.search(self.text)
        assert found is not None, self.text[:500]
        return html.unescape(found.group(1))

    def error_links(self) -> dict[str, str]:
        """The error summary's links: `#field-id` -> text."""
        found = _ERROR_LINKS.search(self.text)
        if found is None:
            return {}
        links: dict[str, str] = json.loads(html.unescape(found.group(1)))
        return links

    def urls(self) -> list[str]:
        """Every address the page links to, posts to or loads."""
        return [html.unescape(u) for u in _URLS.findall(self.text)]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A submission's leaves as form values by dotted path (`consents` left out)."""
    values: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key == "consents" and not prefix:
            continue
        if isinstance(value, dict):
            values.update(flatten(value, f"{path}."))
        else:
            values[path] = str(value)
    return values


def newborn_example() -> dict[str, Any]:
    """The newborn example, with a birth 10 days ago (the form takes births of the last 12 months)."""
    data: dict[str, Any] = json.loads((EXAMPLES / "newborn-on" / "complete.json").read_text())["submission"]
    data["child"]["date_of_birth"] = (toronto_today() - timedelta(days=10)).isoformat()
    return data


def address_example() -> dict[str, Any]:
    """The address-change example, moving today."""
    data: dict[str, Any] = json.loads((EXAMPLES / "address-change-on" / "complete.json").read_text())[
        "submission"
    ]
    data["effective_date"] = toronto_today().isoformat()
    return data


class Browser:
    """An HTTP client that keeps cookies and posts forms with their hidden fields, like a browser."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.visited: list[str] = []

    async def get(self, url: str) -> Page:
        self.visited.append(url)
        return Page(await self.client.get(url))

    async def post(self, url: str, page: Page, fields: dict[str, str]) -> Page:
        """Post a form of `page` (its hidden fields, then `fields`)."""
        self.visited.append(url)
        return Page(await self.client.post(url, data={**page.hidden, **fields}))

    async def fill_journey(
        self, lang: str, bundle: str, journey: Journey, values: dict[str, str], consents: dict[str, bool]
    ) -> Page:
        """From the first form page to the review page, answering every page; returns the review page."""
        page = await self.get(f"/{lang}/{bundle}/form")
        for form_page in journey.pages:
            assert page.page == form_page.id, (page.page, page.title)
            answers = {spec.path: values.get(spec.path, "") for spec in form_page.fields}
            page = await self.post(f"/{lang}/{bundle}/form", page, {**answers, "action": "continue"})
            assert page.status == 200, (form_page.id, page.error_links())
        assert page.page == "consent", page.title
        choices = {f"consents.{p}": "yes" if given else "no" for p, given in consents.items()}
        page = await self.post(f"/{lang}/{bundle}/form", page, {**choices, "action": "continue"})
        assert page.page == "review", (page.title, page.error_links())
        return page

    async def submit(self, lang: str, bundle: str, review: Page) -> Page:
        return await self.post(f"/{lang}/{bundle}/submit", review, {"action": "submit"})
