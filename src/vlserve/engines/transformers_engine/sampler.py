"""Next-token choice for a batch of sequences, each with its own sampling parameters and random generator.

Penalties follow the OpenAI/vLLM meaning: repetition_penalty divides positive (multiplies negative) logits of every
token seen in prompt or output; presence/frequency penalties subtract from logits of tokens already generated.
A seeded sequence samples from its own torch.Generator, so its tokens do not depend on its batch neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from vlserve.engines.base import SamplingParams


@dataclass
class SequenceSampler:
    params: SamplingParams
    generator: torch.Generator | None
    prompt_ids: torch.Tensor | None = None  # unique prompt ids, only for repetition_penalty
    counts: torch.Tensor | None = None  # [vocab] output token counts, only when a penalty needs them
    output: list[int] = field(default_factory=list)

    @classmethod
    def create(
        cls, params: SamplingParams, prompt_ids: list[int], vocab_size: int, choice: int,
        device: torch.device | str = "cpu",
    ) -> SequenceSampler:  # fmt: skip
        """The state lives where the logits will (`device`): a CUDA generator samples CUDA probabilities."""
        import torch

        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=device).manual_seed(int(params.seed) + choice)
        uses_counts = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0 or _rep(params)
        return cls(
            params,
            generator,
            prompt_ids=torch.tensor(sorted(set(prompt_ids)), dtype=torch.long, device=device) if _rep(params) else None,
            counts=torch.zeros(vocab_size, dtype=torch.float32, device=device) if uses_counts else None,
        )

    @property
    def plain_greedy(self) -> bool:
        return self.params.greedy and self.counts is None

    def record(self, token: int) -> None:
        self.output.append(token)
        if self.counts is not None:
            self.counts[token] += 1

    def choose(self, logits: torch.Tensor) -> int:
        """One token from float32 logits [vocab] (modified in place)."""
        import torch

        self._penalise(logits)
        p = self.params
        if p.greedy:
            return int(torch.argmax(logits))
        if p.temperature != 1.0:
            logits.div_(p.temperature)
        if 0 < p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits.masked_fill_(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            probs = _top_p(probs, p.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _penalise(self, logits: torch.Tensor) -> None:
        p = self.params
        if self.counts is None:
            return
        if _rep(p):
            seen = self.counts > 0
            seen[self.prompt_ids] = True
            picked = logits[seen]
            logits[seen] = _repetition_scaled(picked, p.repetition_penalty)
        if p.frequency_penalty:
            logits.sub_(self.counts * p.frequency_penalty)
        if p.presence_penalty:
            logits.sub_((self.counts > 0).float() * p.presence_penalty)


def _rep(params: SamplingParams) -> bool:
    return params.repetition_penalty != 1.0


def _repetition_scaled(values: torch.Tensor, penalty: float) -> torch.Tensor:
    import torch

    return torch.where(values > 0, values / penalty, values * penalty)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (always at least one)."""
    import torch

    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    drop = cumulative - sorted_probs >= top_p
    sorted_probs[drop] = 0.0
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum()


def choose_batch(samplers: list[SequenceSampler], logits: torch.Tensor) -> list[int]:
    """Next token per row of float32 logits [B, vocab]; one argmax for the rows that are plain greedy."""
    import torch

    greedy = [i for i, s in enumerate(samplers) if s.plain_greedy]
    tokens = [0] * len(samplers)
    if greedy:
        picks = torch.argmax(logits[greedy] if len(greedy) < len(samplers) else logits, dim=-1).tolist()
        for i, t in zip(greedy, picks, strict=True):
            tokens[i] = t
    for i, sampler in enumerate(samplers):
        if not sampler.plain_greedy:
            tokens[i] = sampler.choose(logits[i])
    return tokens
