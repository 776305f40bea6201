"""The int4 x int8 and int8 x int8 kernels' plumbing (vnni.py): their layouts round-trip the quantized weight,
all-zero and empty inputs are exact, a NaN stays in its row, the AVX2 build gives the AVX512 build's results, a
broken cached library is rebuilt and a good one reused, and where they cannot run they say why. Their products
against the dequantized weight are checked with the other kernels' in test_weight_only.py."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine import vnni

needs_kernel = pytest.mark.skipif(vnni.unavailable() is not None, reason=f"VNNI-layout kernels: {vnni.unavailable()}")
BF16 = torch.bfloat16


def _quantized(out_features: int, in_features: int, group_size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    groups = in_features // group_size
    q = torch.randint(0, 16, (out_features, in_features), generator=generator)
    step = (torch.rand(out_features, groups, generator=generator) * 0.01).bfloat16().float()
    low = (torch.randn(out_features, groups, generator=generator) * 0.05).bfloat16().float()
    return q, step, low


@pytest.mark.parametrize(("shape", "group_size"), [((32, 64), 32), ((48, 256), 64), ((1152, 896), 128)])
def test_layout_round_trips_the_quantized_weight(shape, group_size):
    q, step, low = _quantized(*shape, group_size)
    packed, scales_mins = vnni.pack(q, step, low)
    assert packed.dtype == torch.uint8 and packed.shape == (shape[0] // 16, shape[1] // 8, 64)
    assert packed.numel() * 2 == q.numel()  # four bits a weight
    expected = (q.reshape(shape[0], -1, group_size) * step[..., None] + low[..., None]).reshape(shape)
    assert torch.equal(vnni.widen(packed, scales_mins, torch.float32).t(), expected)


def _int8(out_features: int, in_features: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (out_features, in_features), generator=generator, dtype=torch.int8)
    return q, torch.rand(out_features, generator=generator) * 0.01


@pytest.mark.parametrize("shape", [(16, 64), (48, 256), (1152, 896)])
def test_int8_layout_round_trips_the_weight(shape):
    q, _ = _int8(*shape)
    packed = vnni.pack_int8(q)
    assert packed.dtype == torch.int8 and packed.shape == (shape[0] // 16, shape[1] // 4, 64)
    assert torch.equal(vnni.unpack_int8(packed), q)


def _products(kind: str):
    """(weight, product of x) of a small layer on the int4 or the int8 kernel."""
    if kind == "int4":
        packed, scales_mins = vnni.pack(*_quantized(64, 128, 64))
        return lambda x: vnni.mm(x, packed, scales_mins, 64)
    q, scales = _int8(64, 128)
    packed = vnni.pack_int8(q)
    return lambda x: vnni.mm_int8(x, packed, scales)


@needs_kernel
@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_zero_and_empty_inputs_are_exact(kind):
    product = _products(kind)
    assert torch.equal(product(torch.zeros(3, 128, dtype=BF16)), torch.zeros(3, 64, dtype=BF16))  # no 0/0
    assert product(torch.zeros(0, 128, dtype=BF16)).shape == (0, 64)


@needs_kernel
@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_a_nan_or_infinite_activation_reaches_its_row_only(kind):
    """As in a float product: the row with a NaN or an infinity gives NaN, the other rows are untouched."""
    product = _products(kind)
    x = torch.randn(3, 128, dtype=BF16)
    clean = product(x)
    for bad in (float("nan"), float("inf")):
        poisoned = x.clone()
        poisoned[1, 5] = bad
        y = product(poisoned)
        assert y[1].isnan().all() and torch.equal(y[0], clean[0]) and torch.equal(y[2], clean[2])


@needs_kernel
def test_the_avx2_build_gives_the_avx512_builds_results(tmp_path, monkeypatch):
    """Where the CPU has AVX512-VNNI both builds run: the integer sums are the same, and the float32 scaling differs
    only in its order (AVX2 CPUs run the AVX2 build only; this test then checks it against itself)."""
    monkeypatch.setenv("VLSERVE_HOME", str(tmp_path))
    x = torch.randn(5, 896, dtype=BF16)
    int4_weight, (q, scales) = vnni.pack(*_quantized(96, 896, 64)), _int8(96, 896)
    int8_weight = vnni.pack_int8(q)

    def products():
        vnni._library.cache_clear()
        return vnni.mm(x, *int4_weight, 64).float(), vnni.mm_int8(x, int8_weight, scales).float()

    try:
        native = products()
        monkeypatch.setattr(vnni, "_cpu_flags", lambda: frozenset(vnni.ISAS["avx2"][0]))
        assert vnni.isa() == "avx2"
        avx2 = products()
    finally:
        monkeypatch.undo()
        vnni._library.cache_clear()
    for ours, theirs in zip(avx2, native):
        assert (ours - theirs).abs().max() <= 1e-2 * theirs.abs().max()


@needs_kernel
def test_a_broken_cached_library_is_rebuilt_then_reused(tmp_path, monkeypatch, caplog):
    """A cached file that does not load (say, cut short by a full disk) is rebuilt; a good one is reused. A build
    lands by rename, never by writing into a file another process may have mapped."""
    import shutil

    monkeypatch.setenv("VLSERVE_HOME", str(tmp_path))
    compiler = shutil.which("gcc") or shutil.which("cc")
    _, target = vnni._build_command(compiler)
    assert target.parent == tmp_path / "kernels"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a file")
    assert vnni._load(compiler).int8_vnni_mm is not None
    assert "do not load" in caplog.text and target.read_bytes()[:4] == b"\x7fELF"
    assert list(target.parent.iterdir()) == [target]  # no leftovers of the build
    built = target.stat()
    vnni._load(compiler)
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)  # not rebuilt


def test_says_why_it_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VLSERVE_HOME", str(tmp_path))
    try:
        vnni._library.cache_clear()
        monkeypatch.setattr(vnni, "_cpu_flags", lambda: frozenset({"avx512f", "avx"}))
        assert vnni.isa() is None
        assert vnni.unavailable() == ("the CPU lacks avx512f, avx512bw, avx512vl, avx512_vnni, avx512_bf16 or "
                                      "avx2, fma")  # fmt: skip
        assert not vnni.usable(64, 128, 64) and not vnni.usable_int8(64, 128)
        vnni._library.cache_clear()
        monkeypatch.setattr(vnni, "_cpu_flags", lambda: frozenset(vnni.ISAS["avx2"][0]))
        monkeypatch.setenv("CC", "/nonexistent/cc")
        assert vnni.unavailable().startswith("build failed:")
    finally:
        monkeypatch.undo()
        vnni._library.cache_clear()
