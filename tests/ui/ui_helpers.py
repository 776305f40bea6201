"""What the UI tests share: where chromium is, why the tests are skipped when it or playwright is missing, the
flags headless chromium needs on a closed network, and the API tests' loopback server helper."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("VLSERVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags chromium keeps calling home, which a closed network answers slowly.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
INSTALL = "scripts/install-browser.sh installs it"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"the playwright package is not installed; {INSTALL}"
    if CHROMIUM is None or not os.access(CHROMIUM, os.X_OK):
        return f"no chromium executable (PATH or VLSERVE_CHROMIUM={CHROMIUM or ''}); {INSTALL}"
    return None


MISSING = _missing()
# CI installs the browser (scripts/setup.sh calls install-browser.sh), so there a missing one is a failure, not a skip.
if MISSING and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI must run the browser tests, but {MISSING}")
needs_browser = pytest.mark.skipif(MISSING is not None, reason=f"browser tests skipped: {MISSING}")

if MISSING is None:
    from playwright.sync_api import expect
else:
    expect = None


def load_api_helpers():
    """The API tests' `start_server` (uvicorn in a thread on a free loopback port), loaded by path: tests/api is
    not a package, and these tests must not depend on which test folder pytest imported first."""
    path = Path(__file__).parents[1] / "api" / "api_helpers.py"
    spec = importlib.util.spec_from_file_location("_ui_api_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module
