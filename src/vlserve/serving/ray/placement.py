"""Where a model's replicas may run on a Ray cluster: the launch's Xinference parameters turned into Ray resources.

- `n_gpu`: GPUs per replica. "auto" is one GPU when the cluster has any, else none; None is CPU only. Transformers
  keeps a replica in one process (its layers split over the GPUs); vLLM with n_gpu > 1 runs tensor parallel: the
  replica gets a placement group with one GPU per bundle, and vLLM's Ray executor puts a worker on each bundle.
- `worker_ip`: the node (by IP address, or by Ray node id) the replicas must run on.
- `gpu_idx`: refused: Ray hands each actor its GPUs (CUDA_VISIBLE_DEVICES), a caller cannot pick indices.
- replicas of one model are spread over the nodes (Ray's SPREAD strategy) unless pinned.

Pure functions over `ray.nodes()`-style dicts, so the rules are tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlserve.errors import InvalidRequest
from vlserve.serving.records import LaunchRequest

NODE_RESOURCE_SHARE = 0.001  # a sliver of the `node:<ip>` resource: "must run on a node with this address"


@dataclass(frozen=True)
class ReplicaPlan:
    """What each replica asks Ray for."""

    num_cpus: float
    num_gpus: int
    tensor_parallel: int = 1  # > 1: a placement group of this many one-GPU bundles
    node_id: str | None = None  # hard node affinity
    node_resource: str | None = None  # "node:<ip>" when several nodes share the address
    engine_options: Mapping[str, Any] = field(default_factory=dict)  # what the engine gets on top of the launch's

    def needs(self) -> dict[str, float]:
        """One replica's resources, for messages and feasibility checks."""
        needs = {"CPU": self.num_cpus}
        if self.num_gpus:
            needs["GPU"] = float(self.num_gpus)
        return needs

    def bundles(self) -> list[dict[str, float]]:
        """The placement group of a tensor-parallel replica: the actor's CPU in the first bundle, one GPU per bundle."""
        pin = {self.node_resource: NODE_RESOURCE_SHARE} if self.node_resource else {}
        first = {"CPU": self.num_cpus, "GPU": 1.0, **pin}
        return [first] + [{"GPU": 1.0, **pin} for _ in range(self.tensor_parallel - 1)]


def plan_replicas(launch: LaunchRequest, nodes: Sequence[Mapping[str, Any]], cpus_per_replica: float) -> ReplicaPlan:
    """The resources and pinning of every replica of `launch`; InvalidRequest for what Ray cannot honour."""
    if launch.gpu_idx is not None:
        raise InvalidRequest("gpu_idx is not supported on a Ray cluster: Ray assigns each replica its GPUs; use n_gpu "
                             "for how many and worker_ip for which node", param="gpu_idx")  # fmt: skip
    alive = [n for n in nodes if n.get("Alive")]
    gpus = _gpus_per_replica(launch.n_gpu, any(n.get("Resources", {}).get("GPU", 0) > 0 for n in alive))
    node_id, node_resource = _pin(launch.worker_ip, alive)
    options: dict[str, Any] = {"n_gpu": gpus} if gpus else {}
    tensor_parallel = 1
    if launch.resolved.engine == "vLLM" and gpus > 1:
        tensor_parallel = gpus
        options["distributed_executor_backend"] = "ray"
    return ReplicaPlan(cpus_per_replica, 0 if tensor_parallel > 1 else gpus, tensor_parallel, node_id, node_resource,
                       options)  # fmt: skip


def _gpus_per_replica(n_gpu: int | str | None, cluster_has_gpus: bool) -> int:
    if n_gpu is None:
        return 0
    if n_gpu == "auto":
        return 1 if cluster_has_gpus else 0
    try:
        count = int(n_gpu)
    except (TypeError, ValueError):
        raise InvalidRequest(f"n_gpu must be 'auto', a number of GPUs or null (got {n_gpu!r})", param="n_gpu") from None
    if count < 0:
        raise InvalidRequest(f"n_gpu must be >= 0 (got {count})", param="n_gpu")
    return count


def _pin(worker_ip: str | None, alive: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """(node id for a hard affinity, or a `node:<ip>` resource when several nodes share that address)."""
    if not worker_ip:
        return None, None
    by_id = [n for n in alive if n["NodeID"] == worker_ip]
    by_ip = [n for n in alive if n["NodeManagerAddress"] == worker_ip]
    if by_id or len(by_ip) == 1:
        return (by_id or by_ip)[0]["NodeID"], None
    if by_ip:
        return None, f"node:{worker_ip}"
    known = ", ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:12]})" for n in alive) or "none"
    raise InvalidRequest(f"worker_ip {worker_ip!r} is not an alive node of this Ray cluster; nodes: {known}",
                         param="worker_ip")  # fmt: skip


def placement_failure(plan: ReplicaPlan, index: int, uid: str, waited_s: float,
                      nodes: Sequence[Mapping[str, Any]]) -> InvalidRequest:  # fmt: skip
    """Why replica `index` found no room: no node could ever hold it (ask for less), or the cluster is busy."""
    needs = plan.needs() if plan.tensor_parallel == 1 else {"CPU": plan.num_cpus, "GPU": float(plan.tensor_parallel)}
    wanted = ", ".join(f"{k} {v:g}" for k, v in needs.items())
    where = f" on node {plan.node_id or plan.node_resource}" if (plan.node_id or plan.node_resource) else ""
    fits = [n for n in nodes if n.get("Alive") and _fits(needs, n.get("Resources", {})) and _is_target(plan, n)]
    totals = "; ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:12]}): " + _describe(n.get("Resources", {}))
                       for n in nodes if n.get("Alive"))  # fmt: skip
    if not fits:
        return InvalidRequest(f"cannot place replica {index} of {uid}: it needs {wanted}{where} but no node of the "
                              f"Ray cluster has that much (nodes: {totals}); lower n_gpu/replica or add a node",
                              param="n_gpu")  # fmt: skip
    return InvalidRequest(f"cannot place replica {index} of {uid} within {waited_s:g} s: it needs {wanted}{where} and "
                          "the nodes that could hold it are busy; terminate a model or add nodes, then launch again",
                          param="replica")  # fmt: skip


def _fits(needs: Mapping[str, float], resources: Mapping[str, float]) -> bool:
    return all(resources.get(k, 0.0) >= v for k, v in needs.items())


def _is_target(plan: ReplicaPlan, node: Mapping[str, Any]) -> bool:
    if plan.node_id:
        return node["NodeID"] == plan.node_id
    return plan.node_resource is None or plan.node_resource in node.get("Resources", {})


def _describe(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if not k.startswith(("node:", "memory", "object_store"))}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(shown.items())) or "nothing"
