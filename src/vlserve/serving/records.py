"""The records a model host keeps: what was asked for at launch, and where each model stands.

Typed, frozen records inside; the API turns them into Xinference/OpenAI JSON at the edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vlserve.engines.base import LoadedModelInfo
from vlserve.errors import Conflict, InvalidRequest
from vlserve.registry import ResolvedSpec


class Phase(str, Enum):
    """Where a launched model is: downloading -> loading -> ready, or error with the reason."""

    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True)
class LaunchRequest:
    """A launch after validation: the spec is resolved, the remaining keys are engine options."""

    resolved: ResolvedSpec
    model_uid: str | None = None
    replica: int = 1
    n_gpu: int | str | None = "auto"  # Xinference's spelling: "auto", a count, or None for CPU only
    download_hub: str | None = None
    model_path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    worker_ip: str | None = None  # pin the replicas to one node (cluster hosts only)
    gpu_idx: tuple[int, ...] | None = None  # exact GPU indices (hosts that can honour them)
    max_concurrent_requests: int | None = None  # requests generating at once; None: the server's default
    max_queued_requests: int | None = None  # requests waiting beyond those; None: the server's default

    def engine_options(self) -> dict[str, Any]:
        """What the engine factory receives: the extra launch keys, plus n_gpu when the caller chose one."""
        options = dict(self.options)
        if self.n_gpu not in (None, "auto"):
            options["n_gpu"] = self.n_gpu
        return options


@dataclass(frozen=True)
class ReplicaInfo:
    """Where one replica of a model runs and how it is doing."""

    index: int
    state: str  # starting, ready, restarting, dead
    node_id: str
    node_ip: str
    in_flight: int = 0
    served: int = 0  # requests finished on it
    restarts: int = 0
    error: str | None = None  # why it restarted or died
    pid: int | None = None  # the process that holds it (the server's own for the embedded host)
    caches: dict[str, dict[str, int]] | None = None  # the engine's encoder/prefix caches (embedded host)


@dataclass(frozen=True)
class NodeInfo:
    """One machine of the serving cluster (the embedded host has one), its resources and the replicas it holds."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    resources: Mapping[str, float]  # totals: CPU, GPU, memory (bytes), custom resources
    available: Mapping[str, float]
    replicas: tuple[str, ...] = ()  # "uid/index"


@dataclass(frozen=True)
class ModelRecord:
    """A snapshot of one launched model."""

    uid: str
    launch: LaunchRequest
    phase: Phase
    created_at: float
    download_progress: float = 0.0  # 0..1, from the hub's callback
    error: str | None = None
    info: LoadedModelInfo | None = None
    replicas: tuple[ReplicaInfo, ...] = ()  # filled by the host when it hands the record out

    @property
    def resolved(self) -> ResolvedSpec:
        return self.launch.resolved

    @property
    def progress(self) -> float:
        """Overall launch progress 0..1: downloading counts for 90%, loading for the rest."""
        if self.phase is Phase.READY:
            return 1.0
        return round(0.9 * self.download_progress, 4) if self.phase is Phase.DOWNLOADING else 0.9


_UID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def allocate_uid(requested: str | None, model_name: str, taken: Iterable[str]) -> str:
    """An explicit uid must be free; otherwise the model name, suffixed -1, -2, ... when taken."""
    taken = set(taken)
    if requested:
        if not set(requested) <= _UID_CHARS:
            raise InvalidRequest(
                f"model_uid {requested!r} may only use letters, digits, '.', '_' and '-'", param="model_uid"
            )
        if requested in taken:
            raise Conflict(
                f"model_uid {requested!r} is already in use; terminate it first or choose another uid",
                param="model_uid",
            )
        return requested
    uid, n = model_name, 0
    while uid in taken:
        n += 1
        uid = f"{model_name}-{n}"
    return uid
