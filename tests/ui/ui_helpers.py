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


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed; scripts/install-browser.sh installs it"
    if CHROMIUM is None:
        return "no chromium on PATH (or VLSERVE_CHROMIUM); scripts/install-browser.sh installs Debian's chromium"
    return None


MISSING = _missing()
needs_browser = pytest.mark.skipif(MISSING is not None, reason=f"browser tests skipped: {MISSING}")


def load_api_helpers():
    """The API tests' `start_server` (uvicorn in a thread on a free loopback port), loaded by path: tests/api is
    not a package, and these tests must not depend on which test folder pytest imported first."""
    path = Path(__file__).parents[1] / "api" / "api_helpers.py"
    spec = importlib.util.spec_from_file_location("_ui_api_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module
