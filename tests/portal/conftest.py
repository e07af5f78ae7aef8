"""The portal's app for page tests: the real `create_app`, with an intake that never reaches Temporal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client

from adapters.registry import KNOWN_ADAPTERS
from bundles.catalogue import Catalogue
from infra.api import create_app
from infra.intake import Intake
from infra.settings import Settings
from tests.portal.support import BASE, Browser

CATALOGUE = Catalogue.load(known_adapters=KNOWN_ADAPTERS)


@pytest.fixture(scope="module")
def pages_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The HTTP app as `tellonce api` builds it; pages that need Temporal are tested elsewhere."""
    settings = Settings(environment="test", data_dir=tmp_path_factory.mktemp("portal"))
    return create_app(settings, intake=Intake(cast("Client", None), CATALOGUE, settings))


@pytest.fixture
async def browser(pages_app: FastAPI) -> AsyncIterator[Browser]:
    transport = httpx.ASGITransport(app=pages_app, client=("192.0.2.20", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Browser(client)
