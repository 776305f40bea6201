"""The int4 x int8 product on AVX512-VNNI (kernels/int4_vnni.c): the `4-bit` and AWQ `Int4` decode kernel on CPUs
that have it, with `cpu_quant auto`.

Why our own kernel: decode reads every weight once per step, so an int4 weight should cost a quarter of the 16-bit
one. PyTorch's int4 kernel (`_weight_int4pack_mm_for_cpu`) widens each weight to 16 bit and multiplies in floats,
and its arithmetic, not memory, bounds it: 10.5-10.9 ms for the 1B's 24 decoder layers at one row, ~17 GB/s (the
2-core AMD EPYC machine). This one quantizes the activations to int8 per weight group, as llama.cpp does for
q4_0 x q8_0, and sums int4 x int8 products in int32 with vpdpbusd: 6.8-7.6 ms at one row, and 18 ms against
35 ms at 8 rows. No library ships such a kernel for x86 here: ZenDNN's weight-only int4 product rejects its
arguments on this CPU, torchao's x86 wheels carry no CPU kernels. Activations rounded to int8 per group add
~0.6% relative error to a layer's output (the weights' own int4 error is several times that; tests bound both).

Built on first use with the C compiler (`CC`, else gcc/cc) into VLSERVE_HOME/kernels, keyed by the source and
flags, and linked to the OpenMP runtime torch loaded (one thread pool). A file is moved into place only once it
is complete, and a cached file that does not load is rebuilt. Where the CPU lacks AVX512-VNNI/BF16, the
compiler is missing or the build fails, `unavailable()` says why and the layers stay on PyTorch's kernel.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from vlserve import settings

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "int4_vnni.c"
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni",
         "-mavx512bf16", "-mfma")  # fmt: skip
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16")
BLOCK = 16  # output features per block (one 512-bit vector of float32)
MAX_GROUP = 256


def usable(out_features: int, in_features: int, group_size: int) -> bool:
    """Whether the kernel takes this shape (and is available here)."""
    shape_ok = out_features % BLOCK == 0 and group_size % 8 == 0 and group_size <= MAX_GROUP
    return shape_ok and in_features % group_size == 0 and unavailable() is None


def unavailable() -> str | None:
    """Why the kernel cannot run here, or None when it can."""
    return _library()[1]


def pack(q: torch.Tensor, step: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q int [N, K] in 0..15 and per-group step and low [N, K/g] (w = q * step + low) -> the kernel's weight
    bytes [N/16, K/8, 64] and its bfloat16 scales and mins [N/16, K/g, 32] (layout in the C file)."""
    n, k = q.shape
    nibbles = q.to(torch.uint8).view(n // BLOCK, BLOCK, k // 8, 2, 4)  # block, row j, octet, half, i
    packed = (nibbles[:, :, :, 0] | (nibbles[:, :, :, 1] << 4)).permute(0, 2, 1, 3).reshape(n // BLOCK, k // 8, 64)
    groups = step.shape[1]
    pairs = torch.stack([step.reshape(n // BLOCK, BLOCK, groups), low.reshape(n // BLOCK, BLOCK, groups)], dim=2)
    scales_mins = pairs.permute(0, 3, 2, 1).reshape(n // BLOCK, groups, 2 * BLOCK).to(torch.bfloat16).contiguous()
    return packed, scales_mins


def widen(packed: torch.Tensor, scales_mins: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Wᵀ [K, N] in `dtype` from the kernel's layout (what it multiplies by, exactly)."""
    blocks, octets, _ = packed.shape
    n, k, groups = blocks * BLOCK, octets * 8, scales_mins.shape[1]
    bytes_ = packed.view(blocks, octets, BLOCK, 4)
    codes = torch.stack([bytes_ & 15, bytes_ >> 4], dim=2)  # block, octet, half, row j, i
    codes = codes.permute(1, 2, 4, 0, 3).reshape(k, n).to(dtype)  # 0..15 are exact in 16 bit
    pairs = scales_mins.view(blocks, groups, 2, BLOCK).permute(2, 1, 0, 3).reshape(2, groups, n).to(dtype)
    return torch.addcmul(pairs[1][:, None], codes.view(groups, k // groups, n), pairs[0][:, None]).view(k, n)


def mm(x: torch.Tensor, packed: torch.Tensor, scales_mins: torch.Tensor, group_size: int) -> torch.Tensor:
    """x [M, K] bfloat16 -> y [M, N] bfloat16."""
    lib = _library()[0]
    x = x.contiguous()
    rows, k = x.shape
    n = packed.shape[0] * BLOCK
    y = torch.empty(rows, n, dtype=torch.bfloat16)
    if rows and lib.int4_vnni_mm(x.data_ptr(), rows, k, group_size, packed.data_ptr(), scales_mins.data_ptr(), n,
                                 y.data_ptr(), torch.get_num_threads()):  # fmt: skip
        raise MemoryError("int4 kernel: no memory for the activations' int8 copy")
    return y


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    missing = [flag for flag in CPU_FLAGS if flag not in _cpu_flags()]
    if missing:
        return None, f"the CPU lacks {', '.join(missing)}"
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        return None, "no C compiler (gcc or CC) to build it"
    try:
        lib = _load(compiler)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or b""
        reason = f"build failed: {exc} {detail.decode(errors='replace')[-500:]}".strip()
        log.warning("int4 VNNI kernel unavailable (%s); 4-bit stays on PyTorch's int4 kernel", reason)
        return None, reason
    lib.int4_vnni_mm.restype = ctypes.c_int
    lib.int4_vnni_mm.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]  # fmt: skip
    return lib, None


def _build_command(compiler: str) -> tuple[list[str], Path]:
    """The compiler's command line (without its output) and the cached library it makes."""
    torch_lib = Path(torch.__file__).parent / "lib"
    command = [compiler, *FLAGS, str(SOURCE), f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}"]
    key = hashlib.sha256(SOURCE.read_bytes() + "\0".join(command).encode()).hexdigest()[:16]
    return command, settings.kernels_dir() / f"int4_vnni-{key}.so"


def _load(compiler: str) -> ctypes.CDLL:
    """The built library from the cache, building it (again) when absent or when the cached file does not load."""
    command, target = _build_command(compiler)
    if target.exists():
        try:
            return ctypes.CDLL(str(target))
        except OSError as exc:
            log.warning("cached int4 kernel %s does not load (%s); rebuilding it", target, exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([*command, "-o", str(built)], check=True, capture_output=True, timeout=300)
        os.replace(built, target)  # whole or not at all: a concurrent or interrupted build never leaves half a file
    log.info("built the int4 VNNI kernel: %s", target)
    return ctypes.CDLL(str(target))


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            line = next((line for line in info if line.startswith("flags")), "")
    except OSError:  # not Linux
        return frozenset()
    return frozenset(line.partition(":")[2].split())
