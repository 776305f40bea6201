#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
set +e
.venv/bin/python -m pytest -q --durations=25 "$@"  # the slowest tests, to see where CI time goes
rc=$?
set -e
# pytest exits 5 when nothing was collected (e.g. a filter that matches no test): not a failure of the code
[ "$rc" -eq 5 ] && { echo "no tests collected"; exit 0; }
exit "$rc"
