"""The Ray host: a `ModelHost` whose model replicas are Ray actors, placed by Ray's scheduler on a cluster's nodes.

A launch plans the replicas' resources (vlserve.serving.ray.placement), starts one actor per replica, waits at most
`placement_timeout_s` for Ray to place them (an unplaceable launch fails with the reason instead of pending
forever), then has every actor fetch and load the model. Requests go to the ready replica with the fewest in
flight and stream back in batches. A watcher per replica sees its process die at once: Ray restarts it (up to
`max_restarts`), the host has it load the model again, and meanwhile requests go to the other replicas; a replica
whose restarts ran out is `dead`, and a model with no replica left is `error` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from vlserve.config import ServerConfig
from vlserve.engines.base import Delta, GenerateRequest, LoadedModelInfo
from vlserve.errors import EngineError, ModelNotReady, NotFound, VlserveError
from vlserve.hub import ensure_local
from vlserve.serving.launching import FetchModel
from vlserve.serving.ray import env
from vlserve.serving.ray.actor import ReplicaActor
from vlserve.serving.ray.batching import Coalesce
from vlserve.serving.ray.placement import NODE_RESOURCE_SHARE, ReplicaPlan, placement_failure, plan_replicas
from vlserve.serving.ray.replica import Replica, Slot
from vlserve.serving.records import LaunchRequest, ModelRecord, NodeInfo, Phase, allocate_uid
from vlserve.serving.slots import run_launch, terminate_slot, wait_slot_ready

log = logging.getLogger(__name__)

_RemoteReplica = ray.remote(ReplicaActor)
_SERVER = ServerConfig()  # the defaults
_UNLOAD_TIMEOUT_S = 30.0
_PROGRESS_EVERY_S = 0.5


class RayHost:
    """A `ModelHost` running each replica as a Ray actor; `ray.init` has been called (see `vlserve.serving.ray`)."""

    def __init__(self, *, placement_timeout_s: float = _SERVER.placement_timeout_s,
                 max_restarts: int = _SERVER.ray_max_restarts, cpus_per_replica: float = _SERVER.ray_cpus_per_replica,
                 batching: Coalesce = Coalesce(), fetch_model: FetchModel = ensure_local,
                 owns_ray: bool = False) -> None:  # fmt: skip
        self.placement_timeout_s, self.max_restarts = placement_timeout_s, max_restarts
        self.cpus_per_replica, self.batching, self._fetch_model = cpus_per_replica, batching, fetch_model
        self._owns_ray = owns_ray
        self._slots: dict[str, Slot] = {}

    # -- launching ---------------------------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> ModelRecord:
        plan = plan_replicas(request, await asyncio.to_thread(ray.nodes), self.cpus_per_replica)
        uid = allocate_uid(request.model_uid, request.resolved.model_name, self._slots)
        slot = Slot(ModelRecord(uid=uid, launch=request, phase=Phase.DOWNLOADING, created_at=time.time()))
        self._slots[uid] = slot
        slot.task = asyncio.create_task(self._bring_up(slot, plan), name=f"launch {uid}")
        log.info("launching %s as %s on Ray (%d x %s)", request.resolved.describe(), uid, request.replica, plan.needs())
        return slot.snapshot()

    async def _bring_up(self, slot: Slot, plan: ReplicaPlan) -> None:
        async def bring_up() -> None:
            await self._place(slot, plan)
            info = await self._load(slot)
            for replica in slot.replicas:
                replica.state = "ready"
                replica.watcher = asyncio.create_task(self._watch(slot, replica), name=f"watch {replica.index}")
            slot.update(phase=Phase.READY, info=info)
            log.info("%s is ready on %s", slot.record.uid, ", ".join(r.node_ip for r in slot.replicas))

        await run_launch(slot, bring_up, lambda: self._release(slot, graceful=False))

    async def _place(self, slot: Slot, plan: ReplicaPlan) -> None:
        """Start every replica's actor; fail with the reason when Ray has not placed one in time."""
        launch = slot.record.launch
        engine_launch = replace(launch, n_gpu=None, options={**launch.options, **plan.engine_options}, worker_ip=None,
                                gpu_idx=None)  # the actor's engine options say all it needs
        for index in range(launch.replica):
            slot.replicas.append(self._start_actor(index, plan, engine_launch))
        deadline = time.monotonic() + self.placement_timeout_s
        for replica in slot.replicas:
            try:
                where = await asyncio.wait_for(_placed(replica), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                nodes = await asyncio.to_thread(ray.nodes)
                raise placement_failure(plan, replica.index, slot.record.uid, self.placement_timeout_s, nodes) from None
            replica.place(where)

    def _start_actor(self, index: int, plan: ReplicaPlan, launch: LaunchRequest) -> Replica:
        options: dict[str, Any] = {"num_cpus": plan.num_cpus, "num_gpus": plan.num_gpus,
                                   "max_restarts": self.max_restarts, "max_task_retries": 0}  # fmt: skip
        group = None
        if plan.tensor_parallel > 1:  # vLLM's Ray executor puts one worker on each GPU bundle of this group
            group = placement_group(plan.bundles(), strategy="PACK")
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
        elif plan.node_id:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(plan.node_id, soft=False)
        else:
            options["scheduling_strategy"] = "SPREAD"
            if plan.node_resource:
                options["resources"] = {plan.node_resource: NODE_RESOURCE_SHARE}
        actor = _RemoteReplica.options(**options).remote(launch, self._fetch_model, self.batching)
        return Replica(index, actor, placement_group=group)

    async def _load(self, slot: Slot) -> LoadedModelInfo:
        """Every replica fetches and loads the model; the record follows their progress."""
        slot.update(phase=Phase.DOWNLOADING)
        poll = asyncio.create_task(self._follow_progress(slot))
        try:
            infos = await asyncio.gather(*(self._load_one(slot.record.uid, r) for r in slot.replicas))
        finally:
            poll.cancel()
        return infos[0]  # replicas are identical

    async def _load_one(self, uid: str, replica: Replica) -> LoadedModelInfo:
        try:
            return await _remote(replica.actor.ready.remote())
        except RayActorError as exc:  # e.g. killed for memory while loading
            raise EngineError(f"{replica.label(uid)} died while loading the model: {_death(exc)}") from None

    async def _follow_progress(self, slot: Slot) -> None:
        while True:
            with contextlib.suppress(RayError):
                stages = await asyncio.gather(*(r.actor.progress.remote() for r in slot.replicas))
                downloaded = min(fraction for _, fraction in stages)
                loading = all(stage in ("loading", "ready") for stage, _ in stages)
                slot.update(phase=Phase.LOADING if loading else Phase.DOWNLOADING, download_progress=downloaded)
            await asyncio.sleep(_PROGRESS_EVERY_S)

    async def wait_ready(self, uid: str, timeout: float | None = None) -> ModelRecord:
        slot = self._slot(uid)
        await wait_slot_ready(slot, timeout)
        return slot.snapshot()

    # -- faults ------------------------------------------------------------------------------------------------

    async def _watch(self, slot: Slot, replica: Replica) -> None:
        """Notice the replica's process dying, and bring the restarted actor back (or give it up)."""
        while not slot.closing:
            try:
                await replica.actor.watch.remote()
                return
            except RayActorError as exc:
                if slot.closing:
                    return
                replica.state, replica.error = "restarting", _death(exc)
                log.warning("%s died: %s", replica.label(slot.record.uid), replica.error)
            if not await self._revive(slot, replica):
                return

    async def _revive(self, slot: Slot, replica: Replica) -> bool:
        while not slot.closing:
            try:
                replica.place(await replica.actor.where.remote())  # queued until Ray has restarted the actor
                await _remote(replica.actor.ready.remote())
            except ActorUnavailableError:
                await asyncio.sleep(0.5)
                continue
            except ActorDiedError as exc:
                self._give_up(slot, replica, f"its restarts ran out (max_restarts={self.max_restarts}): {_death(exc)}")
                return False
            except VlserveError as exc:  # the restarted actor could not load the model again
                ray.kill(replica.actor, no_restart=True)
                self._give_up(slot, replica, f"it restarted but could not load the model: {exc.message}")
                return False
            replica.restarts, replica.state = replica.restarts + 1, "ready"
            log.info("%s is back after a restart", replica.label(slot.record.uid))
            return True
        return False

    def _give_up(self, slot: Slot, replica: Replica, reason: str) -> None:
        replica.state, replica.error = "dead", reason
        log.error("%s is dead: %s", replica.label(slot.record.uid), reason)
        if all(r.state == "dead" for r in slot.replicas):
            slot.update(phase=Phase.ERROR, error=f"every replica died; replica {replica.index}: {reason}; terminate "
                                                 "the model and launch it again")  # fmt: skip

    # -- looking up --------------------------------------------------------------------------------------------

    def get(self, uid: str) -> ModelRecord:
        return self._slot(uid).snapshot()

    def list(self) -> list[ModelRecord]:
        return [slot.snapshot() for slot in self._slots.values()]

    async def nodes(self) -> list[NodeInfo]:
        raw = await asyncio.to_thread(ray.nodes)
        available = await asyncio.to_thread(_available_per_node)
        held: dict[str, list[str]] = {}
        for uid, slot in self._slots.items():
            for replica in slot.replicas:
                held.setdefault(replica.node_id, []).append(f"{uid}/{replica.index}")
        return [_node(n, available.get(n["NodeID"], {}), tuple(held.get(n["NodeID"], ()))) for n in raw]

    def _slot(self, uid: str) -> Slot:
        slot = self._slots.get(uid)
        if slot is None:
            running = ", ".join(sorted(self._slots)) or "none"
            raise NotFound(f"model {uid!r} is not running (running: {running}); launch it first", param="model")
        return slot

    # -- serving -----------------------------------------------------------------------------------------------

    async def stream(self, uid: str, request: GenerateRequest) -> AsyncIterator[Delta]:
        slot = self._slot(uid)
        replica = None if slot.closing or slot.record.phase is not Phase.READY else slot.pick()
        if replica is None:
            states = ", ".join(r.state for r in slot.replicas) or slot.record.phase.value
            raise ModelNotReady(f"model {uid!r} has no ready replica ({states}); retry shortly", param="model")
        replica.in_flight += 1
        slot.running[request.request_id] = replica
        stream = replica.actor.generate.remote(request)
        finished = False
        try:
            async for ref in stream:
                for delta in await ref:
                    yield delta
            finished = True
        except RayTaskError as exc:
            finished = True
            raise _cause(exc) from None
        except RayActorError as exc:
            finished = True
            raise EngineError(f"{replica.label(uid)} was lost during request {request.request_id} ({_death(exc)}); "
                              "the other replicas keep serving: retry the request") from None  # fmt: skip
        finally:
            replica.in_flight -= 1
            replica.served += 1
            slot.running.pop(request.request_id, None)
            if finished:
                asyncio.ensure_future(replica.refresh_caches())  # not awaited: the caller's stream ends now
            if not finished:  # the caller went away: cancel the Ray stream, which aborts the engine's request
                with contextlib.suppress(Exception):
                    ray.cancel(stream)

    async def abort(self, uid: str, request_id: str) -> None:
        replica = self._slot(uid).running.get(request_id)
        if replica is not None:
            with contextlib.suppress(RayError):
                await replica.actor.abort.remote(request_id)

    # -- stopping ----------------------------------------------------------------------------------------------

    async def terminate(self, uid: str) -> None:
        slot = self._slot(uid)
        await terminate_slot(self._slots, slot, lambda: self._release(slot, graceful=True))

    async def _release(self, slot: Slot, *, graceful: bool) -> None:
        """Stop the watchers, unload the engines (graceful), kill every actor and remove the placement groups."""
        for replica in slot.replicas:
            if replica.watcher is not None:
                replica.watcher.cancel()
        if graceful:
            unloads = [r.actor.unload.remote() for r in slot.replicas if r.state == "ready"]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*unloads, return_exceptions=True), _UNLOAD_TIMEOUT_S)
        for replica in slot.replicas:
            with contextlib.suppress(Exception):
                ray.kill(replica.actor, no_restart=True)
            if replica.placement_group is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(replica.placement_group)
            replica.state = "dead"

    async def close(self) -> None:
        for uid in list(self._slots):
            with contextlib.suppress(Exception):
                await self.terminate(uid)
        if self._owns_ray:
            await asyncio.to_thread(ray.shutdown)
            env.cleanup()


async def _placed(replica: Replica) -> dict[str, Any]:
    if replica.placement_group is not None:
        await replica.placement_group.ready()
    return await replica.actor.where.remote()


async def _remote(ref: Any) -> Any:
    """Await a task of a replica; an error raised inside it comes back as itself (a VlserveError keeps its status)."""
    try:
        return await ref
    except RayTaskError as exc:
        raise _cause(exc) from None


def _cause(exc: RayTaskError) -> Exception:
    cause = exc.cause
    if isinstance(cause, VlserveError):
        return cause
    return EngineError(f"the replica failed: {type(cause).__name__}: {cause}")


def _death(exc: RayActorError) -> str:
    """Ray's several-line death notice, shortened to what says why."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = [line for line in lines if "because" in line or "unavailable" in line]
    return " ".join((why or lines[:1]))[:300]


def _available_per_node() -> dict[str, dict[str, float]]:
    try:
        from ray._private.state import available_resources_per_node  # no public per-node view without a dashboard

        return available_resources_per_node()
    except Exception:  # an internal API: keep the totals if it moves
        return {}


def _node(raw: dict[str, Any], available: dict[str, float], replicas: tuple[str, ...]) -> NodeInfo:
    resources = {k: float(v) for k, v in raw.get("Resources", {}).items()}
    return NodeInfo(node_id=raw["NodeID"], address=raw["NodeManagerAddress"], alive=bool(raw.get("Alive")),
                    is_head="node:__internal_head__" in resources, resources=resources,
                    available={k: float(v) for k, v in available.items()}, replicas=replicas)  # fmt: skip
