"""Structured output for the Transformers engine: a grammar (JSON schema, any JSON object, a regex) compiled by
xgrammar against the model's tokenizer drives a per-sequence token bitmask applied to the logits before sampling,
so every sampled token keeps the output inside the grammar, at any temperature; once the grammar is complete only
the stop tokens remain allowed. Model-family neutral.

Why xgrammar: vLLM's default structured-output library, installed with vLLM, with a CPU bitmask kernel (the vLLM
engine runs vLLM's own structured outputs on llguidance, the backend that takes a compact-JSON setting for every
schema; see vllm_engine/engine.py). Not yet compared with llguidance by measurement. On the 2-core machine, 1B twin
(151,674-token vocabulary): the tokenizer table is built once per model at the first guided request (seconds, in
the request's preparation thread, never in the decode loop) and a JSON schema compiles in ~1 s (cached per schema);
the per-token mask time is not measured yet (benchmark P12 of issue #16). Whitespace between JSON tokens is not
allowed (compact JSON), so a model cannot pad forever.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlserve.errors import InvalidRequest

if TYPE_CHECKING:
    import torch

    from vlserve.engines.base import Guide


class Grammars:
    """One model's compiler: the tokenizer table (built on first use) and compiled grammars (an LRU by spec)."""

    CACHED = 64  # compiled grammars kept per model

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: frozenset[int]) -> None:
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, sorted(stop_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def compiled(self, guide: Guide) -> Any:
        """The compiled grammar for `guide` (InvalidRequest naming the problem when it does not compile)."""
        key = (guide.kind, guide.spec)
        with self._lock:  # one table build, one compile of a spec at a time
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            grammar = self._cache[key] = self._compile(guide)
            if len(self._cache) > self.CACHED:
                self._cache.popitem(last=False)
            return grammar

    def _compile(self, guide: Guide) -> Any:
        compiler = self._ensure_compiler()
        try:
            if guide.kind == "json":
                return compiler.compile_json_schema(guide.spec, any_whitespace=False)
            if guide.kind == "json_object":
                return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False)
            if guide.kind == "regex":
                return compiler.compile_regex(guide.spec)
        except (RuntimeError, ValueError) as exc:
            raise InvalidRequest(f"the {guide.kind} constraint does not compile: {_first_line(exc)}",
                                 param=guide.param) from None  # fmt: skip
        raise InvalidRequest(f"unknown structured output kind {guide.kind!r}", param=guide.param)

    def _ensure_compiler(self) -> Any:
        if self._compiler is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                      stop_token_ids=self.stop_ids)  # fmt: skip
            self._compiler = xgr.GrammarCompiler(info)
        return self._compiler

    def matcher(self, guide: Guide) -> GuidedSequence:
        import xgrammar as xgr

        return GuidedSequence(xgr.GrammarMatcher(self.compiled(guide)))


@dataclass
class GuidedSequence:
    """One sequence's grammar state."""

    matcher: Any

    def accept(self, token: int) -> None:
        if not self.matcher.is_terminated() and not self.matcher.accept_token(token):
            raise RuntimeError(f"token {token} broke the grammar it was sampled under")


def mask_rows(logits: torch.Tensor, rows: list[int], guides: list[GuidedSequence]) -> None:
    """Set to -inf, in place, the logits of every token the grammar of each row's sequence forbids next."""
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[-1])
    for row, guide in zip(rows, guides, strict=True):
        guide.matcher.fill_next_token_bitmask(bitmask, row)
    xgr.apply_token_bitmask_inplace(logits, bitmask, indices=rows)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.split("] ", 1)[-1]
