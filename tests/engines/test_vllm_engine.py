"""The vLLM engine on architecture twins (tiny dims, real configs/tokenizers, random weights), CPU, through the
Engine API: the four deep twins answer images; tiles, video frames, streaming, stops, n, abort on the 1B (Qwen2)
twin; launch options, supported specs and prompt ids (Qwen2 and InternLM2) without starting vLLM.

The deep-twin test comes last so that the 1B engine the behaviour tests started is reused by its first case."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio
from conftest_vllm import HAVE_VLLM, resolved, vllm_test
from PIL import Image

from vlserve.engines.base import Delta, GenerateRequest, SamplingParams
from vlserve.errors import InvalidRequest
from vlserve.messages import ChatMessage, ImagePart, TextPart, VideoPart

DEEP = ["InternVL2_5-1B", "InternVL2_5-2B", "InternVL2_5-26B", "InternVL2_5-8B-AWQ"]
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


def image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def ask(text: str, *images: Image.Image, max_tiles: int | None = 1) -> tuple[ChatMessage, ...]:
    return (ChatMessage("user", tuple(ImagePart(im, max_tiles) for im in images) + (TextPart(text),)),)


async def collect(engine, request: GenerateRequest) -> dict[int, list[Delta]]:
    out: dict[int, list[Delta]] = {}
    async for delta in engine.generate(request):
        out.setdefault(delta.index, []).append(delta)
    return out


async def answer(engine, messages, sampling=GREEDY, request_id="r") -> list[Delta]:
    return (await collect(engine, GenerateRequest(request_id, messages, sampling)))[0]


def tokens_of(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


@pytest_asyncio.fixture(scope="session", loop_scope="session", params=DEEP)
async def deep_engine(request, vllm_pool, twin_dir):
    return await vllm_pool.get(request.param, twin_dir(request.param))


@pytest_asyncio.fixture(loop_scope="session")
async def qwen(vllm_pool, twin_dir):
    return await vllm_pool.get("InternVL2_5-1B", twin_dir("InternVL2_5-1B"))


# ---------------------------------------------------------------- without starting vLLM


def test_unknown_launch_option_names_the_valid_ones():
    from vlserve.engines.vllm_engine.options import LaunchOptions

    with pytest.raises(InvalidRequest) as err:
        LaunchOptions.parse({"max_model_length": 4096})
    assert "max_model_length" in err.value.message and "max_model_len" in err.value.message


@pytest.mark.parametrize("options", [{"max_model_len": 0}, {"dtype": "int3"}, {"limit_mm_per_prompt": {"video": 1}},
                                     {"gpu_memory_utilization": 1.5}, {"n_gpu": -1}])  # fmt: skip
def test_bad_launch_option_values_are_invalid_requests(options):
    from vlserve.engines import get_factory

    with pytest.raises(InvalidRequest) as err:
        get_factory("vLLM").create(resolved("InternVL2_5-1B"), "/nonexistent", options)
    assert next(iter(options)) in err.value.message


def test_launch_defaults_and_kv_cache_size(monkeypatch):
    from vlserve.engines.vllm_engine.options import KV_CACHE_ENV, LaunchOptions

    opts = LaunchOptions.parse({"n_gpu": 2, "dtype": "bf16"})
    assert (opts.max_model_len, opts.parallel_size, opts.dtype) == (16384, 2, "bfloat16")
    monkeypatch.delenv(KV_CACHE_ENV, raising=False)
    assert LaunchOptions.parse({"limit_mm_per_prompt": 8}).limit_mm_per_prompt == {"image": 8}
    assert 1024**3 <= opts.cpu_kv_cache_bytes() <= 64 * 1024**3
    monkeypatch.setenv(KV_CACHE_ENV, "3")
    assert opts.cpu_kv_cache_bytes() is None  # vLLM reads the variable itself
    assert LaunchOptions.parse({"cpu_kvcache_space_gib": 1.5}).cpu_kv_cache_bytes() == int(1.5 * 1024**3)


async def test_unload_goes_on_when_vllms_own_shutdown_hangs(monkeypatch, tmp_path, caplog):
    """A wedged vLLM shutdown (a dead or stuck engine core) must not hang terminate: unload waits SHUTDOWN_WAIT_S,
    then goes on to end the processes; the blocked thread is a daemon and is released here."""
    import threading
    import time

    from vlserve.engines import get_factory
    from vlserve.engines.vllm_engine import engine as vllm_engine

    class WedgedLLM:
        def __init__(self) -> None:
            self.release, self.entered = threading.Event(), threading.Event()

        def shutdown(self) -> None:
            self.entered.set()
            self.release.wait(30)

    engine = get_factory("vLLM").create(resolved("InternVL2_5-1B"), tmp_path, {})
    engine.llm = wedged = WedgedLLM()
    monkeypatch.setattr(vllm_engine, "SHUTDOWN_WAIT_S", 0.3)
    started = time.monotonic()
    await engine.unload()
    try:
        assert wedged.entered.is_set() and time.monotonic() - started < 10 and engine.llm is None
        assert "did not return within" in caplog.text
        assert all(t.daemon for t in threading.enumerate() if t.name == "vlserve-vllm-shutdown")
    finally:
        wedged.release.set()


@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed")
async def test_awq_is_refused_naming_the_fix_where_vllm_has_no_kernel_for_it(monkeypatch, tmp_path):
    """vLLM's CPU build has its AWQ kernel (cpu_gemm_wna16) in its AVX512 libraries only: on an AVX2 CPU its engine
    core died at the first forward pass. The load refuses first, with a 4xx naming the engine that serves AWQ."""
    from vlserve.engines import get_factory
    from vlserve.engines.vllm_engine import engine as vllm_engine
    from vlserve.errors import EngineUnavailable

    monkeypatch.setattr(vllm_engine, "awq_unavailable", lambda: "no AWQ kernel for this CPU")
    engine = get_factory("vLLM").create(resolved("InternVL2_5-8B-AWQ"), tmp_path, {})
    with pytest.raises(EngineUnavailable, match="no AWQ kernel for this CPU; launch it with --model-engine Transformers"):
        await engine.load()
    assert engine.llm is None and EngineUnavailable.status_code < 500


async def test_liveness_cancels_waiting_requests_once_the_engine_is_dead():
    """The engine's own check beside vLLM's: a request waiting on an engine whose core died is cancelled within a
    poll and the cancellation is recognised as the death (the engine raises EngineDead); one that comes after is
    cancelled at once; while the probe finds the engine alive, waits go on and other cancellations stay."""
    from vlserve.engines.vllm_engine.liveness import Liveness

    reason: list[str] = []
    live = Liveness(lambda: reason[0] if reason else None, poll_s=0.05)

    async def request() -> str:
        task = live.enter()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not live.cancelled_by_death(task):
                raise
            return f"EngineDead: {live.dead}"
        finally:
            live.leave(task)
        return "answered"

    first, other = asyncio.create_task(request()), asyncio.create_task(request())
    await asyncio.sleep(0.3)
    assert not first.done() and not other.done()  # alive: the waits go on
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other  # not the engine's death: stays a cancellation
    reason.append("vLLM's engine core process ended (exit code -9)")
    assert await asyncio.wait_for(first, 2) == "EngineDead: vLLM's engine core process ended (exit code -9)"
    assert await asyncio.wait_for(asyncio.create_task(request()), 2) == f"EngineDead: {reason[0]}"


def test_supports_the_page_specs_only():
    from vlserve.engines import get_factory
    from vlserve.registry import ResolvedSpec
    from vlserve.registry.store import builtin_families

    factory = get_factory("vLLM")
    family = builtin_families()["InternVL2.5"]
    served = []
    for spec in family.model_specs:
        for quantization in spec.quantizations:
            ok, reason = factory.supports(ResolvedSpec(family, spec, "vLLM", quantization))
            if ok:
                served.append((spec.size_label, quantization))
            else:
                assert "quantization" in reason or (not HAVE_VLLM and "install-vllm.sh" in reason)
    expected = [(s, "none") for s in ("1", "2", "4", "8", "26", "38", "78")]
    expected += [(s, "Int4") for s in ("4", "8", "26", "38", "78")]
    assert sorted(served) == (sorted(expected) if HAVE_VLLM else [])


def _tokenizer(twin_dir, architecture):
    from vlserve.families.internvl2_5.tokenizer import load_tokenizer

    return load_tokenizer(twin_dir(architecture))


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
def test_prompt_ids_equal_the_transformers_prompt_around_image_slots(twin_dir, architecture):
    """Piecewise tokenization with `<image>` slots == tokenizing the expanded prompt, once slots are expanded."""
    from vlserve.families.internvl2_5 import vllm_support
    from vlserve.families.internvl2_5.loader import encode as hf_encode

    tok = _tokenizer(twin_dir, architecture)
    wide = (image(0, (896, 448)), image(1, (900, 430)))  # a 2x1 grid + thumbnail under 2 tiles
    messages = (ChatMessage("user", (ImagePart(wide[0], 2), ImagePart(wide[1], 2), TextPart(" Compare  them\n"))),)
    prompt = vllm_support.encode(tok, messages)
    slot = tok("<image>", add_special_tokens=False)["input_ids"]
    img, end, ctx = tok.convert_tokens_to_ids(["<img>", "</img>", "<IMG_CONTEXT>"])
    expanded, i, tiles = [], 0, iter([3, 3])
    ids = prompt.prompt_token_ids
    while i < len(ids):
        if ids[i : i + len(slot)] == slot:
            expanded += [img] + [ctx] * (256 * next(tiles)) + [end]
            i += len(slot)
        else:
            expanded.append(ids[i])
            i += 1
    assert expanded == hf_encode(tok, messages).input_ids
    assert prompt.prompt_tokens == len(expanded) and prompt.mm_processor_kwargs == {"max_dynamic_patch": 2}


def test_one_tile_images_join_any_budget_but_other_budgets_must_agree():
    from vlserve.families.internvl2_5.tiling import ImageInput
    from vlserve.families.internvl2_5.vllm_support import plan_images

    wide = image(0, (900, 300))
    images, budget = plan_images([ImageInput(wide, 1), ImageInput(image(1), 12)])
    assert budget == 12 and images[0].size == (448, 448) and images[1].size == (320, 240)
    images, budget = plan_images([ImageInput(image(2, (448, 448)), 6), ImageInput(image(3), 12)])
    assert budget == 12  # a square image tiles 1x1 under both budgets
    with pytest.raises(InvalidRequest, match="tile budgets"):
        plan_images([ImageInput(wide, 2), ImageInput(image(4), 12)])


# ---------------------------------------------------------------- behaviour on the 1B (Qwen2) twin


@vllm_test
async def test_multi_image_and_tiles_change_the_prompt_by_256_per_tile(qwen):
    one = (await answer(qwen, ask("Compare.", image(1), image(2), max_tiles=1)))[-1].prompt_tokens
    six = (await answer(qwen, ask("Compare.", image(1), image(2), max_tiles=6)))[-1].prompt_tokens
    # 320x240 under 6 tiles: a 3x2 grid + thumbnail = 7 tiles per image
    assert six - one == 2 * 256 * (7 - 1)


@vllm_test
async def test_video_frames_are_one_tile_images(qwen):
    frames = tuple(image(10 + i) for i in range(3))
    messages = (ChatMessage("user", (VideoPart(frames), TextPart("What happens?"))),)
    deltas = await answer(qwen, messages)
    text_only = (await answer(qwen, (ChatMessage.text("user", "What happens?"),)))[-1].prompt_tokens
    assert deltas[-1].prompt_tokens - text_only > 3 * (256 + 2)


@vllm_test
async def test_streamed_text_is_the_decoded_tokens_and_greedy_repeats(qwen):
    from vlserve.families.internvl2_5.tokenizer import load_tokenizer

    sampling = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    first = await answer(qwen, ask("Describe.", image(3)), sampling, "s1")
    second = await answer(qwen, ask("Describe.", image(3)), sampling, "s2")
    assert tokens_of(first) == tokens_of(second) and len(tokens_of(first)) == 16
    tok = load_tokenizer(qwen.model_dir)
    assert "".join(d.text for d in first) == tok.decode(tokens_of(first), skip_special_tokens=True)
    assert first[-1].finish_reason == "length" and first[-1].completion_tokens == 16


@vllm_test
async def test_stop_string_ends_the_text_before_it(qwen):
    sampling = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    full = "".join(d.text for d in await answer(qwen, ask("Describe.", image(4)), sampling, "full"))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), f"pick a visible stop string from {full!r}"
    stopped = await answer(qwen, ask("Describe.", image(4)), SamplingParams(max_tokens=16, temperature=0.0,
                                                                             ignore_eos=True, stop=(stop,)), "stop")  # fmt: skip
    assert "".join(d.text for d in stopped) == full[: full.index(stop)]
    assert stopped[-1].finish_reason == "stop"


@vllm_test
async def test_n_choices_with_seed(qwen):
    sampling = SamplingParams(max_tokens=5, temperature=1.0, n=2, seed=7, ignore_eos=True)
    out = await collect(qwen, GenerateRequest("n2", ask("Hi", image(5)), sampling))
    assert sorted(out) == [0, 1]
    assert all(deltas[-1].completion_tokens == 5 and deltas[-1].finish_reason == "length" for deltas in out.values())
    again = await collect(qwen, GenerateRequest("n2b", ask("Hi", image(5)), sampling))
    assert {i: tokens_of(d) for i, d in out.items()} == {i: tokens_of(d) for i, d in again.items()}


@vllm_test
async def test_abort_ends_the_stream_and_the_engine_keeps_serving(qwen):
    sampling = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)
    stream = qwen.generate(GenerateRequest("long", ask("Go on.", image(6)), sampling))
    seen = [await stream.__anext__()]
    await qwen.abort("long")
    seen += [d async for d in stream]
    assert seen[-1].finish_reason == "abort" and seen[-1].completion_tokens < 2000
    assert qwen.llm.get_num_unfinished_requests() == 0
    assert (await answer(qwen, ask("Again.", image(6)), request_id="after"))[-1].finish_reason in ("stop", "length")


@vllm_test
async def test_a_dropped_stream_aborts_its_request(qwen):
    sampling = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)
    stream = qwen.generate(GenerateRequest("dropped", ask("Go on.", image(7)), sampling))
    await stream.__anext__()
    await stream.aclose()  # what the server does when the client disconnects
    for _ in range(50):
        if qwen.llm.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.1)
    assert qwen.llm.get_num_unfinished_requests() == 0


@vllm_test
async def test_too_many_images_is_an_invalid_request(qwen):
    with pytest.raises(InvalidRequest, match="limit_mm_per_prompt"):
        await answer(qwen, ask("Count.", *[image(i) for i in range(17)]))


# ---------------------------------------------------------------- the four deep twins (last: see the docstring)


@vllm_test
async def test_deep_twins_answer_an_image(deep_engine):
    deltas = await answer(deep_engine, ask("What is in the image?", image(0)), SamplingParams(max_tokens=4))
    last = deltas[-1]
    assert last.finish_reason in ("stop", "length") and 1 <= last.completion_tokens <= 4
    assert last.prompt_tokens > 256 + 2  # one tile + <img></img> + text
    assert deep_engine.info.device == "cpu"


@vllm_test
async def test_structured_output_and_logprobs_on_vllm(qwen):
    """vLLM's own structured outputs for a JSON schema and a regex (temperature 1, random-weight twin), and logprobs
    with alternatives, through the engine-neutral request."""
    import json
    import re

    import jsonschema

    from vlserve.engines.base import Guide

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
              "maximum": 9}, "tag": {"type": "string", "maxLength": 4}}, "required": ["ok", "n", "tag"],
              "additionalProperties": False}  # fmt: skip
    for seed in range(3):
        sampling = SamplingParams(max_tokens=60, temperature=1.0, seed=seed, guide=Guide("json", json.dumps(schema)))
        deltas = await answer(qwen, ask("JSON", image(31)), sampling, f"json-{seed}")
        jsonschema.validate(json.loads("".join(d.text for d in deltas)), schema)
    regex = SamplingParams(max_tokens=12, temperature=1.0, seed=5, guide=Guide("regex", r"[a-c]{3}\d"))
    assert re.fullmatch(r"[a-c]{3}\d", "".join(d.text for d in await answer(qwen, ask("Code"), regex, "regex")))
    logprobs = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, logprobs=2)
    entries = [e for d in await answer(qwen, ask("Hi"), logprobs, "lp") for e in d.logprobs]
    assert len(entries) == 4 and all(len(e.top) == 2 and e.top[0][0] == e.token_id for e in entries)


def test_cache_options_reach_vllm_only_when_set():
    from vlserve.engines.vllm_engine.options import LaunchOptions

    assert LaunchOptions.parse({}).cache_arguments() == {}
    options = LaunchOptions.parse({"enable_prefix_caching": "true", "mm_processor_cache_gb": "0.5",
                                   "enable_chunked_prefill": False})  # fmt: skip
    assert options.cache_arguments() == {"enable_prefix_caching": True, "mm_processor_cache_gb": 0.5,
                                         "enable_chunked_prefill": False}  # fmt: skip
    with pytest.raises(InvalidRequest, match="mm_processor_cache_gb"):
        LaunchOptions.parse({"mm_processor_cache_gb": -1})


@vllm_test
async def test_prefix_and_image_caches_keep_greedy_tokens(vllm_pool, twin_dir):
    """A follow-up turn about the same image (the conversation resent, as clients do) answers the same greedy
    tokens with vLLM's prefix caching and image cache on as with the defaults."""
    first_turn = ask("Describe.", image(30))
    sampling = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)

    async def two_turns(engine) -> tuple[list[int], list[int]]:
        one = await answer(engine, first_turn, sampling, "t1")
        history = (*first_turn, ChatMessage.text("assistant", "".join(d.text for d in one)),
                   ChatMessage.text("user", "And the colours?"))  # fmt: skip
        return tokens_of(one), tokens_of(await answer(engine, history, sampling, "t2"))

    default = await two_turns(await vllm_pool.get("InternVL2_5-1B", twin_dir("InternVL2_5-1B")))
    cached_engine = await vllm_pool.get("InternVL2_5-1B", twin_dir("InternVL2_5-1B"), enable_prefix_caching=True,
                                        mm_processor_cache_gb=1)  # fmt: skip
    assert await two_turns(cached_engine) == default
    assert await two_turns(cached_engine) == default  # and again, every prefix now cached


@vllm_test
async def test_a_dead_engine_core_fails_requests_with_engine_dead(vllm_pool, twin_dir):
    """vLLM's engine core runs in its own process; when it dies, requests fail with EngineDead (the host then marks
    the model `error`) and the engine still unloads. Reuses the last deep twin's engine, then closes it."""
    import psutil

    from vlserve.errors import EngineDead

    engine = await vllm_pool.get("InternVL2_5-8B-AWQ", twin_dir("InternVL2_5-8B-AWQ"))
    assert engine.failure is None
    cores = [p for p in psutil.Process().children(recursive=True) if "EngineCore" in " ".join(p.cmdline() + [p.name()])]
    assert cores, "no vLLM engine core process found"
    for process in cores:
        process.kill()
    psutil.wait_procs(cores, timeout=30)
    with pytest.raises(EngineDead, match="terminate and relaunch"):
        for _ in range(50):  # the client notices the dead process within a moment
            await within(60, answer(engine, ask("Still there?", image(0)), request_id="after-death"), "a request")
            await asyncio.sleep(0.2)
    assert engine.failure is not None
    await within(120, vllm_pool.close(), "unloading the dead engine")


async def within(seconds: float, awaitable, what: str):
    """`await awaitable`, failing the test (with every thread's stack on stderr) if it takes over `seconds`: a wait
    on a dead engine must end, and if it does not, the stacks show where it hung."""
    import faulthandler
    import sys

    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(f"{what} still waited after {seconds:.0f} s (thread stacks above)")
