"""TEST-ONLY: a scripted engine implementing the Engine protocol, for host behaviour that does not depend on a model
(phases, replicas, aborts, unloads). It is not an engine of vlserve and never appears outside tests/; end-to-end
behaviour is tested with the real Transformers engine in tests/api."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlserve.engines.base import Delta, GenerateRequest, LoadedModelInfo


@dataclass
class StubEngine:
    name: str = "Transformers"
    words: tuple[str, ...] = ("hello", " ", "world")
    step_s: float = 0.0
    load_gate: asyncio.Event | None = None
    fail_load: Exception | None = None
    loaded: bool = False
    unloaded: bool = False
    aborted: list[str] = field(default_factory=list)
    seen: list[GenerateRequest] = field(default_factory=list)

    async def load(self) -> LoadedModelInfo:
        if self.load_gate is not None:
            await self.load_gate.wait()
        if self.fail_load is not None:
            raise self.fail_load
        self.loaded = True
        return LoadedModelInfo(max_model_len=4096, device="cpu", dtype="float32")

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        self.seen.append(request)
        for i in range(request.sampling.n):
            for k, word in enumerate(self.words, start=1):
                await asyncio.sleep(self.step_s)
                if request.request_id in self.aborted:
                    return
                last = k == len(self.words)
                yield Delta(i, word, finish_reason="stop" if last else None, prompt_tokens=7, completion_tokens=k)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def unload(self) -> None:
        self.unloaded = True


@dataclass
class StubFactory:
    """Creates StubEngines configured by `template`; remembers what it created and with which options."""

    name: str = "Transformers"
    template: dict[str, Any] = field(default_factory=dict)
    refuse: str | None = None
    created: list[StubEngine] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)

    def supports(self, resolved) -> tuple[bool, str]:
        return (self.refuse is None, self.refuse or "")

    def create(self, resolved, model_dir: Path, options: dict[str, Any]) -> StubEngine:
        engine = StubEngine(**self.template)
        self.created.append(engine)
        self.options.append(options)
        return engine
