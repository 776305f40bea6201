"""A slot KV cache for continuous batching with transformers' decoder layers.

Per layer, K and V live in one preallocated buffer [slots, kv_heads, capacity, head_dim]. Active sequences occupy
slots 0..B-1 (kept compact: a finished sequence's slot is refilled by moving the last one in), each with its own
length. A decode step writes every sequence's new K/V at its own position in place and hands attention a view
`buffer[:B, :, :max_len]` (no copy, no re-stacking) plus a [B, 1, 1, max_len] mask hiding each row's unused tail.
Capacity grows geometrically (one copy, rare) up to `max_len`.

The object duck-types the one method transformers' attention layers call on a cache: `update(k, v, layer_idx)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_ROUND = 256


class SlotKVCache:
    def __init__(self, layer_devices: Sequence[torch.device], kv_heads: int, head_dim: int, dtype: torch.dtype,
                 slots: int, max_len: int) -> None:  # fmt: skip
        self.layer_devices = list(layer_devices)
        self.kv_heads, self.head_dim, self.dtype = kv_heads, head_dim, dtype
        self.slots, self.max_len = slots, max_len
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []  # tokens cached per active slot
        self._step_lengths: torch.Tensor | None = None  # set by begin_step
        self._step_rows: torch.Tensor | None = None
        self._step_view = 0

    # ------------------------------------------------------------ bookkeeping

    @property
    def active(self) -> int:
        return len(self.lengths)

    def ensure_capacity(self, needed: int) -> None:
        """Grow every buffer so each slot holds `needed` tokens (zero-filled: masked positions must stay finite)."""
        import torch

        if needed <= self.capacity:
            return
        if needed > self.max_len:
            raise ValueError(f"sequence of {needed} tokens exceeds max_model_len {self.max_len}")
        new_cap = min(self.max_len, max(needed, 2 * self.capacity, _ROUND))
        new_cap = min(self.max_len, -(-new_cap // _ROUND) * _ROUND)
        shape = (self.slots, self.kv_heads, new_cap, self.head_dim)
        for i, device in enumerate(self.layer_devices):
            k = torch.zeros(shape, dtype=self.dtype, device=device)
            v = torch.zeros(shape, dtype=self.dtype, device=device)
            if self.capacity:
                k[:, :, : self.capacity].copy_(self.keys[i])
                v[:, :, : self.capacity].copy_(self.values[i])
                self.keys[i], self.values[i] = k, v
            else:
                self.keys.append(k)
                self.values.append(v)
        self.capacity = new_cap

    def add(self, layer_kv: Sequence[tuple[torch.Tensor, torch.Tensor]], copies: int = 1) -> list[int]:
        """Copy a prefilled sequence's per-layer K/V ([1, kv_heads, L, head_dim]) into `copies` free slots."""
        length = layer_kv[0][0].shape[-2]
        if self.active + copies > self.slots:
            raise ValueError("no free cache slot")
        self.ensure_capacity(length + 1)
        first = self.active
        for i, (k, v) in enumerate(layer_kv):
            self.keys[i][first : first + copies, :, :length].copy_(k[0].to(self.keys[i].device))
            self.values[i][first : first + copies, :, :length].copy_(v[0].to(self.values[i].device))
        self.lengths.extend([length] * copies)
        return list(range(first, first + copies))

    def remove(self, slot: int) -> int | None:
        """Free `slot`; the last active slot moves into it. Returns the slot index that moved (or None)."""
        last = self.active - 1
        moved = None
        if slot != last:
            n = self.lengths[last]
            for k in self.keys + self.values:
                k[slot, :, :n].copy_(k[last, :, :n])
            self.lengths[slot] = self.lengths[last]
            moved = last
        self.lengths.pop()
        return moved

    # ------------------------------------------------------------ one decode step

    def begin_step(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepare a one-token step for all active slots: returns (position_ids [B, 1], attention mask [B,1,1,L])."""
        import torch

        self.ensure_capacity(max(self.lengths) + 1)
        lengths = torch.tensor(self.lengths, dtype=torch.long)
        view = int(lengths.max()) + 1
        mask = torch.arange(view)[None, :] <= lengths[:, None]
        self._step_lengths = lengths
        self._step_rows = torch.arange(len(self.lengths))
        self._step_view = view
        self._per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        return lengths[:, None].to(device), mask[:, None, None, :].to(device)

    def end_step(self) -> None:
        self.lengths = [n + 1 for n in self.lengths]
        self._step_lengths = None

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        got = self._per_device.get(device)
        if got is None:
            got = (self._step_rows.to(device), self._step_lengths.to(device))
            self._per_device[device] = got
        return got

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Called by each attention layer: store this step's K/V, return the active slots' K/V up to the step view."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        rows, positions = self._indices(keys.device)
        keys[rows, :, positions] = key_states[:, :, 0].to(keys.dtype)
        values[rows, :, positions] = value_states[:, :, 0].to(values.dtype)
        batch, view = rows.shape[0], self._step_view
        return keys[:batch, :, :view], values[:batch, :, :view]
