"""P5's measurement, run in a fresh interpreter per load: `python -m benchmarks.memory_worker DIR QUANTIZATION`.

Prints one JSON line: RSS of the bare interpreter with torch imported, after importing the engine's libraries,
after the engine loaded the model, and after every page of every weight was read once (also its anonymous part,
RssAnon); the peak RSS; and the bytes of the tensors torch holds for the model. Before every reading the garbage
collector runs and glibc returns freed heap pages (malloc_trim), so transient buffers of the load do not count.

Why page in: weights the engine keeps in the checkpoint's dtype stay memory-mapped from the safetensors files and
become resident only when first read (the first request), so RSS right after load understates what serving needs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _settled_rss() -> int:
    from vlserve.engines.transformers_engine.heap import release_freed_heap

    release_freed_heap()  # where there is no glibc: measured as is
    return _status_bytes("VmRSS")


def _tensor_bytes(model) -> int:
    """Parameters and buffers as torch sees them (bitsandbytes' scale/absmax state lives outside and is not counted)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = id(tensor) if tensor.is_mkldnn else tensor.data_ptr()  # oneDNN-packed weights expose no data pointer
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def _page_in(model) -> None:
    """Read one value per 4 KiB page of every parameter and buffer (fault in lazily mapped weights)."""
    import torch

    with torch.inference_mode():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_mkldnn:  # written by oneDNN at load (anonymous memory, resident already)
                continue
            flat = tensor.detach().reshape(-1)
            if flat.numel():
                flat[:: max(1, 4096 // tensor.element_size())].float().sum()


def measure(model_dir: Path, quantization: str) -> dict[str, int]:
    import torch  # the baseline is "the bare interpreter with torch imported"

    bare = _settled_rss()
    bare_anon = _status_bytes("RssAnon")
    import transformers  # noqa: F401
    # the model classes' code (~175 MiB of imports) is library memory, like transformers itself: import it before
    # the baseline reading so that it does not count as the model's
    from transformers import InternVLForConditionalGeneration, LlamaForCausalLM, Qwen2ForCausalLM  # noqa: F401

    from benchmarks.models import PreparedModel, resolved
    from vlserve.engines import get_factory

    if quantization in ("8-bit", "4-bit"):
        import bitsandbytes  # noqa: F401
    from vlserve.engines.transformers_engine import cpu_linears

    cpu_linears.pick(torch.bfloat16)  # imports the CPU linear library the engine will use (zentorch: ~70 MiB)
    spec = resolved(PreparedModel("1B full-size", model_dir, True), quantization)
    engine = get_factory("Transformers").create(spec, model_dir, {})
    imported = _settled_rss()
    asyncio.run(engine.load())
    loaded = _settled_rss()
    _page_in(engine.model)
    paged_in = _settled_rss()
    return {"bare_torch": bare, "bare_torch_anon": bare_anon, "libraries_imported": imported, "loaded": loaded,
            "paged_in": paged_in, "paged_in_anon": _status_bytes("RssAnon"), "peak": _status_bytes("VmHWM"),
            "tensor_bytes": _tensor_bytes(engine.model)}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2])))
