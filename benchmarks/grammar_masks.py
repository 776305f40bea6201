"""Per-token grammar-mask time of the two structured-output libraries on a real tokenizer and one JSON schema
(P12): xgrammar through vlserve's own code (`guided.py`: `Grammars`, `mask_rows`) and llguidance through its own
torch helpers, both with compact JSON.

A walk: each step fills one row's bitmask from the grammar state (`fill`), applies it to seeded random logits
(`apply`), samples a token from what is left and feeds it to the grammar, until the grammar ends; `walks` walks.
Random logits wander into long strings and numbers as a random-weight model does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MaskTimes:
    library: str
    fill_us: list[float]  # per token
    apply_us: list[float]
    table_s: float  # the tokenizer table, once per model
    compile_s: float  # the schema, once per schema

    def median(self, which: str) -> float:
        return statistics.median(getattr(self, which))


@dataclass(frozen=True)
class _Library:
    new: Callable[[], Any]  # a fresh grammar state
    fill: Callable[[Any], None]
    apply: Callable[[Any], None]  # logits [1, vocab], in place
    accept: Callable[[Any, int], None]
    done: Callable[[Any], bool]


def measure(model_dir: Path, schema: str, walks: int, max_steps: int = 400) -> list[MaskTimes]:
    from vlserve.families.internvl2_5 import loader

    tokenizer = loader.load_tokenizer(model_dir)
    stop_ids, vocab = loader.stop_token_ids(model_dir, tokenizer), len(tokenizer)
    out = [_walk("xgrammar", *_xgrammar(tokenizer, vocab, stop_ids, schema), vocab, walks, max_steps, stop_ids)]
    try:
        import llguidance  # noqa: F401  (installed with vLLM)
    except ImportError:
        return out
    out.append(_walk("llguidance", *_llguidance(tokenizer, vocab, stop_ids, schema), vocab, walks, max_steps, stop_ids))
    return out


def _walk(name: str, library: _Library, table_s: float, compile_s: float, vocab: int, walks: int, max_steps: int,
          stop_ids: frozenset[int]) -> MaskTimes:  # fmt: skip
    import torch

    rng = torch.Generator().manual_seed(0)
    fills, applies = [], []
    for _ in range(walks):
        state = library.new()
        for _ in range(max_steps):
            logits = torch.randn(1, vocab, generator=rng) * 3
            start = time.perf_counter()
            library.fill(state)
            filled = time.perf_counter()
            library.apply(logits)
            fills.append((filled - start) * 1e6)
            applies.append((time.perf_counter() - filled) * 1e6)
            token = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=rng))
            if token in stop_ids or library.done(state):
                break
            library.accept(state, token)
    return MaskTimes(name, fills, applies, table_s, compile_s)


def _xgrammar(tokenizer, vocab: int, stop_ids: frozenset[int], schema: str) -> tuple[_Library, float, float]:
    from vlserve.engines.base import Guide
    from vlserve.engines.transformers_engine.guided import Grammars

    grammars, guide = Grammars(tokenizer, vocab, stop_ids), Guide("json", schema)
    start = time.perf_counter()
    grammars.compiled(Guide("regex", "a"))  # builds the tokenizer table
    table = time.perf_counter()
    grammars.compiled(guide)
    compiled = time.perf_counter()
    state: dict[str, Any] = {}

    def fill(sequence) -> None:  # guided.mask_rows' two steps (allocate + fill, then apply), timed apart
        import xgrammar as xgr

        state["bitmask"] = xgr.allocate_token_bitmask(1, vocab)
        sequence.matcher.fill_next_token_bitmask(state["bitmask"], 0)

    def apply(logits) -> None:
        import xgrammar as xgr

        xgr.apply_token_bitmask_inplace(logits, state["bitmask"], indices=[0])

    library = _Library(lambda: grammars.matcher(guide), fill, apply, lambda s, t: s.accept(t),
                       lambda s: s.matcher.is_terminated())  # fmt: skip
    return library, table - start, compiled - table


def _llguidance(tokenizer, vocab: int, stop_ids: frozenset[int], schema: str) -> tuple[_Library, float, float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch as llg_torch

    start = time.perf_counter()
    table = llguidance.hf.from_tokenizer(tokenizer, vocab, eos_token=min(stop_ids))
    built = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    llguidance.LLMatcher(table, grammar)
    compiled = time.perf_counter()
    bitmask = llg_torch.allocate_token_bitmask(1, vocab)

    def accept(matcher, token: int) -> None:
        if not matcher.consume_token(token):
            raise RuntimeError(f"llguidance refused token {token}: {matcher.get_error()}")

    library = _Library(lambda: llguidance.LLMatcher(table, grammar),
                       lambda m: llg_torch.fill_next_token_bitmask(m, bitmask, 0),
                       lambda logits: llg_torch.apply_token_bitmask_inplace(logits, bitmask), accept,
                       lambda m: m.is_stopped())  # fmt: skip
    return library, built - start, compiled - built
