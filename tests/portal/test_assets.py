"""GCDS's stylesheet made local, and the portal's behaviour when `make install` has not run."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import httpx
import pytest
from structlog.testing import capture_logs
from temporalio.client import Client

from infra.api import create_app
from infra.intake import Intake
from infra.portal import assets
from infra.settings import Settings
from tests.portal.conftest import CATALOGUE


def test_remote_fonts_and_icons_become_this_hosts_files() -> None:
    css = (
        '@import url("https://fonts.googleapis.com/css2?family=Lato:ital,wght@0,400;0,700&display=swap");'
        ":root{--x:1}@font-face{font-family:gcds-icons;"
        "src:url(https://cdn.design-system.canada.ca/@gcds-core/fonts@1.1.1/icons/gcds-icons.ttf) "
        'format("truetype"),url(https://cdn.design-system.canada.ca/@gcds-core/fonts@1.1.1/icons/gcds-icons.woff)'
        ' format("woff")}'
    )
    local = assets.local_gcds_css(css)
    assert local == (
        ":root{--x:1}@font-face{font-family:gcds-icons;"
        'src:url(/assets/gcds-fonts/icons/gcds-icons.woff) format("woff")}'
    )


def test_a_stylesheet_that_still_loads_another_host_is_refused() -> None:
    with pytest.raises(ValueError, match="another host"):
        assets.local_gcds_css('.a{background:url("https://example.com/x.png")}')


async def test_without_make_install_the_pages_still_answer_and_the_log_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assets, "GCDS_DIST", tmp_path / "missing" / "gcds")
    monkeypatch.setattr(assets, "GCDS_FONTS", tmp_path / "missing" / "fonts")
    settings = Settings(environment="test", data_dir=tmp_path)
    with capture_logs() as logs:
        app = create_app(settings, intake=Intake(cast("Client", None), CATALOGUE, settings))
    assert any(e["event"] == "portal.assets_missing" and "make install" in e["message"] for e in logs)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tellonce.test") as client:
        assert (await client.get("/en/")).status_code == 200
        assert (await client.get("/assets/gcds/gcds.esm.js")).status_code == 404
