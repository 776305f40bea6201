"""The embedded model host: models live in the server process.

Engine calls run on the event loop; the blocking steps of a launch (hub download, engine construction) run in
threads, so a launch never stalls requests to other models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio

from vlserve.engines import get_factory
from vlserve.engines.base import Delta, Engine, EngineFactory, GenerateRequest, LoadedModelInfo
from vlserve.errors import EngineDead, InvalidRequest, ModelNotReady, NotFound
from vlserve.hub import ensure_local
from vlserve.serving.launching import (
    FetchModel, abort_quietly, check_engine, engine_factory, fetch_model_dir, start_engine,
    unload_quietly,
)
from vlserve.serving.records import LaunchRequest, ModelRecord, NodeInfo, Phase, ReplicaInfo, allocate_uid
from vlserve.serving.replicas import ReplicaSet
from vlserve.serving.slots import SlotBase, run_launch, terminate_slot, wait_slot_ready

log = logging.getLogger(__name__)
LOCAL_NODE = "local"


@dataclass
class _Slot(SlotBase):
    replicas: ReplicaSet | None = None
    running: dict[str, Engine] = field(default_factory=dict)  # request id -> the engine serving it


class EmbeddedHost:
    """A `ModelHost` keeping every engine in this process."""

    def __init__(
        self,
        fetch_model: FetchModel = ensure_local,
        factory_for: Callable[[str], EngineFactory] = get_factory,
    ) -> None:
        self._fetch_model = fetch_model
        self._factory_for = factory_for
        self._slots: dict[str, _Slot] = {}

    # -- launching ---------------------------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> ModelRecord:
        _refuse_placement(request)
        await asyncio.to_thread(check_engine, self._factory_for, request.resolved)
        uid = allocate_uid(request.model_uid, request.resolved.model_name, self._slots)
        slot = _Slot(ModelRecord(uid=uid, launch=request, phase=Phase.DOWNLOADING, created_at=time.time()))
        self._slots[uid] = slot
        slot.task = asyncio.create_task(self._bring_up(slot), name=f"launch {uid}")
        log.info("launching %s as %s", request.resolved.describe(), uid)
        return slot.record

    async def _bring_up(self, slot: _Slot) -> None:
        engines: list[Engine] = []

        async def bring_up() -> None:
            model_dir = await self._download(slot)
            slot.update(phase=Phase.LOADING, download_progress=1.0)
            info = await self._load_replicas(slot, model_dir, engines)
            slot.replicas = ReplicaSet(engines)
            slot.update(phase=Phase.READY, info=info)
            log.info("%s is ready (%s, %s)", slot.record.uid, info.device, info.dtype)

        await run_launch(slot, bring_up, lambda: unload_quietly(engines))

    async def _download(self, slot: _Slot) -> Path:
        launch = slot.record.launch

        def on_progress(fraction: float) -> None:  # called from the download thread
            slot.update(download_progress=max(0.0, min(1.0, float(fraction))))

        return await asyncio.to_thread(fetch_model_dir, self._fetch_model, launch, on_progress)

    async def _load_replicas(self, slot: _Slot, model_dir: Path, engines: list[Engine]) -> LoadedModelInfo:
        launch = slot.record.launch
        factory = engine_factory(self._factory_for, launch.resolved.engine)
        infos = []
        for _ in range(launch.replica):
            engine, info = await start_engine(factory, launch, model_dir)
            engines.append(engine)
            infos.append(info)
        return infos[0]  # replicas are identical; replica >= 1 is validated at the edge

    async def wait_ready(self, uid: str, timeout: float | None = None) -> ModelRecord:
        slot = self._slot(uid)
        await wait_slot_ready(slot, timeout)
        return slot.record

    # -- looking up --------------------------------------------------------------------------------------------

    def get(self, uid: str) -> ModelRecord:
        return _with_replicas(_checked(self._slot(uid)))

    def list(self) -> list[ModelRecord]:
        return [_with_replicas(_checked(slot)) for slot in self._slots.values()]

    async def nodes(self) -> list[NodeInfo]:
        """This machine, holding every replica."""
        held = tuple(f"{r.uid}/{i.index}" for r in self.list() for i in r.replicas)
        return [local_node(held)]

    def in_flight(self, uid: str) -> tuple[int, ...]:
        """Running requests per replica."""
        replicas = self._slot(uid).replicas
        return replicas.in_flight if replicas else ()

    def engines(self, uid: str) -> tuple[Engine, ...]:
        replicas = self._slot(uid).replicas
        return tuple(replicas.engines) if replicas else ()

    def _slot(self, uid: str) -> _Slot:
        slot = self._slots.get(uid)
        if slot is None:
            running = ", ".join(sorted(self._slots)) or "none"
            raise NotFound(f"model {uid!r} is not running (running: {running}); launch it first", param="model")
        return slot

    def _ready_slot(self, uid: str) -> _Slot:
        slot = _checked(self._slot(uid))
        if slot.closing or slot.replicas is None or slot.record.phase is not Phase.READY:
            state = "terminating" if slot.closing else slot.record.phase.value
            detail = f": {slot.record.error}" if slot.record.error else ""
            raise ModelNotReady(f"model {uid!r} is {state}{detail}", param="model")
        return slot

    # -- serving -----------------------------------------------------------------------------------------------

    async def stream(self, uid: str, request: GenerateRequest) -> AsyncIterator[Delta]:
        slot = self._ready_slot(uid)
        assert slot.replicas is not None
        replicas = slot.replicas
        index = replicas.acquire()
        engine = replicas.engines[index]
        slot.running[request.request_id] = engine
        finished = False
        try:
            async with contextlib.aclosing(engine.generate(request)) as deltas:
                async for delta in deltas:
                    yield delta
            finished = True
        except EngineDead as exc:
            _mark_dead(slot, index, exc.message)
            raise
        finally:
            slot.running.pop(request.request_id, None)
            replicas.release(index)
            if not finished:  # the caller went away or the engine failed: stop the engine's work on it
                with anyio.CancelScope(shield=True):
                    await abort_quietly(engine, request.request_id)

    async def abort(self, uid: str, request_id: str) -> None:
        engine = self._slot(uid).running.get(request_id)
        if engine is not None:
            await engine.abort(request_id)

    # -- stopping ----------------------------------------------------------------------------------------------

    async def terminate(self, uid: str) -> None:
        slot = self._slot(uid)

        async def release() -> None:
            for request_id, engine in list(slot.running.items()):
                await abort_quietly(engine, request_id)
            if slot.replicas is not None:
                await slot.replicas.unload()

        await terminate_slot(self._slots, slot, release)

    async def close(self) -> None:
        for uid in list(self._slots):
            with contextlib.suppress(Exception):
                await self.terminate(uid)


def _refuse_placement(request: LaunchRequest) -> None:
    for key in ("worker_ip", "gpu_idx"):
        if getattr(request, key) is not None:
            raise InvalidRequest(f"launch option {key!r} is not supported by this server (it serves models in its own "
                                 "process); start it with --cluster ray to place replicas on nodes", param=key)  # fmt: skip


def _checked(slot: _Slot) -> _Slot:
    """The slot, marked `error` if one of its engines reports it can serve nothing any more."""
    if slot.replicas is not None and slot.record.phase is Phase.READY:
        for index, engine in enumerate(slot.replicas.engines):
            if failure := getattr(engine, "failure", None):
                _mark_dead(slot, index, failure)
    return slot


def _mark_dead(slot: _Slot, index: int, reason: str) -> None:
    if slot.record.phase is not Phase.ERROR:
        log.error("%s replica %d stopped: %s", slot.record.uid, index, reason)
        slot.update(phase=Phase.ERROR, error=f"replica {index} stopped: {reason}; terminate and relaunch the model")


def _with_replicas(slot: _Slot) -> ModelRecord:
    if slot.replicas is None:
        return slot.record
    replicas = slot.replicas
    infos = tuple(ReplicaInfo(i, "ready", LOCAL_NODE, "127.0.0.1", in_flight=n, served=served, pid=os.getpid(),
                              caches=_cache_stats(engine))
                  for i, (n, served, engine) in enumerate(zip(replicas.in_flight, replicas.served, replicas.engines)))  # fmt: skip
    return replace(slot.record, replicas=infos)


def _cache_stats(engine) -> dict[str, dict[str, int]] | None:
    """The engine's cache figures, for engines that keep caches of their own (the Transformers engine)."""
    stats = getattr(engine, "cache_stats", None)
    return stats() if stats is not None else None


def local_node(replicas: tuple[str, ...] = ()) -> NodeInfo:
    """The server's own machine: CPUs, memory and NVIDIA GPUs as the OS reports them (no torch import)."""
    resources = {"CPU": float(os.cpu_count() or 1), "GPU": float(_gpu_count()), "memory": float(_memory_bytes())}
    return NodeInfo(LOCAL_NODE, _address(), alive=True, is_head=True, resources=resources,
                    available=dict(resources), replicas=replicas)  # fmt: skip


def _address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _gpu_count() -> int:
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


