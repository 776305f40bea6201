#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, start the server, launch an InternVL2.5 model with the
# seed page's flags, ask a question about an image, print the answer, shut down.
#
# Hubs are unreachable here, so by default it launches an architecture twin of InternVL2.5-1B (the real config and
# tokenizer, dimensions shrunk, random weights: it answers fluent-looking nonsense, fast). On a machine with hub
# access, DEMO_REAL=1 launches the real 1B checkpoint instead (downloads ~2 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

work=$(mktemp -d)
export VLSERVE_HOME="$work/home"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export VLSERVE_ENDPOINT="http://127.0.0.1:$port"

vlserve serve --port "$port" --log-level warning > "$work/server.log" 2>&1 &
server=$!
cleanup() {
  rc=$?
  kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true
  [ "$rc" -eq 0 ] || { echo "--- server log ---" >&2; tail -n 40 "$work/server.log" >&2; }
  rm -rf "$work"
}
trap cleanup EXIT
up() { python -c "import urllib.request; urllib.request.urlopen('$VLSERVE_ENDPOINT/health', timeout=1)" 2>/dev/null; }
for _ in $(seq 240); do
  up && break
  kill -0 "$server" 2>/dev/null || { echo "the server exited during start-up" >&2; exit 1; }
  sleep 0.5
done
up || { echo "the server did not answer within 2 minutes" >&2; exit 1; }

extra=()
if [ "${DEMO_REAL:-0}" != 1 ]; then
  vlserve twin --size-in-billions 1 --model-format pytorch "$work/InternVL2_5-1B-twin"
  extra=(--model-path "$work/InternVL2_5-1B-twin")
fi
vlserve launch --model-engine Transformers --model-name InternVL2.5 --size-in-billions 1 \
  --model-format pytorch --quantization none --model-uid demo "${extra[@]}"

python - "$work/cat.png" <<'PY'
import sys
from PIL import Image, ImageDraw
img = Image.new("RGB", (640, 480), "white")
draw = ImageDraw.Draw(img)
draw.ellipse((170, 90, 470, 390), fill="orange")
draw.rectangle((40, 400, 600, 440), fill="steelblue")
img.save(sys.argv[1])
PY
echo "Q: What is in this image?"
printf 'A: '
vlserve chat --model-uid demo --image "$work/cat.png" -m "What is in this image?" --max-tokens 32 --temperature 0
vlserve terminate --model-uid demo
