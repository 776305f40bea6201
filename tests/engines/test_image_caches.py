"""Images paid for once (issue #15) on the Transformers engine, fp32 twins on CPU: image identity, the
encoder-output cache, prefix K/V reuse and prefills interleaved with decode steps."""

from __future__ import annotations

import asyncio

import pytest

from tests.engines.test_transformers_engine import answer, ask, image, tokens_of
from vlserve.engines.base import GenerateRequest, SamplingParams
from vlserve.engines.transformers_engine.caches import EncoderCache, PrefixCache, image_runs
from vlserve.messages import ChatMessage, ImagePart, TextPart, pixel_key

ARCH = "InternVL2_5-1B"
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=0)


def conversation(question: str, picture, *history: str, system: str | None = None) -> tuple[ChatMessage, ...]:
    """A chat about one picture: the first user turn carries it; `history` alternates answer, question, ..."""
    messages = [ChatMessage.text("system", system)] if system else []
    first = question if not history else history[0]
    messages.append(ChatMessage("user", (ImagePart(picture, 2), TextPart(first))))
    turns = list(history[1:]) + ([question] if history else [])
    for i, text in enumerate(turns):
        messages.append(ChatMessage.text("assistant" if i % 2 == 0 else "user", text))
    return tuple(messages)


def logprobs_of(deltas) -> list[float]:
    return [entry.logprob for d in deltas for entry in d.logprobs]


class VisionCalls:
    """Counts vision encoder layer runs of one engine's model."""

    def __init__(self, engine, monkeypatch) -> None:
        self.count = 0
        for layer in engine.model.model.vision_tower.encoder.layer:
            forward = layer.forward

            def counted(*args, _forward=forward, **kwargs):
                self.count += 1
                return _forward(*args, **kwargs)

            monkeypatch.setattr(layer, "forward", counted)


# ---------------------------------------------------------------- image identity


def test_an_image_key_is_its_pixels_and_its_encoding_is_irrelevant():
    first, same, other = image(1), image(1), image(2)
    assert pixel_key(first) == pixel_key(same) != pixel_key(other)
    assert ImagePart(first).key == pixel_key(first)
    assert pixel_key(first.convert("RGBA")) != pixel_key(first)  # different decoded pixels, different image


def test_the_family_returns_one_record_per_image_with_its_budget(engine_for):
    engine = engine_for(ARCH)
    wide = image(3, (900, 450))
    messages = (ChatMessage("user", (ImagePart(wide, 1), ImagePart(wide, 4), TextPart("Same picture?"))),)
    encoded = engine.family.encode(engine.tokenizer, messages)
    first, second = encoded.images
    assert first.key.split("/")[0] == second.key.split("/")[0] and first.key != second.key  # same pixels, budgets
    assert (first.tiles, second.tiles) == (1, 3) and second.pixel_values.shape[0] == 3  # 2x1 + thumbnail
    runs = image_runs(encoded.input_ids, engine.model.config.image_token_id)
    assert [length for _, length in runs] == [256, 256 * 3]


# ---------------------------------------------------------------- the caches as data structures


def test_prefix_match_never_crosses_a_different_image_or_system_prompt():
    import torch

    block, image_token = 4, 9
    layers = [(torch.zeros(1, 1, 20, 2), torch.zeros(1, 1, 20, 2))]
    ids = [1, 2, 3, 4, 5, 6, 7, 8] + [image_token] * 8 + [10, 11, 12, 13]
    cache = PrefixCache(1 << 20, block)
    cache.put(ids, [(8, "A/12")], layers)
    assert cache.match(ids + [14], [(8, "A/12")])[1] == 20  # all of it
    assert cache.match(ids, [(8, "A/12")])[1] == 16  # at least one token left to compute, cut to a block
    assert cache.match(ids, [(8, "B/12")])[1] == 8  # another picture: only the text before it
    assert cache.match(ids, [(8, "A/6")])[1] == 8  # the same picture at another tile budget
    assert cache.match([0] + ids[1:], [(8, "A/12")]) == (None, 0)  # another system prompt: nothing


def test_prefix_cache_replaces_what_a_longer_prompt_extends_and_stays_in_budget():
    import torch

    def layers(n):
        return [(torch.zeros(1, 1, n, 8), torch.zeros(1, 1, n, 8))]  # 64 bytes a token, K and V

    cache = PrefixCache(64 * 100, block=4)
    cache.put(list(range(40)), [], layers(40))
    cache.put(list(range(60)), [], layers(60))  # extends the first: replaces it
    assert cache.stats.entries == 1 and cache.stats.bytes == 64 * 60
    cache.put(list(range(100, 150)), [], layers(50))  # over budget: the least recently used goes
    assert cache.stats.entries == 1 and cache.stats.evictions == 1 and cache.stats.bytes <= 64 * 100
    cache.put(list(range(1000)), [], layers(1000))  # bigger than the whole budget: not kept
    assert cache.stats.bytes <= 64 * 100


def test_encoder_cache_evicts_least_recently_used():
    import torch

    cache = EncoderCache(3 * 400)
    for key in "abc":
        cache.put(key, torch.zeros(100))  # 400 bytes each
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(100))
    assert cache.get("b") is None and cache.get("a") is not None and cache.stats.bytes == 1200


# ---------------------------------------------------------------- the engine


async def test_a_repeated_image_skips_the_vision_encoder(engine_for, monkeypatch):
    engine = engine_for(ARCH, prefix_cache_mb=0)  # every hit here is the encoder cache's
    calls = VisionCalls(engine, monkeypatch)
    picture = image(30, (900, 450))
    await answer(engine, ask("What is it?", picture, max_tiles=2), GREEDY, "first")
    cold = calls.count
    hits = engine.cache_stats()["encoder"]["hits"]
    await answer(engine, ask("And its colour?", picture, max_tiles=2), GREEDY, "second")
    assert cold > 0 and calls.count == cold
    assert engine.cache_stats()["encoder"]["hits"] == hits + 1
    await answer(engine, ask("And its colour?", picture, max_tiles=1), GREEDY, "other budget")
    assert calls.count > cold  # another tile budget is another input to the encoder


async def test_encoder_cache_evicts_under_a_tiny_budget(engine_for, monkeypatch):
    engine = engine_for(ARCH, prefix_cache_mb=0, image_cache_mb=1)
    hidden = engine.model.config.get_text_config().hidden_size
    per_image = 3 * 256 * hidden * 4  # 3 tiles (2 + thumbnail), fp32
    assert per_image < (1 << 20) < 3 * per_image  # the budget holds some of these images, not all
    calls = VisionCalls(engine, monkeypatch)
    pictures = [image(40 + i, (900, 450)) for i in range(4)]
    for i, picture in enumerate(pictures):
        await answer(engine, ask("Hi", picture, max_tiles=2), GREEDY, f"fill{i}")
    stats = engine.cache_stats()["encoder"]
    assert stats["evictions"] > 0 and stats["bytes"] <= stats["budget_bytes"] == 1 << 20
    before = calls.count
    await answer(engine, ask("Hi", pictures[0], max_tiles=2), GREEDY, "evicted")
    assert calls.count > before  # the oldest was evicted: encoded again


async def test_prefix_reuse_gives_the_same_tokens_and_logprobs_as_none(engine_for):
    """fp32: a second turn that reuses the first turn's K/V equals the same turn computed from scratch, bit for bit
    (reuse is cut to the prefill's own chunk boundaries)."""
    engine = engine_for(ARCH)
    cold_engine = engine_for(ARCH, prefix_cache_mb=0, image_cache_mb=0)
    picture = image(50, (900, 450))
    first = await answer(engine, conversation("Describe the picture.", picture), GREEDY, "turn1")
    reply = engine.tokenizer.decode(tokens_of(first))
    second = conversation("And the colours?", picture, "Describe the picture.", reply)
    reused_before = engine.cache_stats()["prefix"]["tokens_reused"]
    warm = await answer(engine, second, GREEDY, "turn2")
    assert engine.cache_stats()["prefix"]["tokens_reused"] - reused_before >= 256  # the image's tokens at least
    cold = await answer(cold_engine, second, GREEDY, "turn2-cold")
    assert tokens_of(warm) == tokens_of(cold)
    assert logprobs_of(warm) == logprobs_of(cold)


async def test_another_image_or_system_prompt_is_never_answered_from_the_cache(engine_for):
    engine = engine_for(ARCH)
    cold_engine = engine_for(ARCH, prefix_cache_mb=0, image_cache_mb=0)
    base = conversation("What is in it?", image(60, (900, 450)))
    variants = [conversation("What is in it?", image(61, (900, 450))),
                conversation("What is in it?", image(60, (900, 450)), system="You are terse.")]  # fmt: skip
    await answer(engine, base, GREEDY, "base")
    for i, messages in enumerate(variants):
        reused = engine.cache_stats()["prefix"]["tokens_reused"]
        warm = await answer(engine, messages, GREEDY, f"variant{i}")
        assert engine.cache_stats()["prefix"]["tokens_reused"] - reused < 256  # never the image's tokens
        cold = await answer(cold_engine, messages, GREEDY, f"variant{i}-cold")
        assert tokens_of(warm) == tokens_of(cold) and logprobs_of(warm) == logprobs_of(cold)


async def test_a_running_stream_gets_tokens_during_another_requests_prefill(engine_for):
    """Event order, not timing: with a 1 ms prefill slice, the text stream's tokens keep arriving between the image
    request's arrival and its first token; both equal their solo answers."""
    engine = engine_for(ARCH, prefill_slice_ms=1, prefix_cache_mb=0, image_cache_mb=0)
    text = (ChatMessage.text("user", "Count."),)
    big = ask("Describe.", image(70, (800, 600)), max_tiles=12)
    stream_sampling = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    solo_text = tokens_of(await answer(engine, text, stream_sampling, "solo-text"))
    solo_image = tokens_of(await answer(engine, big, GREEDY, "solo-image"))
    events: list[str] = []
    text_tokens: list[int] = []

    async def stream():
        async for delta in engine.generate(GenerateRequest("text", text, stream_sampling)):
            text_tokens.extend(delta.token_ids)
            events.append("text")
            if len(text_tokens) == 3:
                image_task.set_result(None)

    async def image_request():
        await image_task
        events.append("image-submitted")
        deltas = []
        async for delta in engine.generate(GenerateRequest("image", big, GREEDY)):
            if not deltas:
                events.append("image-first")
            deltas.append(delta)
        return tokens_of(deltas)

    image_task = asyncio.get_running_loop().create_future()
    _, image_tokens = await asyncio.gather(stream(), image_request())
    between = events[events.index("image-submitted") : events.index("image-first")]
    assert between.count("text") >= 5
    assert image_tokens == solo_image and text_tokens == solo_text


async def test_an_aborted_prefill_leaves_no_cache_entry_or_slot(engine_for):
    engine = engine_for(ARCH, prefill_slice_ms=1, prefix_cache_mb=64, image_cache_mb=64)
    scheduler = engine.scheduler
    background = engine.generate(GenerateRequest("bg", (ChatMessage.text("user", "Go."),),
                                                 SamplingParams(max_tokens=300, ignore_eos=True)))  # fmt: skip
    await background.__anext__()  # decoding: its prefix is cached already

    async def drain():
        async for _ in background:
            pass

    running = asyncio.ensure_future(drain())
    big = ask("Describe.", image(80, (800, 600)), max_tiles=12)
    entries = {name: stats["entries"] for name, stats in engine.cache_stats().items()}
    gen = engine.generate(GenerateRequest("doomed", big, GREEDY))
    first = asyncio.ensure_future(gen.__anext__())
    for _ in range(400):
        if scheduler.prefilling is not None and scheduler.prefilling.job.request_id == "doomed":
            break
        await asyncio.sleep(0.005)
    assert scheduler.prefilling is not None and scheduler.prefilling.job.request_id == "doomed"
    await engine.abort("doomed")
    delta = await first
    assert delta.finish_reason == "abort"
    await gen.aclose()
    await running
    assert scheduler.prefilling is None and scheduler.cache.active == 0
    assert {name: stats["entries"] for name, stats in engine.cache_stats().items()} == entries
    again = await answer(engine, big, GREEDY, "again")  # the same image now runs to the end, cached or not
    assert len(tokens_of(again)) == GREEDY.max_tokens


@pytest.mark.parametrize("slice_ms", [1])
async def test_sliced_prefills_keep_batched_equal_to_solo(engine_for, slice_ms):
    engine = engine_for(ARCH, prefill_slice_ms=slice_ms)
    requests = [ask("Describe.", image(90)), ask("Longer question here?", image(91, (700, 300)), max_tiles=3),
                (ChatMessage.text("user", "No image."),), ask("Two.", image(92), image(93))]  # fmt: skip
    sampling = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    solo = [tokens_of(await answer(engine, m, sampling, f"solo{i}")) for i, m in enumerate(requests)]
    engine.scheduler.tools.prefix_cache.clear()  # the batched run computes its prefixes again, interleaved

    async def staggered(i, messages):
        await asyncio.sleep(0.02 * i)
        return tokens_of(await answer(engine, messages, sampling, f"batch{i}"))

    assert await asyncio.gather(*(staggered(i, m) for i, m in enumerate(requests))) == solo

