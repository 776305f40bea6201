"""Browser tests of the web UI: a real vlserve server on loopback (the API tests' server helper, temporary
VLSERVE_HOME) and headless Debian chromium driven by playwright. One server and one browser for the session;
each test gets a fresh browser context (so a fresh sessionStorage) and fails on any uncaught page error."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, MISSING, load_api_helpers

from vlserve.api.app import create_app
from vlserve.config import ServerConfig


@pytest.fixture(scope="session")
def ui_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("vlserve-ui-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLSERVE_HOME", str(home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield home


def _app_with_ui():
    app = create_app(ServerConfig())
    if not any(getattr(route, "path", None) == "/ui" for route in app.routes):  # until create_app includes it
        from vlserve.api import ui

        app.include_router(ui.router)
    return app


@pytest.fixture(scope="session")
def server(ui_home):
    if MISSING:
        pytest.skip(f"browser tests skipped: {MISSING}")
    live = load_api_helpers().start_server(_app_with_ui())
    yield live
    live.stop()


@pytest.fixture(scope="session")
def twin_1b(tmp_path_factory) -> Path:
    from vlserve.families.internvl2_5.twin import write_twin

    return write_twin("InternVL2_5-1B", tmp_path_factory.mktemp("ui-twin-1b"))


@pytest.fixture(scope="session")
def browser():
    if MISSING:
        pytest.skip(f"browser tests skipped: {MISSING}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=server.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
