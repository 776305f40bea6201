#!/usr/bin/env bash
# Install what the web UI tests (tests/ui) drive: Debian's chromium, a font with Chinese glyphs, and the Python
# playwright package in .venv (pointed at /usr/bin/chromium; playwright's own browser download is not used).
# Idempotent: when all three are there it returns at once. Needs root (or sudo) for apt-get.
#
#   VLSERVE_PYTHON   interpreter of the venv to install playwright into (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${VLSERVE_PYTHON:-.venv/bin/python}
PACKAGES=(chromium fonts-wqy-zenhei)

have_browser() { command -v chromium >/dev/null 2>&1; }
have_cjk_font() { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null | head -n1)" ]; }
have_playwright() { "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; }

if ! have_browser || ! have_cjk_font; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

if ! have_playwright; then
  "$PYTHON" -m pip --disable-pip-version-check -q install "playwright>=1.40" 2>&1 | grep -v "^WARNING: Location" || true
fi

have_browser && have_playwright || { echo "install-browser: chromium or playwright is still missing" >&2; exit 1; }
echo "browser: $(command -v chromium), playwright $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
