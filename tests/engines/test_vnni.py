"""The int4 x int8 VNNI kernel's plumbing (vnni.py): its layout round-trips the quantized weight, all-zero and empty
inputs are exact, a broken cached library is rebuilt and a good one reused, and where it cannot run it says
why. Its products against the dequantized weight are checked with the other kernels' in test_weight_only.py."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine import vnni

needs_kernel = pytest.mark.skipif(vnni.unavailable() is not None, reason=f"int4 VNNI kernel: {vnni.unavailable()}")


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


@needs_kernel
def test_zero_and_empty_inputs_are_exact():
    q, step, low = _quantized(64, 128, 64)
    packed, scales_mins = vnni.pack(q, step, low)
    zeros = vnni.mm(torch.zeros(3, 128, dtype=torch.bfloat16), packed, scales_mins, 64)
    assert torch.equal(zeros, torch.zeros(3, 64, dtype=torch.bfloat16))  # no 0/0 from an all-zero group
    assert vnni.mm(torch.zeros(0, 128, dtype=torch.bfloat16), packed, scales_mins, 64).shape == (0, 64)


@needs_kernel
def test_a_nan_or_infinite_activation_reaches_its_row_only():
    """As in a float product: the row with a NaN or an infinity gives NaN, the other rows are untouched."""
    q, step, low = _quantized(64, 128, 64)
    packed, scales_mins = vnni.pack(q, step, low)
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    clean = vnni.mm(x, packed, scales_mins, 64)
    for bad in (float("nan"), float("inf")):
        poisoned = x.clone()
        poisoned[1, 5] = bad
        y = vnni.mm(poisoned, packed, scales_mins, 64)
        assert y[1].isnan().all() and torch.equal(y[0], clean[0]) and torch.equal(y[2], clean[2])


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
    assert vnni._load(compiler).int4_vnni_mm is not None
    assert "does not load" in caplog.text and target.read_bytes()[:4] == b"\x7fELF"
    assert list(target.parent.iterdir()) == [target]  # no leftovers of the build
    built = target.stat()
    vnni._load(compiler)
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)  # not rebuilt


def test_says_why_it_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VLSERVE_HOME", str(tmp_path))
    try:
        vnni._library.cache_clear()
        monkeypatch.setattr(vnni, "_cpu_flags", lambda: frozenset({"avx512f"}))
        assert vnni.unavailable() == "the CPU lacks avx512bw, avx512vl, avx512_vnni, avx512_bf16"
        assert not vnni.usable(64, 128, 64)
        vnni._library.cache_clear()
        monkeypatch.setattr(vnni, "_cpu_flags", lambda: frozenset(vnni.CPU_FLAGS))
        monkeypatch.setenv("CC", "/nonexistent/cc")
        assert vnni.unavailable().startswith("build failed:")
    finally:
        monkeypatch.undo()
        vnni._library.cache_clear()
