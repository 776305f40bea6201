"""Engine-neutral requests to vLLM and back: SamplingParams mapped 1:1, vLLM's DELTA outputs turned into `Delta`s."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from vlserve.engines.base import Delta, FinishReason, SamplingParams, TokenLogprob, completion_budget
from vlserve.errors import InvalidRequest

if TYPE_CHECKING:
    from vllm.outputs import RequestOutput

_FINISH: dict[str | None, FinishReason | None] = {None: None, "stop": "stop", "length": "length", "abort": "abort"}


def check_request(sampling: SamplingParams, prompt_tokens: int, max_model_len: int, max_num_seqs: int) -> int:
    """Refuse what vLLM would refuse later with a less helpful message; returns max_tokens capped to fit."""
    if not 1 <= sampling.n <= max_num_seqs:
        raise InvalidRequest(f"n must be between 1 and {max_num_seqs} (max_num_seqs)", param="n")
    return completion_budget(sampling, prompt_tokens, max_model_len)


def vllm_sampling(sampling: SamplingParams, max_tokens: int, stop_token_ids: Sequence[int]) -> Any:
    """vLLM SamplingParams with the same meaning; stop ids apply unless the request ignores EOS (benchmarks)."""
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    try:
        return VllmSamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0 if sampling.top_k in (-1, 0) else sampling.top_k,
            repetition_penalty=sampling.repetition_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            stop_token_ids=[] if sampling.ignore_eos else list(stop_token_ids),
            ignore_eos=sampling.ignore_eos,
            max_tokens=max_tokens,
            logprobs=sampling.logprobs,  # vLLM's default logprobs mode: log-softmax of the raw logits, as ours
            structured_outputs=_structured(sampling),
            output_kind=RequestOutputKind.DELTA,
        )
    except ValueError as exc:  # vLLM validates ranges (e.g. top_p in (0, 1]); its message names the field
        raise InvalidRequest(f"invalid sampling parameters: {exc}") from None


def _structured(sampling: SamplingParams) -> Any:
    """vLLM's own structured outputs for the request's guide (compact JSON, as the Transformers engine's)."""
    guide = sampling.guide
    if guide is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if guide.kind == "json":
        return StructuredOutputsParams(json=guide.spec, disable_any_whitespace=True)
    if guide.kind == "json_object":
        return StructuredOutputsParams(json_object=True, disable_any_whitespace=True)
    return StructuredOutputsParams(regex=guide.spec)


class DeltaMaker:
    """Turns one request's stream of vLLM RequestOutputs (DELTA kind) into `Delta`s with cumulative counts."""

    def __init__(self, logprobs: int | None = None) -> None:
        self.logprobs = logprobs or 0  # alternatives asked per token
        self.completion_tokens: dict[int, int] = {}
        self.prompt_tokens = 0

    def deltas(self, output: RequestOutput) -> Iterator[Delta]:
        if output.prompt_token_ids:
            self.prompt_tokens = len(output.prompt_token_ids)  # image context tokens included
        for choice in output.outputs:
            ids = tuple(choice.token_ids)
            count = self.completion_tokens.get(choice.index, 0) + len(ids)
            self.completion_tokens[choice.index] = count
            finish = _FINISH.get(choice.finish_reason, "error") if choice.finish_reason else None
            if not ids and not choice.text and finish is None:
                continue
            logprobs = tuple(_entries(ids, choice.logprobs, self.logprobs)) if choice.logprobs else ()
            yield Delta(choice.index, choice.text, ids, finish, self.prompt_tokens, count, logprobs)


def _entries(ids: Sequence[int], steps: Sequence[dict[int, Any]], k: int) -> Iterator[TokenLogprob]:
    """vLLM's per-token {id: Logprob(logprob, rank, decoded_token)} (the top k by rank, plus the chosen token) as
    TokenLogprobs, the k alternatives most likely first."""
    for token, step in zip(ids, steps, strict=True):
        chosen = step[token]
        top = sorted((e.rank, i, e.decoded_token or "", e.logprob) for i, e in step.items() if e.rank and e.rank <= k)
        yield TokenLogprob(token, chosen.decoded_token or "", chosen.logprob, tuple((i, t, lp) for _, i, t, lp in top))
