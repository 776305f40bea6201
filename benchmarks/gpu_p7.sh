#!/usr/bin/env bash
# P7 (GPU only): the vLLM engine through vlserve vs vLLM's own OpenAI server on the full-size InternVL2.5-8B
# architecture (random weights), one CUDA GPU, side by side. Budget: under 8 minutes (writing the ~16 GB 8B twin
# ~2 min, both servers loading ~2 min, c=1 and c=8 with 2 repeats each ~3 min).
#
# Needs: a venv with vlserve and vLLM's CUDA build (scripts/setup.sh, then scripts/install-vllm.sh on the GPU
# machine), ~20 GB free disk in the work folder, one GPU with >= 40 GB.
# Writes: $OUT (or benchmarks/.work/gpu)/RESULTS-P7.md, p7-results.json (every figure), gpu.csv (the card).
#
#   VLSERVE_BENCH_VLLM_PYTHON  interpreter with vLLM (default .venv/bin/python)
#   VLSERVE_BENCH_WORK         work folder for the 8B twin and logs (default benchmarks/.work)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${VLSERVE_BENCH_VLLM_PYTHON:-.venv/bin/python}
WORK=${VLSERVE_BENCH_WORK:-benchmarks/.work}
DEST=${OUT:-benchmarks/.work/gpu}
mkdir -p "$DEST" "$WORK"

if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "gpu_p7.sh: no GPU listed by nvidia-smi; P7 runs only on a GPU machine" >&2
  exit 2
fi
if ! "$PY" -c "import vllm, torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "gpu_p7.sh: $PY cannot import vLLM with CUDA; run scripts/install-vllm.sh (or set VLSERVE_BENCH_VLLM_PYTHON)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$DEST/gpu.csv"
# vLLM's CUDA sampler imports FlashInfer whenever it is allowed to (vLLM 0.25: the engine core then dies at start
# without it). pip installs it with vLLM; a hand-carried vLLM may lack it, and then PyTorch's sampler is used.
if ! "$PY" -c "import flashinfer" 2>/dev/null; then
  export VLLM_USE_FLASHINFER_SAMPLER=0
fi

status=0
timeout 470 "$PY" -m benchmarks run --only P7 --repeats 2 --work "$WORK" --results "$DEST/RESULTS-P7.md" \
  --vllm-python "$PY" || status=$?
cp "$WORK/results-full.json" "$DEST/p7-results.json" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "gpu_p7.sh: the run ended with status $status; server logs are in $WORK/logs" >&2
  tail -n 40 "$WORK"/logs/*.log 2>/dev/null | tail -n 80 >&2 || true
fi
exit "$status"
