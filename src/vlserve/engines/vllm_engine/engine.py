"""The vLLM engine: vLLM's AsyncLLM (engine core in its own process) behind the Engine protocol.

The model family's vLLM adapter registers its config class (no remote code), writes the tokenizer where
vLLM loads it natively, and turns a conversation into prompt token ids + images + processor kwargs. This module
owns vLLM's lifecycle and the request stream. AsyncLLM's background tasks live on the event loop that first sends
it a request; start-up itself (tens of seconds) runs in a thread so the caller's loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve import reaper
from vlserve.engines.base import Delta, GenerateRequest, LoadedModelInfo, raw_prompt_ids
from vlserve.engines.threads import in_own_thread
from vlserve.engines.vllm_engine.liveness import Liveness
from vlserve.engines.vllm_engine.options import LaunchOptions
from vlserve.engines.vllm_engine.requests import DeltaMaker, check_request, vllm_sampling
from vlserve.errors import EngineDead, EngineError, EngineUnavailable, InvalidRequest, ModelNotReady
from vlserve.families import get_family

if TYPE_CHECKING:
    from vlserve.registry import ResolvedSpec

log = logging.getLogger(__name__)

# vLLM's own shutdown waits on its engine processes and sockets; one that died or wedged can keep it waiting for good.
# Past this wait unload goes on and the reaper ends what is left: terminating a model never hangs.
SHUTDOWN_WAIT_S = 60.0


class VllmEngine:
    name = "vLLM"

    def __init__(self, resolved: ResolvedSpec, model_dir: Path, options: LaunchOptions) -> None:
        self.resolved, self.model_dir, self.options = resolved, Path(model_dir), options
        self.family = get_family(resolved.family.model_family).vllm()
        self.llm: Any = None
        self.tokenizer: Any = None
        self.stop_ids: tuple[int, ...] = ()
        self.info: LoadedModelInfo | None = None
        self._workdir: Path | None = None
        self._processes: reaper.Scope | None = None  # vLLM's engine core and workers, ended together at unload
        self._prep = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vlserve-vllm-prep")
        self._liveness = Liveness(lambda: self.failure)  # no request waits on a dead engine core

    # ------------------------------------------------------------ lifecycle

    async def load(self) -> LoadedModelInfo:
        if self.info is None:
            self.info = await asyncio.to_thread(self._load_sync)
        return self.info

    def _load_sync(self) -> LoadedModelInfo:
        from vlserve.engines.vllm_engine.torchvision_shim import ensure_torchvision_importable

        ensure_torchvision_importable()  # a venv without install-vllm.sh's .pth hook
        from vllm.v1.engine.async_llm import AsyncLLM

        why_not = awq_unavailable() if self.resolved.quantization == "Int4" else None
        if why_not:
            raise EngineUnavailable(f"vLLM cannot serve {self.resolved.describe()} here: {why_not}; launch it with "
                                    "--model-engine Transformers", param="model_engine")  # fmt: skip
        started = time.monotonic()
        self._workdir = Path(reaper.tempdir("vllm"))
        model_view = self.family.model_view(self.model_dir, self._workdir / "model")
        self.tokenizer = self.family.load_tokenizer(self.model_dir)
        self.stop_ids = self.family.stop_token_ids(self.model_dir, self.tokenizer)
        args = self._engine_args(model_view)
        self.family.register_vllm_model()
        self._processes = reaper.Scope()
        try:
            with self._processes.tagging():
                self.llm = self._start(AsyncLLM, args)
        except Exception as exc:
            self._cleanup()
            raise EngineError(f"vLLM could not start {self.resolved.describe()}: {exc}") from exc
        config = self.llm.vllm_config.model_config
        log.info("vLLM engine for %s ready in %.1f s", self.resolved.describe(), time.monotonic() - started)
        return LoadedModelInfo(
            max_model_len=config.max_model_len, device=_device_name(), dtype=str(config.dtype).removeprefix("torch."),
            extra={"quantization": self.resolved.quantization, "max_num_seqs": self.options.max_num_seqs,
                   "tensor_parallel_size": self.options.parallel_size, "enforce_eager": self.options.enforce_eager,
                   "limit_mm_per_prompt": self._mm_limits(), "startup_s": round(time.monotonic() - started, 1)},
        )  # fmt: skip

    def _start(self, async_llm, args):
        if self.options.distributed_executor_backend != "ray":
            return async_llm.from_engine_args(args)
        import ray

        # a Ray-hosted replica: its workers go on the GPU bundles of the placement group the replica actor runs
        # in. Handed over explicitly: vLLM's engine core is a subprocess, outside the actor's placement context.
        config = args.create_engine_config()
        group = ray.util.get_current_placement_group()
        if group is None:
            raise EngineError("distributed_executor_backend=ray needs the replica to run in a Ray placement group "
                              "(launch it on a server started with --cluster ray)")  # fmt: skip
        config.parallel_config.placement_group = group
        return async_llm.from_vllm_config(config)

    def _engine_args(self, model_view: Path):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform

        opts = self.options
        kv_bytes = opts.cpu_kv_cache_bytes() if current_platform.is_cpu() else None
        return AsyncEngineArgs(
            model=str(model_view), trust_remote_code=False,
            served_model_name=self.resolved.model_name, dtype=opts.dtype, max_model_len=opts.max_model_len,
            gpu_memory_utilization=opts.gpu_memory_utilization, tensor_parallel_size=opts.parallel_size,
            enforce_eager=opts.enforce_eager, limit_mm_per_prompt=self._mm_limits(), max_num_seqs=opts.max_num_seqs,
            seed=opts.seed, kv_cache_memory_bytes=kv_bytes, disable_log_stats=True,
            distributed_executor_backend=opts.distributed_executor_backend, **opts.cache_arguments(),
            structured_outputs_config=_structured_outputs_config(),
        )  # fmt: skip

    def _mm_limits(self) -> dict[str, int]:
        return {"image": self.family.DEFAULT_IMAGE_LIMIT, **self.options.limit_mm_per_prompt}

    async def unload(self) -> None:
        llm, self.llm, self.info = self.llm, None, None
        if llm is not None:
            handler = getattr(llm, "output_handler", None)
            if handler is not None:  # stop reading outputs first, or it reports the engine's exit as a failure
                handler.cancel()
            try:  # a daemon thread: one left blocked in vLLM's shutdown does not hold the process at exit
                await asyncio.wait_for(in_own_thread("vlserve-vllm-shutdown", llm.shutdown), SHUTDOWN_WAIT_S)
            except TimeoutError:
                log.warning("vLLM's shutdown did not return within %.0f s; ending its processes", SHUTDOWN_WAIT_S)
        await asyncio.to_thread(self._cleanup)

    def _cleanup(self) -> None:
        """Blocking. What vLLM's shutdown left of its processes is ended (SIGTERM, then SIGKILL), then the model
        view is removed."""
        processes, self._processes = self._processes, None
        if processes is not None:
            left = processes.end()
            if left:
                log.warning("ended %d vLLM process(es) left after its shutdown: %s", len(left),
                            ", ".join(str(p.pid) for p in left))
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ------------------------------------------------------------ requests

    @property
    def failure(self) -> str | None:
        """Why this engine can serve nothing any more (vLLM's engine core died), or None: what vLLM's client says,
        or an engine-core process that vLLM started and that has ended."""
        if self.llm is None:
            return None
        if getattr(self.llm, "errored", False):
            return f"vLLM's engine core died ({getattr(self.llm, 'dead_error', 'no reason given')})"
        ended = [p for p in _core_processes(self.llm) if not p.is_alive()]
        return f"vLLM's engine core process ended (exit code {ended[0].exitcode})" if ended else None

    async def abort(self, request_id: str) -> None:
        if self.llm is not None:
            await self.llm.abort(request_id)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        if self.llm is None:
            raise ModelNotReady("the model is not loaded yet (or was unloaded); wait for load() to finish")
        failure = self.failure
        if failure is not None:
            raise _engine_dead(failure)
        loop = asyncio.get_running_loop()
        if request.prompt is not None:  # raw text: no template, no images
            ids = await loop.run_in_executor(self._prep, raw_prompt_ids, self.tokenizer, request.prompt)
            vllm_prompt, prompt_tokens = {"prompt_token_ids": ids}, len(ids)
        else:
            prompt = await loop.run_in_executor(self._prep, self.family.encode, self.tokenizer, request.messages)
            self._check_images(prompt.images)
            vllm_prompt, prompt_tokens = prompt.as_vllm_prompt(), prompt.prompt_tokens
        max_tokens = check_request(request.sampling, prompt_tokens, self.info.max_model_len, self.options.max_num_seqs)
        params = vllm_sampling(request.sampling, max_tokens, self.stop_ids)
        stream = self.llm.generate(vllm_prompt, params, request.request_id)
        maker, finished = DeltaMaker(request.sampling.logprobs), False
        waiting = self._liveness.enter()
        try:
            async for output in stream:
                for delta in maker.deltas(output):
                    yield delta
            finished = True
        except asyncio.CancelledError:
            if not self._liveness.cancelled_by_death(waiting):
                raise
            finished = True  # nothing to abort: closing vLLM's stream would send an abort to the dead core
            raise _engine_dead(self._liveness.dead) from None
        except GeneratorExit:
            raise
        except Exception as exc:
            finished = True  # vLLM already aborted the request
            failure = self.failure
            if failure is not None:  # the engine core process is gone: the host marks the model `error`
                raise _engine_dead(failure) from exc
            raise _request_error(request.request_id, exc) from exc
        finally:
            self._liveness.leave(waiting)
            if not finished:  # the caller stopped reading (client gone): closing vLLM's stream aborts the request
                await stream.aclose()

    def _check_images(self, images: list) -> None:
        limit = self._mm_limits()["image"]
        if len(images) > limit:
            raise InvalidRequest(f"this request has {len(images)} images (video frames count as images) but the model "
                                 f"was launched with limit_mm_per_prompt image={limit}; send fewer, or relaunch with "
                                 "a higher limit", param="messages")  # fmt: skip


def _engine_dead(reason: str) -> EngineDead:
    return EngineDead(f"this model's engine stopped: {reason}; terminate and relaunch it")


def _core_processes(llm) -> list:
    """The engine-core processes vLLM's client started (multiprocessing Process objects; none where this vLLM keeps
    them elsewhere, and the check is then vLLM's own alone)."""
    manager = getattr(getattr(getattr(llm, "engine_core", None), "resources", None), "engine_manager", None)
    return list(getattr(manager, "processes", None) or ())


def _structured_outputs_config():
    """vLLM's structured outputs on llguidance with compact JSON, as the Transformers engine's: vLLM reads the
    whitespace setting per engine, not per request, and its `auto` choice (xgrammar, else llguidance for schemas
    with bounds or lengths) refuses it; a random-weight model otherwise pads JSON with whitespace until max_tokens."""
    from vllm.config import StructuredOutputsConfig

    return StructuredOutputsConfig(backend="guidance", disable_any_whitespace=True)


def _request_error(request_id: str, exc: Exception) -> Exception:
    """vLLM's client errors (bad input) become InvalidRequest; anything else an EngineError for this request."""
    cause = exc.__cause__ or exc
    if type(cause).__name__ in ("VLLMClientError", "VLLMValidationError", "ValueError"):
        return InvalidRequest(f"vLLM refused request {request_id}: {cause}")
    return EngineError(f"generation failed for {request_id}: {cause}")


def awq_unavailable() -> str | None:
    """Why vLLM's AWQ kernel cannot run on this machine, or None. Its CPU build ships the kernel
    (`cpu_gemm_wna16`) only in its AVX512 libraries: on an AVX2-only CPU the engine core died at the first forward
    pass ("'_C' object has no attribute 'cpu_gemm_wna16'")."""
    import torch
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    current_platform.import_kernels()  # the library vLLM's workers load on this CPU
    if hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return None
    return "its CPU build has no AWQ kernel for this CPU (cpu_gemm_wna16 needs AVX512)"


def _device_name() -> str:
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else current_platform.device_type
