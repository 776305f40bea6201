"""One request's prefill as a sequence of small units of work, so the scheduler can interleave it with decode steps.

The steps, in order:
1. Reuse: the longest cached prompt prefix this prompt shares (caches.PrefixCache) seeds its K/V.
2. Images: each image not inside the reused prefix takes its features from the encoder cache, or runs the family's
   vision encoder unit by unit (one encoder layer over one tile) and then fills the cache.
3. Text: the prompt after the reused prefix runs through the language model in chunks of `chunk` tokens, aligned to
   multiples of `chunk` from the prompt's start; every chunk is one unit.
The logits of the last position and the prompt's K/V are the result; the K/V also go to the prefix cache.

Units and chunks are fixed by the prompt, never by timing or by what else runs, so a prompt's K/V and first logits
are the same bits whether it was sliced, reused a prefix, or ran alone (batched == solo holds).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlserve.engines.transformers_engine.caches import EncoderCache, PrefixCache, image_runs

if TYPE_CHECKING:
    import torch

    from vlserve.engines.transformers_engine.scheduler import Job, ModelParts


@dataclass(frozen=True)
class PrefillTools:
    """What every prefill shares: the model, the family's vision steps and the caches."""

    parts: ModelParts
    family: Any  # the family's Transformers adapter: image_feature_steps, image_token_id
    encoder_cache: EncoderCache
    prefix_cache: PrefixCache
    chunk: int  # language-model tokens per unit (and the prefix cache's reuse granularity)

    @property
    def image_token(self) -> int:
        return self.family.image_token_id(self.parts.model)


class Prefill:
    def __init__(self, job: Job, tools: PrefillTools) -> None:
        self.job, self.tools = job, tools
        self.logits: torch.Tensor | None = None  # float32 [vocab], the last prompt position's
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer K, V: [1, kv_heads, L, dim]
        self.reused = 0  # prompt tokens taken from the prefix cache
        self.units = 0
        self._steps = self._run()

    def advance(self, deadline: float | None = None) -> bool:
        """Run units until the prefill is done (True) or `time.perf_counter()` passes `deadline` (False)."""
        device = self.tools.parts.input_device
        for _ in self._steps:
            self.units += 1
            if deadline is not None and device.type == "cuda":
                import torch

                torch.cuda.synchronize(device)  # the clock must see the unit's work, not only its launch
            if deadline is not None and time.perf_counter() >= deadline:
                return False
        return True

    def _run(self) -> Generator[None, None, None]:
        from transformers import DynamicCache

        tools, ids = self.tools, self.job.prompt_ids
        images = self._images()
        placed = [(start, key) for start, _, key, _ in images]  # what the prefix cache compares
        entry, self.reused = tools.prefix_cache.match(ids, placed)
        kv = DynamicCache(config=tools.parts.model.config.get_text_config())
        for index, (keys, values) in enumerate(entry.layers if entry is not None else ()):
            kv.update(keys[:, :, : self.reused], values[:, :, : self.reused], index)
        features = []
        for start, length, key, pixels in images:
            if start + length > self.reused:
                got = yield from self._features(key, pixels)
                if got.shape[0] != length:
                    raise RuntimeError(f"an image has {length} tokens in the prompt but {got.shape[0]} features")
                features.append((start, got))
        hidden = yield from self._text(kv, features)
        self.logits = tools.parts.lm_head(hidden[:, -1]).float()[0]
        self.layers = [(layer.keys, layer.values) for layer in kv.layers]
        tools.prefix_cache.put(ids, placed, self.layers)

    def _images(self) -> list[tuple[int, int, str, Any]]:
        """(start, tokens, key, pixels) per image, pairing the prompt's image-token runs with the family's records."""
        records = self.job.images
        runs = image_runs(self.job.prompt_ids, self.tools.image_token) if records else []
        if len(runs) != len(records):
            raise RuntimeError(f"the prompt has {len(runs)} image-token runs for {len(records)} images")
        return [(start, length, r.key, r.pixel_values) for (start, length), r in zip(runs, records, strict=True)]

    def _features(self, key: str, pixels: Any) -> Generator[None, None, torch.Tensor]:
        tools = self.tools
        cached = tools.encoder_cache.get(key)
        if cached is not None:
            return cached
        features = yield from tools.family.image_feature_steps(tools.parts.model, pixels)
        tools.encoder_cache.put(key, features)
        return features

    def _text(self, kv: Any, features: list) -> Generator[None, None, torch.Tensor]:
        """The prompt after the reused prefix through the language model, chunk by chunk; the last hidden states."""
        import torch

        p, chunk, done = self.tools.parts, self.tools.chunk, self.reused
        ids = torch.tensor([self.job.prompt_ids[done:]], dtype=torch.long, device=p.input_device)
        embeds = p.embed(ids)
        for start, rows in features:  # image features over their tokens' embeddings (past the reused prefix)
            skip = max(0, done - start)
            embeds[0, start + skip - done : start + len(rows) - done] = rows[skip:].to(embeds.device, embeds.dtype)
        hidden = None
        for begin in range(done, len(self.job.prompt_ids), chunk):
            end = min(begin + chunk, len(self.job.prompt_ids))
            positions = torch.arange(begin, end, device=p.input_device)[None]
            hidden = p.chunk(embeds[:, begin - done : end - done], positions, kv)
            yield
        return hidden
