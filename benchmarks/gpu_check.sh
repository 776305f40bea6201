#!/usr/bin/env bash
# GPU checks of the Transformers engine on a CUDA machine, one prepared run (~6 minutes):
#   1. the tests marked gpu (int4 kernels, the AWQ model on them, the engine on cuda);
#   2. the Transformers engine test module with its engines on the GPU (VLSERVE_TEST_DEVICE=cuda): batched greedy
#      equals unbatched, sampling, stop strings, streaming, abort, bitsandbytes 8-bit/4-bit and AWQ Int4 on the GPU;
#   3. benchmarks.gpu_transformers: batch-1 decode vs the GPU's bandwidth bound and the P2 workload, full-size 1B.
# Needs a python with CUDA torch and vlserve's dependencies (scripts/setup.sh, or PYTHONPATH=src when the machine
# already holds them). Writes logs and figures to $OUT (or benchmarks/.work/gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${VLSERVE_GPU_PYTHON:-python3}
DEST=${OUT:-benchmarks/.work/gpu}
mkdir -p "$DEST"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$DEST/gpu.csv"; then
  echo "gpu_check.sh: no GPU (nvidia-smi failed)" >&2
  exit 2
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
TESTS=(tests/engines/test_int4.py tests/engines/test_transformers_engine.py tests/families/internvl2_5/test_convert.py)
status=0
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs "${TESTS[@]}" 2>&1 | tee "$DEST/pytest-gpu.log" || status=1
VLSERVE_TEST_DEVICE=cuda timeout 200 "$PY" -m pytest -q -p no:cacheprovider -k "not video and not every_architecture" \
  tests/engines/test_transformers_engine.py 2>&1 | tee "$DEST/pytest-engine-cuda.log" || status=1
timeout 240 "$PY" -m benchmarks.gpu_transformers "$DEST" 2>&1 | tee "$DEST/bench.log" || status=1
exit $status
