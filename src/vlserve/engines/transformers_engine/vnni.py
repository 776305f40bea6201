"""Our CPU decode kernels for `4-bit` / AWQ `Int4` (int4 x int8) and `8-bit` (int8 x int8), in kernels/vnni.c, on
CPUs with AVX512-VNNI (+BF16) or, failing that, AVX2 (+FMA), with `cpu_quant auto`. Both read weights in the
"VNNI layout" (4 consecutive input bytes per output feature, 16 features per 64 bytes): `pack` / `pack_int8` make
it, `widen` / `unpack_int8` undo it exactly.

Why our own kernels: decode reads every weight once per step, so an int4 weight should cost a quarter of the
16-bit one and an int8 weight half. PyTorch's int4 and int8 CPU kernels widen each weight to 16 bit and multiply in
floats, and their arithmetic, not memory, bounds them: on the 2-core AMD EPYC machine with AVX512, 10.5-10.9 ms
for the 1B's 24 decoder layers at one row (int4, ~17 GB/s). These quantize the activations to int8 per group (as
llama.cpp does for q4_0 x q8_0 and q8_0 x q8_0) and sum integer products in int32, vpdpbusd on AVX512-VNNI,
vpmaddubsw + vpmaddwd on AVX2. Measured over those 24 layers:

| CPU (2 cores) | rows | bf16 | int8 ours | int4 ours | int4 PyTorch |
|---|---|---|---|---|---|
| AMD EPYC, AVX512 | 1 | 31.8 ms (ZenDNN) | (ZenDNN int8: 11.5) | 6.8-7.6 ms | 10.5-10.9 ms |
| AMD EPYC, AVX512 | 8 | 32.3 ms | (ZenDNN int8: 14.1) | 18 ms | 35 ms |
| AMD EPYC, AVX2 only | 1 | 38 ms (torch) | 12.6-13.5 ms | 9.4-10.6 ms | 28-35 ms |
| AMD EPYC, AVX2 only | 8 | 278-282 ms | 39-41 ms | 32-34 ms | 71 ms |
| AMD EPYC, AVX2 only | 128 | 4.4 s | 0.51 s | 0.39-0.45 s | 1.2-1.7 s |

No library ships such kernels for x86 here: ZenDNN's weight-only int4 product rejects its arguments, its int8
product needs AVX512-VNNI ("cannot perform s8s8s32 gemm" on AVX2), torchao's x86 wheels carry no CPU kernels.
Activations rounded to int8 per group add ~0.6% relative error to a layer's output (the weights' own int4 error
is several times that; tests bound both).

Built on first use with the C compiler (`CC`, else gcc/cc) into VLSERVE_HOME/kernels, for the best instruction set
the CPU has (`isa()`), keyed by the source and flags, and linked to the OpenMP runtime torch loaded (one thread
pool). A file is moved into place only once it is complete, and a cached file that does not load is rebuilt.
Where the CPU has neither instruction set, the compiler is missing or the build fails, `unavailable()` says why
and the layers stay on PyTorch's (or ZenDNN's) kernels.
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

SOURCE = Path(__file__).with_name("kernels") / "vnni.c"
BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp")
ISAS = {  # instruction set -> (the CPU flags it needs, the compiler's flags for it), in order of preference
    "avx512": (("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"),
               ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx512bf16", "-mfma")),
    "avx2": (("avx2", "fma"), ("-mavx2", "-mfma")),
}  # fmt: skip
BLOCK = 16  # output features per block (one AVX512 vector of float32, two AVX2 ones)
MAX_GROUP = 256
INT8_GROUP = 32  # activation values per int8 scale in the int8 kernel, as llama.cpp's q8_0 (64: faster, 5% more error)


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
    return _product("int4", x, packed, scales_mins, group_size)


def usable_int8(out_features: int, in_features: int) -> bool:
    """Whether the int8 kernel takes this shape (and is available here)."""
    return out_features % BLOCK == 0 and in_features % INT8_GROUP == 0 and unavailable() is None


def pack_int8(q: torch.Tensor) -> torch.Tensor:
    """q int8 [N, K] in -127..127 -> the int8 kernel's weight [N/16, K/4, 64] int8 (layout in the C file)."""
    n, k = q.shape
    quads = q.to(torch.int8).view(n // BLOCK, BLOCK, k // 4, 4)
    return quads.permute(0, 2, 1, 3).reshape(n // BLOCK, k // 4, 64).contiguous()


def unpack_int8(packed: torch.Tensor) -> torch.Tensor:
    """The int8 kernel's weight -> q int8 [N, K] (pack_int8 undone, exactly)."""
    blocks, quads, _ = packed.shape
    return packed.view(blocks, quads, BLOCK, 4).permute(0, 2, 1, 3).reshape(blocks * BLOCK, quads * 4)


def mm_int8(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [M, K] bfloat16, scales float32 [N] -> y [M, N] bfloat16."""
    return _product("int8", x, packed, scales, INT8_GROUP)


def _product(kind: str, x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, group: int) -> torch.Tensor:
    """The C kernel `{kind}_vnni_mm` of x (made contiguous) by a packed weight of packed.shape[0] output blocks."""
    function = getattr(_library()[0], f"{kind}_vnni_mm")
    x = x.contiguous()
    rows, k = x.shape
    n = packed.shape[0] * BLOCK
    y = torch.empty(rows, n, dtype=torch.bfloat16)
    if rows and function(x.data_ptr(), rows, k, group, packed.data_ptr(), scales.data_ptr(), n, y.data_ptr(),
                         torch.get_num_threads()):  # fmt: skip
        raise MemoryError(f"{kind} kernel: no memory for the activations' int8 copy")
    return y


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), so that a prefill-sized product is faster
    on a widened 16-bit weight than on these kernels. Without it (AVX2 CPUs) torch's bfloat16 product is ~8x slower
    than the int8 kernel at 128 rows (the table above), so quantized layers never widen there."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def isa() -> str | None:
    """The instruction set the kernels are built for here (`avx512` or `avx2`), or None when the CPU has neither."""
    return next((name for name, (needs, _) in ISAS.items() if set(needs) <= _cpu_flags()), None)


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    if isa() is None:
        wanted = " or ".join(", ".join(needs) for needs, _ in ISAS.values())
        return None, f"the CPU lacks {wanted}"
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        return None, "no C compiler (gcc or CC) to build it"
    try:
        lib = _load(compiler)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or b""
        reason = f"build failed: {exc} {detail.decode(errors='replace')[-500:]}".strip()
        log.warning("VNNI-layout kernels unavailable (%s); 8-bit and 4-bit stay on library kernels", reason)
        return None, reason
    for function in (lib.int4_vnni_mm, lib.int8_vnni_mm):
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]  # fmt: skip
    return lib, None


def _build_command(compiler: str) -> tuple[list[str], Path]:
    """The compiler's command line (without its output) and the cached library it makes."""
    torch_lib = Path(torch.__file__).parent / "lib"
    command = [compiler, *BASE_FLAGS, *ISAS[isa()][1], str(SOURCE), f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}"]
    key = hashlib.sha256(SOURCE.read_bytes() + "\0".join(command).encode()).hexdigest()[:16]
    return command, settings.kernels_dir() / f"vnni-{isa()}-{key}.so"


def _load(compiler: str) -> ctypes.CDLL:
    """The built library from the cache, building it (again) when absent or when the cached file does not load."""
    command, target = _build_command(compiler)
    if target.exists():
        try:
            return ctypes.CDLL(str(target))
        except OSError as exc:
            log.warning("cached kernels %s do not load (%s); rebuilding them", target, exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([*command, "-o", str(built)], check=True, capture_output=True, timeout=300)
        os.replace(built, target)  # whole or not at all: a concurrent or interrupted build never leaves half a file
    log.info("built the VNNI-layout kernels: %s", target)
    return ctypes.CDLL(str(target))


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            line = next((line for line in info if line.startswith("flags")), "")
    except OSError:  # not Linux
        return frozenset()
    return frozenset(line.partition(":")[2].split())
