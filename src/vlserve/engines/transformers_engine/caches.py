"""The two bounded caches that make an image cost its compute once: encoder outputs and prompt K/V prefixes.

`EncoderCache`: the vision tower + projector output of an image, keyed by the image's identity (its pixel key and
tile budget, from the family's encode), least recently used first out when the byte budget is exceeded.

`PrefixCache`: the language model's K/V of recent prompts. A new prompt reuses the longest cached prefix it shares
token for token, where every image inside that prefix is the same image (same key at the same position: image
tokens are all one id, so the ids alone cannot tell two pictures apart). Reuse is cut to a multiple of the prefill
chunk, so the reusing prefill runs exactly the chunks a cold prefill would run after it (the same bits), and always
leaves at least one token to compute (its logits start the answer). A prompt that extends a cached one replaces it.

Neither cache pins anything: an entry is added only when its computation is complete, and a prefill that uses an
entry holds its own references, so eviction or an aborted request never leaves a half-made or locked entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

ImageAt = tuple[int, str]  # (position of the image's first token, its key)
MIB = 1 << 20


@dataclass
class CacheStats:
    budget_bytes: int
    bytes: int = 0
    entries: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    tokens_reused: int = 0  # prefix cache: prompt tokens not recomputed

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class _Lru:
    """Keyed values with a byte size each, evicted least recently used first beyond `budget_bytes`."""

    def __init__(self, budget_bytes: int) -> None:
        self.stats = CacheStats(budget_bytes)
        self._items: OrderedDict[object, tuple[object, int]] = OrderedDict()

    def _touch(self, key: object) -> object | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def _put(self, key: object, value: object, size: int) -> bool:
        if size > self.stats.budget_bytes:
            return False
        self._drop(key)
        self._items[key] = (value, size)
        self.stats.bytes += size
        while self.stats.bytes > self.stats.budget_bytes:
            self._drop(next(iter(self._items)))
            self.stats.evictions += 1
        self.stats.entries = len(self._items)
        return True

    def _drop(self, key: object) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.stats.bytes -= item[1]
            self.stats.entries = len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.stats.bytes = self.stats.entries = 0


class EncoderCache(_Lru):
    def get(self, key: str) -> torch.Tensor | None:
        value = self._touch(key)
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return value

    def put(self, key: str, features: torch.Tensor) -> None:
        self._put(key, features, features.numel() * features.element_size())


@dataclass(eq=False)
class PrefixEntry:
    ids: np.ndarray  # int64 prompt token ids
    images: dict[int, str]  # image start position -> key
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(repr=False)  # per layer K, V: [1, kv_heads, L, dim]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


class PrefixCache(_Lru):
    def __init__(self, budget_bytes: int, block: int) -> None:
        super().__init__(budget_bytes)
        self.block = block

    def match(self, ids: Sequence[int], images: Sequence[ImageAt]) -> tuple[PrefixEntry | None, int]:
        """The entry to reuse and how many leading tokens of `ids` it covers (a multiple of `block`, < len(ids))."""
        wanted = np.asarray(ids, dtype=np.int64)
        best, best_len = None, 0
        for entry in reversed(list(self._items)):  # most recent first: it wins ties
            shared = _shared(entry, wanted, images)
            usable = min(shared, len(wanted) - 1) // self.block * self.block
            if usable > best_len:
                best, best_len = entry, usable
        if best is None:
            self.stats.misses += 1
            return None, 0
        self._touch(best)
        self.stats.hits += 1
        self.stats.tokens_reused += best_len
        return best, best_len

    def put(self, ids: Sequence[int], images: Sequence[ImageAt], layers: list) -> None:
        """Keep a prompt's K/V; entries it extends are dropped, and it is not kept when one extends it."""
        entry = PrefixEntry(np.asarray(ids, dtype=np.int64), dict(images), layers)
        for other in list(self._items):
            shared = _shared(other, entry.ids, images)
            if shared == len(other.ids):  # `other` is a prefix of the new prompt
                self._drop(other)
            elif shared == len(entry.ids):  # the new prompt is a prefix of `other`: nothing to add
                self._touch(other)
                return
        self._put(entry, entry, entry.nbytes)


def _shared(entry: PrefixEntry, ids: np.ndarray, images: Sequence[ImageAt]) -> int:
    """Leading tokens `ids` shares with `entry`, cut before the first image that differs."""
    n = min(len(entry.ids), len(ids))
    differ = np.flatnonzero(entry.ids[:n] != ids[:n])
    shared = int(differ[0]) if differ.size else n
    for start, key in images:
        if start >= shared:
            break
        if entry.images.get(start) != key:
            return start
    return shared


def image_runs(ids: Sequence[int], image_token: int) -> list[tuple[int, int]]:
    """(start, length) of each run of `image_token` in `ids`: one run per image, in order."""
    marks = np.concatenate(([0], (np.asarray(ids) == image_token).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(marks))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
