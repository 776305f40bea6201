"""The (legacy) completions service, `POST /v1/completions`: raw text into the model without the chat template, as
xinference-client's `generate`, LangChain's `Xinference` LLM, llama-index `OpenAILike(is_chat_model=False)` and
litellm's `text_completion` send it. Each prompt of a list is its own engine request with `n` choices; choice
`i` of prompt `p` is index `p * n + i`, as OpenAI numbers them. Admission, metrics and error mapping are the chat
service's (`ChatService.run`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from vlserve.engines.base import Delta, GenerateRequest, TokenLogprob
from vlserve.errors import InvalidRequest
from vlserve.serving.chat import ChatService, PreparedChat, Tally, prepend
from vlserve.serving.chat_request import to_sampling
from vlserve.serving.protocol import CompletionRequest
from vlserve.serving.structured import guide_for

DEFAULT_MAX_TOKENS = 16  # OpenAI's (and vLLM's) default for completions


@dataclass(frozen=True)
class PreparedCompletion:
    id: str
    uid: str
    prompts: tuple[str, ...]
    runs: tuple[PreparedChat, ...]  # one per prompt
    echo: bool
    include_usage: bool
    n: int
    created: int = field(default_factory=lambda: int(time.time()))


class CompletionService:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def prepare(self, body: CompletionRequest) -> PreparedCompletion:
        """Everything that can fail with a 4xx before a stream starts."""
        prompts = _prompts(body)
        _refuse_unsupported(body)
        record = self.chat.ready_record(body.model)
        self.chat.admission(record.uid).check()
        sampling = replace(to_sampling(body, record.info.max_model_len), logprobs=body.logprobs,
                           max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS,
                           guide=guide_for(None, body.structured_outputs))  # fmt: skip
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        runs = tuple(  # the first prompt's engine request has the completion's id (what an abort names)
            PreparedChat(record.uid, GenerateRequest(f"{completion_id}-{p}" if p else completion_id, (), sampling,
                                                     prompt=text), include_usage)
            for p, text in enumerate(prompts)
        )  # fmt: skip
        return PreparedCompletion(completion_id, record.uid, prompts, runs, body.echo, include_usage, sampling.n)

    async def complete(self, done: PreparedCompletion) -> dict[str, Any]:
        tallies = [Tally() for _ in done.runs]
        runs = zip(done.runs, tallies, strict=True)
        outputs = await asyncio.gather(*(self.chat.collect(run, tally) for run, tally in runs))
        choices = []
        asked = done.runs[0].request.sampling.logprobs is not None
        for p, answers in enumerate(outputs):
            for i, answer in enumerate(answers):
                text = (done.prompts[p] if done.echo else "") + answer.text
                choices.append({"index": p * done.n + i, "text": text, "finish_reason": answer.finish_reason,
                                "logprobs": completion_logprobs(answer.logprobs) if asked else None})  # fmt: skip
        return {**_envelope(done), "choices": choices, "usage": _usage(tallies)}

    async def stream(self, done: PreparedCompletion) -> AsyncIterator[dict[str, Any]]:
        """The first prompt's request starts (and may fail with an HTTP error) before the stream is returned; the
        prompts then stream one after another."""
        tallies = [Tally() for _ in done.runs]
        first = self.chat.run(done.runs[0], tallies[0])
        try:
            head = await anext(first, None)
        except BaseException:
            await first.aclose()
            raise
        return self._chunks(done, tallies, first, head)

    async def _chunks(self, done: PreparedCompletion, tallies: list[Tally], first: AsyncIterator[Delta],
                      head: Delta | None) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        for p, (run, tally) in enumerate(zip(done.runs, tallies, strict=True)):
            deltas = first if p == 0 else self.chat.run(run, tally)
            async with contextlib.aclosing(deltas):
                if done.echo:
                    for i in range(done.n):
                        yield _chunk(done, p * done.n + i, done.prompts[p])
                async for delta in prepend(head if p == 0 else None, deltas):
                    if delta.text or delta.finish_reason or delta.logprobs:
                        yield _chunk(done, p * done.n + delta.index, delta.text, delta.finish_reason, delta.logprobs)
        if done.include_usage:
            yield {**_envelope(done), "choices": [], "usage": _usage(tallies)}


def _prompts(body: CompletionRequest) -> tuple[str, ...]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return (prompt,)
    if prompt and all(isinstance(p, str) for p in prompt):
        return tuple(prompt)
    if not prompt:
        raise InvalidRequest("prompt is an empty list; send a text or a list of texts", param="prompt")
    raise InvalidRequest("prompts as token ids are not supported by this server; send the text", param="prompt")


def _refuse_unsupported(body: CompletionRequest) -> None:
    if body.suffix:
        raise InvalidRequest("'suffix' is not supported: these models do not fill in the middle; remove it",
                             param="suffix")  # fmt: skip
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest(f"best_of {body.best_of} differs from n {body.n}; this server returns every choice it "
                             "generates, so send best_of equal to n or leave it out", param="best_of")  # fmt: skip
    if body.logit_bias:
        raise InvalidRequest("'logit_bias' is not supported by this server; remove it from the request",
                             param="logit_bias")  # fmt: skip
    if body.echo and body.logprobs is not None:
        raise InvalidRequest("logprobs with echo (the prompt's logprobs) is not supported; drop one of them",
                             param="logprobs")  # fmt: skip


def _usage(tallies: list[Tally]) -> dict[str, int]:
    usages = [t.usage() for t in tallies]
    return {key: sum(u[key] for u in usages) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _envelope(done: PreparedCompletion) -> dict[str, Any]:
    return {"id": done.id, "object": "text_completion", "created": done.created, "model": done.uid}


def _chunk(done: PreparedCompletion, index: int, text: str, finish: str | None = None,
           logprobs: tuple[TokenLogprob, ...] = ()) -> dict[str, Any]:  # fmt: skip
    shaped = completion_logprobs(logprobs) if logprobs else None
    chunk = {**_envelope(done), "choices": [{"index": index, "text": text, "logprobs": shaped, "finish_reason": finish}]}
    if done.include_usage:
        chunk["usage"] = None
    return chunk



def completion_logprobs(entries: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """OpenAI completions' `logprobs` object: parallel lists of tokens, their logprobs, the alternatives (token
    text -> logprob) and each token's character offset in the choice's text."""
    offsets, at = [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t: lp for _, t, lp in e.top} for e in entries], "text_offset": offsets}  # fmt: skip
