"""The Engine protocol and the engine-neutral request/response records every engine speaks (the messages
themselves are in vlserve.messages, shared with the model families).

An engine owns one loaded model. The serving layer turns API requests into `GenerateRequest`s (images already
decoded to PIL, sampling already validated) and consumes the `Delta` stream an engine yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from vlserve.errors import InvalidRequest
from vlserve.messages import ChatMessage

if TYPE_CHECKING:
    from vlserve.registry import ResolvedSpec

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True)
class Guide:
    """A constraint on the output (structured output): `json` (spec: a JSON schema's text), `json_object` (any
    JSON object) or `regex` (spec: the pattern). `param` names the request field it came from, for errors."""

    kind: str
    spec: str = ""
    param: str = "response_format"


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    ignore_eos: bool = False  # benchmarks: fixed output length
    strict_max_tokens: bool = False  # the caller chose max_tokens: refuse, not shorten, when it does not fit
    logprobs: int | None = None  # None: off; k >= 0: each output token's logprob and its k most likely alternatives
    guide: Guide | None = None  # structured output

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def completion_budget(sampling: SamplingParams, prompt_tokens: int, max_model_len: int) -> int:
    """The most tokens this request may generate: its max_tokens, shortened to the context left after the prompt
    unless the caller chose max_tokens (then a request that does not fit is refused, stating the numbers)."""
    if prompt_tokens >= max_model_len:
        raise InvalidRequest(f"the prompt has {prompt_tokens} tokens (images included) but this model serves at most "
                             f"{max_model_len}; send fewer or smaller images or less text", param="messages")  # fmt: skip
    if sampling.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    room = max_model_len - prompt_tokens
    if sampling.strict_max_tokens and sampling.max_tokens > room:
        raise InvalidRequest(f"the prompt has {prompt_tokens} tokens (images included) and max_tokens is "
                             f"{sampling.max_tokens}: {prompt_tokens + sampling.max_tokens} > this model's context of "
                             f"{max_model_len} tokens; ask for at most {room} tokens", param="max_tokens")  # fmt: skip
    return min(sampling.max_tokens, room)


@dataclass(frozen=True)
class GenerateRequest:
    """A chat (`messages`, rendered with the family's template) or, when `prompt` is set, raw text given to the
    model as it is (`/v1/completions`: the tokenizer's own special tokens, no template, no images)."""

    request_id: str
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    prompt: str | None = None


def raw_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """A raw prompt's token ids, as every engine tokenizes it (with the tokenizer's own BOS where it has one)."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not ids:
        raise InvalidRequest("the prompt is empty; send some text", param="prompt")
    return ids


MAX_LOGPROBS = 20  # alternatives per token, as OpenAI allows


@dataclass(frozen=True)
class TokenLogprob:
    """One output token's log-probability under the model's next-token distribution (log-softmax of the raw
    logits, before temperature, penalties or top-k/p), with the `logprobs` most likely tokens of that step."""

    token_id: int
    token: str  # the token's text
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()  # (id, text, logprob), most likely first


@dataclass(frozen=True)
class Delta:
    """A piece of one choice's output. The last delta of a choice has `finish_reason` set."""

    index: int  # choice index, 0 .. n-1
    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0  # includes image tokens
    completion_tokens: int = 0  # cumulative for this choice
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token of `token_ids` when the request asked for them


@dataclass(frozen=True)
class LoadedModelInfo:
    """What an engine reports after loading: used by describe/list and by the API's context checks."""

    max_model_len: int
    device: str
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """One loaded model. All methods may be called from the server's event loop.

    An engine whose worker can die (a thread, a process) may also have a `failure: str | None` attribute saying
    why it can serve nothing any more, and raise `EngineDead` from `generate`; the host then marks its model
    `error` (terminate and relaunch it)."""

    name: str  # "Transformers" or "vLLM"

    async def load(self) -> LoadedModelInfo: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]: ...

    async def abort(self, request_id: str) -> None: ...

    async def unload(self) -> None: ...


class EngineFactory(Protocol):
    """What an engine module exposes: a check, and a constructor."""

    name: str

    def supports(self, resolved: ResolvedSpec) -> tuple[bool, str]: ...

    def create(self, resolved: ResolvedSpec, model_dir: Path, options: dict[str, Any]) -> Engine: ...
