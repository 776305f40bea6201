"""The chat completions service: prepares a request for a launched model, runs it on the host within the model's
admission limits, and shapes the OpenAI response (one JSON object, or a stream of chunk objects the API sends as
SSE)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vlserve.engines.base import Delta, GenerateRequest, TokenLogprob
from vlserve.errors import EngineError, ModelNotReady, VlserveError
from vlserve.serving.admission import Admission, AdmissionLimits
from vlserve.serving.chat_request import InputLimits, MessageConverter, logprobs_asked, refuse_unsupported, to_sampling
from vlserve.serving.host import ModelHost
from vlserve.serving.media import Fetcher
from vlserve.serving.media_fetch import MediaFetcher
from vlserve.serving.metrics import Metrics
from vlserve.serving.protocol import ChatCompletionRequest
from vlserve.serving.records import ModelRecord, Phase
from vlserve.serving.structured import guide_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One choice's whole answer (a request that does not stream)."""

    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprob]


@dataclass(frozen=True)
class PreparedChat:
    uid: str
    request: GenerateRequest
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def id(self) -> str:
        return self.request.request_id


@dataclass
class Tally:
    """Usage and timing of one request, gathered from its deltas."""

    started: float = field(default_factory=time.perf_counter)
    first_text: float | None = None
    prompt_tokens: int = 0
    completion: dict[int, int] = field(default_factory=dict)

    def add(self, delta: Delta) -> None:
        if delta.text and self.first_text is None:
            self.first_text = time.perf_counter()
        self.prompt_tokens = max(self.prompt_tokens, delta.prompt_tokens)
        self.completion[delta.index] = max(self.completion.get(delta.index, 0), delta.completion_tokens)

    def usage(self) -> dict[str, int]:
        completion = sum(self.completion.values())
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}


class ChatService:
    def __init__(
        self, host: ModelHost, metrics: Metrics, fetch: Fetcher | None = None, inputs: InputLimits = InputLimits(),
        admission: AdmissionLimits = AdmissionLimits(),
    ) -> None:
        self.host = host
        self.metrics = metrics
        self.fetch = fetch or MediaFetcher()
        self.inputs = inputs
        self.admission_defaults = admission
        self._admissions: dict[tuple[str, float], Admission] = {}

    def admission(self, uid: str) -> Admission:
        """The model's admission gate (its launch's limits, else the server's); one per launch of a uid."""
        return self._admission(self.host.get(uid))

    def _admission(self, record: ModelRecord) -> Admission:
        key = (record.uid, record.created_at)
        gate = self._admissions.get(key)
        if gate is None:
            for old in [k for k in self._admissions if k[0] == record.uid]:  # a terminated launch of this uid
                del self._admissions[old]
            launch, default = record.launch, self.admission_defaults
            limits = AdmissionLimits(
                launch.max_concurrent_requests or default.max_running,
                default.max_queued if launch.max_queued_requests is None else launch.max_queued_requests,
                default.retry_after_s,
            )  # fmt: skip
            gate = self._admissions[key] = Admission(record.uid, limits)
        return gate

    def ready_record(self, uid: str) -> ModelRecord:
        """The launched model `uid`, ready to serve (else ModelNotReady naming its phase, NotFound if unknown)."""
        record = self.host.get(uid)
        if record.phase is not Phase.READY or record.info is None:
            detail = f": {record.error}" if record.error else "; wait for it to be ready"
            raise ModelNotReady(f"model {record.uid!r} is {record.phase.value}{detail}", param="model")
        return record

    async def prepare(self, body: ChatCompletionRequest) -> PreparedChat:
        """Everything that can fail with a 4xx happens here, before a stream starts."""
        refuse_unsupported(body)
        record = self.ready_record(body.model)
        self._admission(record).check()  # refuse an overloaded model before decoding any image
        sampling = replace(to_sampling(body, record.info.max_model_len), logprobs=logprobs_asked(body),
                           guide=guide_for(body.response_format, body.structured_outputs))  # fmt: skip
        messages = await MessageConverter(body, record.resolved, self.fetch, self.inputs).convert()
        request = GenerateRequest(f"chatcmpl-{uuid.uuid4().hex}", messages, sampling)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return PreparedChat(record.uid, request, include_usage)

    async def complete(self, chat: PreparedChat) -> dict[str, Any]:
        tally = Tally()
        answers = await self.collect(chat, tally)
        asked = chat.request.sampling.logprobs is not None
        choices = [
            {"index": i, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish_reason,
             "logprobs": chat_logprobs(a.logprobs) if asked else None}
            for i, a in enumerate(answers)
        ]  # fmt: skip
        return {**self._envelope(chat, "chat.completion"), "choices": choices, "usage": tally.usage()}

    async def collect(self, chat: PreparedChat, tally: Tally) -> list[Answer]:
        """Run `chat` to its end (chat completions, and each prompt of a completions request): each choice's answer."""
        n = chat.request.sampling.n
        texts: list[list[str]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        async with contextlib.aclosing(self.run(chat, tally)) as deltas:
            async for delta in deltas:
                texts[delta.index].append(delta.text)
                logprobs[delta.index] += delta.logprobs
                finish[delta.index] = delta.finish_reason or finish[delta.index]
        return [Answer("".join(texts[i]), finish[i], logprobs[i]) for i in range(n)]

    async def stream(self, chat: PreparedChat) -> AsyncIterator[dict[str, Any]]:
        """Start generating and wait for the first delta, so an error the engine finds in the request (a prompt too
        long, n too large) is still an HTTP error; then return the chunks: the role first (each choice), content
        deltas, a finish chunk per choice, and the usage if asked."""
        tally = Tally()
        deltas = self.run(chat, tally)
        try:
            first = await anext(deltas, None)
        except BaseException:
            await deltas.aclose()
            raise
        return self._chunks(chat, tally, deltas, first)

    async def _chunks(
        self, chat: PreparedChat, tally: Tally, deltas: AsyncIterator[Delta], first: Delta | None
    ) -> AsyncIterator[dict[str, Any]]:
        for i in range(chat.request.sampling.n):
            yield self._chunk(chat, i, {"role": "assistant", "content": ""})
        async with contextlib.aclosing(deltas):
            async for delta in prepend(first, deltas):
                if delta.text or delta.logprobs:
                    yield self._chunk(chat, delta.index, {"content": delta.text}, logprobs=delta.logprobs)
                if delta.finish_reason:
                    yield self._chunk(chat, delta.index, {}, delta.finish_reason)
        if chat.include_usage:
            yield {**self._envelope(chat, "chat.completion.chunk"), "choices": [], "usage": tally.usage()}

    async def run(self, chat: PreparedChat, tally: Tally) -> AsyncIterator[Delta]:
        """One engine request within the model's admission limits; its usage and timing go to `tally` and the
        metrics."""
        async with self.admission(chat.uid).slot():  # Overloaded when the model's queue is full
            try:
                async with contextlib.aclosing(self.host.stream(chat.uid, chat.request)) as deltas:
                    async for delta in deltas:
                        if delta.finish_reason == "error":
                            raise EngineError(f"the engine failed on request {chat.id}; see the server log")
                        tally.add(delta)
                        yield delta
            except VlserveError:
                raise
            except Exception as exc:
                log.exception("request %s on %s failed", chat.id, chat.uid)
                raise EngineError(f"generation failed: {type(exc).__name__}: {exc}") from exc
            finally:
                ttft = tally.first_text - tally.started if tally.first_text else None
                total = time.perf_counter() - tally.started
                usage = tally.usage()
                self.metrics.record_generation(chat.uid, usage["prompt_tokens"], usage["completion_tokens"], ttft,
                                               total)  # fmt: skip

    def _envelope(self, chat: PreparedChat, kind: str) -> dict[str, Any]:
        return {"id": chat.id, "object": kind, "created": chat.created, "model": chat.uid}

    def _chunk(self, chat: PreparedChat, index: int, delta: dict, finish: str | None = None,
               logprobs: tuple[TokenLogprob, ...] = ()) -> dict[str, Any]:  # fmt: skip
        chunk = {
            **self._envelope(chat, "chat.completion.chunk"),
            "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                         "logprobs": chat_logprobs(logprobs) if logprobs else None}],
        }  # fmt: skip
        if chat.include_usage:
            chunk["usage"] = None
        return chunk


async def prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    if first is not None:
        yield first
    async for delta in rest:
        yield delta


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI chat's `logprobs` object: one record per token with its UTF-8 bytes and alternatives."""

    def record(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = [{**record(e.token, e.logprob), "top_logprobs": [record(t, lp) for _, t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}
