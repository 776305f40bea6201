"""Sibling projections that read the same input (attention q/k/v, MLP gate/up) computed as one product.

A batch-1 decode step is a run of matrix-vector products whose speed is how fast each streams its weights; on the
2-core machine oneDNN streams one [896 -> 9728] product at 29-31 GB/s where the two [896 -> 4864] products it
replaces reach 24-26 (and q/k/v's three small ones pay a start-up each): one step's decoder products of the full-size
1B architecture take 24 ms fused against 29 ms apart. Results are those of the separate products (the tests compare).

How: the group's weights (and biases) are concatenated into one `nn.Linear`; each former member becomes a `Slice`
of it. The first member called with an input computes the whole product and keeps it until the group's last member
has read its slice, so the model code (which calls `q_proj(x)`, `k_proj(x)`, `v_proj(x)` in turn) is unchanged. A
member called with any other input tensor computes the product for that input itself, so an unexpected call order
costs time, never correctness. Model-family neutral: groups are found by the member names the transformers decoders
(Llama, Qwen2, and InternLM2 once translated to Llama) share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@dataclass(slots=True)
class _Latest:
    """The latest input and its product (a plain object: setting nn.Module attributes costs ~4 µs each)."""

    input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    reads: int = 0


class SharedProduct(torch.nn.Module):
    """One product for the whole group; remembers its latest input's result until the last member took its part."""

    def __init__(self, linear: torch.nn.Linear, members: int) -> None:
        super().__init__()
        self.linear, self.members = linear, members
        self.latest = _Latest()

    def part(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        latest = self.latest
        if x is not latest.input:
            latest.input, latest.output, latest.reads = x, self.linear(x), 0
        out = latest.output[..., start:stop]
        latest.reads += 1
        if latest.reads == self.members:  # every member has its part: let go of the input and the whole result
            latest.input = latest.output = None
        return out


class Slice(torch.nn.Module):
    """Stands in for one member of a fused group: its columns of the shared product."""

    def __init__(self, shared: SharedProduct, start: int, stop: int) -> None:
        super().__init__()
        self.shared, self.start, self.stop = shared, start, stop
        self.in_features, self.out_features = shared.linear.in_features, stop - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.part(x, self.start, self.stop)

    def extra_repr(self) -> str:
        return f"columns {self.start}:{self.stop} of a fused product"


def fuse_siblings(model: torch.nn.Module) -> int:
    """Fuse every group of GROUPS found under one parent module whose members are plain `nn.Linear` layers with the
    same input size, dtype, device and bias presence; returns how many groups were fused."""
    fused = 0
    for parent in list(model.modules()):
        for names in GROUPS:
            members = [getattr(parent, name, None) for name in names]
            if _fusable(members):
                _fuse(parent, names, members)
                fused += 1
    return fused


def _fusable(members: list) -> bool:
    if not all(type(m) is torch.nn.Linear for m in members):
        return False
    first = members[0]
    return all(
        m.in_features == first.in_features and m.weight.dtype == first.weight.dtype
        and m.weight.device == first.weight.device and (m.bias is None) == (first.bias is None)
        for m in members
    )  # fmt: skip


def _fuse(parent: torch.nn.Module, names: tuple[str, ...], members: list[torch.nn.Linear]) -> None:
    first = members[0]
    with torch.no_grad():
        weight = torch.cat([m.weight for m in members])
        bias = torch.cat([m.bias for m in members]) if first.bias is not None else None
    linear = torch.nn.Linear(first.in_features, weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = torch.nn.Parameter(bias, requires_grad=False)
    shared, start = SharedProduct(linear, len(members)), 0
    for name, member in zip(names, members, strict=True):
        setattr(parent, name, Slice(shared, start, start + member.out_features))
        start += member.out_features
