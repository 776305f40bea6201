"""The Transformers engine: a model-family package loads the model and encodes prompts; this module places the
model, starts the continuous-batching scheduler, and bridges its thread to asyncio callers."""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.engines.base import Delta, GenerateRequest, LoadedModelInfo, completion_budget, raw_prompt_ids
from vlserve.engines.threads import in_own_thread
from vlserve.engines.transformers_engine.guided import Grammars
from vlserve.engines.transformers_engine.heap import release_freed_heap
from vlserve.engines.transformers_engine.options import EngineOptions
from vlserve.errors import EngineError, InvalidRequest, ModelNotReady, VlserveError
from vlserve.families import get_family

if TYPE_CHECKING:
    from vlserve.engines.transformers_engine.scheduler import Job, Scheduler
    from vlserve.registry import ResolvedSpec

log = logging.getLogger(__name__)

QUANTIZED_AT_LOAD = ("8-bit", "4-bit")  # from the 16-bit checkpoint, as the engine loads it


class TransformersEngine:
    name = "Transformers"

    def __init__(self, resolved: ResolvedSpec, model_dir: Path, options: EngineOptions) -> None:
        self.resolved, self.model_dir, self.options = resolved, Path(model_dir), options
        self.family = get_family(resolved.family.model_family).transformers()
        self.model: Any = None
        self.tokenizer: Any = None
        self.scheduler: Scheduler | None = None
        self.info: LoadedModelInfo | None = None
        self._grammars: Grammars | None = None  # structured output (guided.py), with the loaded tokenizer
        # one at a time: a fast tokenizer must not be used from two threads at once ("Already borrowed")
        self._prep_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    async def load(self) -> LoadedModelInfo:
        if self.info is None:
            self.info = await in_own_thread("vlserve-load", self._load_sync)  # see threads.py
        return self.info

    def _load_sync(self) -> LoadedModelInfo:
        import torch

        from vlserve.engines.transformers_engine import cpu_linears, int4
        from vlserve.engines.transformers_engine import placement as pl
        from vlserve.engines.transformers_engine.attention import register
        from vlserve.engines.transformers_engine.scheduler import Scheduler

        opts = self.options
        if opts.num_threads:
            torch.set_num_threads(opts.num_threads)
        where = pl.resolve_placement(opts)
        cpu_gemm = cpu_linears.pick(where.dtype, opts.cpu_gemm) if where.device == "cpu" else None
        device_map = None
        if where.n_gpu > 1:  # plan the layer split on a meta-device copy first
            device_map = pl.split_device_map(self.family.empty_model(self.model_dir, where.dtype), where)
        model = self.family.load_model(
            self.model_dir, dtype=where.dtype, device_for=pl.device_for_names(device_map, where.device),
            device_map=device_map or where.device,
            int4_linear=int4.factory_for(where.dtype, dynamic=opts.cpu_quant == "auto")
            if self.resolved.quantization == "Int4" else None,
        )  # fmt: skip
        model = pl.dispatch(model, device_map)
        kernels = self._quantize(model, where)
        if cpu_gemm is not None:
            cpu_linears.prepare(model, cpu_gemm, decode_rows=opts.max_batch_size)
        widening = self._prefill_widening(model)
        parts = _model_parts(model, _letting_go(widening) if widening is not None else None)
        model.config.get_text_config()._attn_implementation = register()
        self.model, self.tokenizer = model, self.family.load_tokenizer(self.model_dir)
        stop_ids = self.family.stop_token_ids(self.model_dir, self.tokenizer)
        detokenizer = copy.deepcopy(self.tokenizer)  # the scheduler thread's own copy, for the same reason
        tools = _prefill_tools(parts, self.family, opts, where.device)
        self.scheduler = Scheduler(tools, _slot_cache(parts, where.dtype, opts), stop_ids, detokenizer,
                                   slice_s=opts.prefill_slice_ms / 1000)  # fmt: skip
        self._grammars = Grammars(copy.deepcopy(self.tokenizer), parts.vocab_size, stop_ids)
        release_freed_heap()  # the load's transients (heap.py); before the scheduler's first step
        self.scheduler.start()
        return LoadedModelInfo(
            max_model_len=opts.max_model_len, device=where.device, dtype=where.dtype_name,
            extra={"quantization": self.resolved.quantization, "max_batch_size": opts.max_batch_size,
                   "n_gpu": where.n_gpu, "device_map": bool(device_map), "cpu_gemm": cpu_gemm,
                   "quant_kernels": kernels},
        )  # fmt: skip

    def _prefill_widening(self, model):
        """4-bit / AWQ on CPU: hold the int4 weights' 16-bit copy while prefilling (int4.py), as
        `int4_prefill_16bit` says; auto: when it takes at most a quarter of the memory available now."""
        from vlserve.engines.options import available_gib
        from vlserve.engines.transformers_engine.int4 import PrefillWidening

        setting = self.options.int4_prefill_16bit
        layers = PrefillWidening.layers_of(model) if setting != "off" else []
        if not layers:
            return None
        gib = PrefillWidening.held_bytes(layers) / 1024**3
        if setting == "auto" and gib > available_gib(fallback=0.0) / 4:
            log.info("4-bit prefill on the int4 kernel: a 16-bit copy (%.2f GiB) would take over a quarter of the "
                     "available memory (int4_prefill_16bit=on forces it)", gib)  # fmt: skip
            return None
        log.info("4-bit prefill: int4 weights held at 16 bit (%.2f GiB) while prompts are prefilled", gib)
        return PrefillWidening(layers)

    def _quantize(self, model, where) -> str | None:
        """`8-bit` / `4-bit`: the decoder's linears onto the CPU int8/int4 kernels (weight_only.py), or bitsandbytes
        on a GPU or when asked. Returns which kernels run them (None when the spec is not quantized at load)."""
        from vlserve.engines.transformers_engine import placement as pl
        from vlserve.engines.transformers_engine import weight_only

        quantization, opts = self.resolved.quantization, self.options
        if quantization not in QUANTIZED_AT_LOAD:
            return None
        layers = model.model.language_model.layers
        if where.device != "cpu" or opts.cpu_quant == "bitsandbytes":
            pl.quantize_bnb(layers, quantization, where.dtype)
            return "bitsandbytes"
        dynamic = opts.cpu_quant == "auto"
        weight_only.quantize_decoder(layers, quantization, group_size=opts.int4_group_size, dynamic=dynamic)
        if opts.quantize_lm_head:
            model.lm_head = weight_only.quantize_head(model.lm_head, dynamic=dynamic)
        return _kernels_name(quantization, where.dtype, opts.int4_group_size, dynamic)

    async def unload(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        self.model = self.tokenizer = self.info = None
        release_freed_heap()  # the weights, back to the OS (heap.py)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """The encoder-output and prefix caches: budget, bytes, entries, hits, misses, evictions (caches.py)."""
        if self.scheduler is None:
            return {}
        tools = self.scheduler.tools
        return {"encoder": tools.encoder_cache.stats.as_dict(), "prefix": tools.prefix_cache.stats.as_dict()}

    @property
    def failure(self) -> str | None:
        """Why this loaded engine can serve nothing any more (its scheduler thread died), else None."""
        return self.scheduler.failure if self.scheduler is not None else None

    # ------------------------------------------------------------ requests

    async def abort(self, request_id: str) -> None:
        if self.scheduler is not None:
            self.scheduler.abort(request_id)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        if self.scheduler is None:
            raise ModelNotReady("the model is not loaded yet (or was unloaded); wait for load() to finish")
        loop = asyncio.get_running_loop()
        encoded = await in_own_thread("vlserve-prep", self._encode, request)  # see threads.py
        queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()
        job = self._job(request, encoded, _emitter(loop, queue))
        self.scheduler.submit(job)
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, VlserveError):
                    finished = True
                    raise item
                if isinstance(item, BaseException):
                    finished = True
                    raise EngineError(f"generation failed for {request.request_id}: {item}") from item
                yield item
        finally:
            if not finished and self.scheduler is not None:
                self.scheduler.abort(request.request_id)

    def _encode(self, request: GenerateRequest):
        if request.sampling.guide is not None:  # compiled here, off the decode loop (the first builds the table)
            self._grammars.compiled(request.sampling.guide)
        with self._prep_lock:
            if request.prompt is not None:
                return _RawPrompt(raw_prompt_ids(self.tokenizer, request.prompt))
            return self.family.encode(self.tokenizer, request.messages)

    def _job(self, request: GenerateRequest, encoded, emit) -> Job:
        from vlserve.engines.transformers_engine.scheduler import Job

        sampling = request.sampling
        if not 1 <= sampling.n <= self.options.max_batch_size:
            raise InvalidRequest(f"n must be between 1 and {self.options.max_batch_size} (max_batch_size)", param="n")
        max_tokens = completion_budget(sampling, len(encoded.input_ids), self.options.max_model_len)
        grammar = None
        if sampling.guide is not None:
            guide = sampling.guide
            grammar = functools.partial(self._grammars.matcher, guide)
        return Job(request.request_id, encoded.input_ids, sampling, max_tokens, emit, grammar=grammar,
                   images=tuple(encoded.images))  # fmt: skip


@dataclass(frozen=True)
class _RawPrompt:
    """A raw prompt's tokens, shaped as the family's encoded prompts are (no images)."""

    input_ids: list[int]
    images: tuple = ()


def _emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
    def emit(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is gone; nothing to deliver to
            pass

    return emit


def _letting_go(widening):
    """What the scheduler calls when no prefill is left: drop the 16-bit copies and hand their pages back (glibc
    keeps freed blocks of their size in its arenas otherwise, and the process would stay at its prefill peak)."""

    def prefills_done() -> None:
        if widening.release():  # a short prompt (no full chunk) held nothing: no trim (ms on a large heap) then
            release_freed_heap(collect=False)

    return prefills_done


def _model_parts(model, prefills_done=None):
    from vlserve.engines.transformers_engine.decode import chunk_step, decode_step
    from vlserve.engines.transformers_engine.scheduler import ModelParts

    language_model = model.model.language_model
    embed = model.get_input_embeddings()
    text = model.config.get_text_config()
    parts = ModelParts(model, embed, language_model, model.lm_head, embed.weight.device, text.vocab_size,
                       decode_step(language_model), chunk_step(language_model))  # fmt: skip
    return parts if prefills_done is None else replace(parts, prefills_done=prefills_done)


def _prefill_tools(parts, family, options: EngineOptions, device: str):
    from vlserve.engines.transformers_engine.caches import MIB, EncoderCache, PrefixCache
    from vlserve.engines.transformers_engine.prefill import PrefillTools

    chunk = options.prefill_chunk or (128 if device == "cpu" else 512)
    return PrefillTools(parts, family, EncoderCache(options.image_cache_mb * MIB),
                        PrefixCache(options.prefix_cache_mb * MIB, chunk), chunk)  # fmt: skip


def _slot_cache(parts, dtype, options: EngineOptions):
    from vlserve.engines.transformers_engine.kv_cache import SlotKVCache

    text = parts.model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    devices = [next(layer.parameters()).device for layer in parts.language_model.layers]
    return SlotKVCache(devices, text.num_key_value_heads, head_dim, dtype,
                       slots=options.max_batch_size, max_len=options.max_model_len)  # fmt: skip


def _kernels_name(quantization: str, dtype, group_size: int, dynamic: bool) -> str:
    """What runs the decoder's quantized products on CPU, as the model's description shows it."""
    import torch

    from vlserve.engines.transformers_engine import int4, int8, vnni

    if quantization == "8-bit":
        kernel = f"int8 {int8.kernel_for(dtype, dynamic)}"
    else:
        kernel = f"int4 g{group_size} {int4.kernel_for(dynamic and dtype == torch.bfloat16)}"
    return f"{kernel} {vnni.isa()}" if kernel.endswith("vnni") else kernel
