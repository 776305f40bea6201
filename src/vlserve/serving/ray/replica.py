"""The Ray host's view of one replica actor and of one model's replicas: state, placement, requests in flight,
and the least-in-flight choice among the ready ones."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace
from typing import Any

from vlserve.serving.records import ModelRecord, ReplicaInfo
from vlserve.serving.slots import SlotBase


@dataclass
class Replica:
    index: int
    actor: Any  # ray.actor.ActorHandle
    placement_group: Any = None  # tensor-parallel replicas only
    state: str = "starting"  # starting, ready, restarting, dead
    node_id: str = ""
    node_ip: str = ""
    pid: int | None = None
    in_flight: int = 0
    served: int = 0
    restarts: int = 0
    error: str | None = None
    caches: dict[str, dict[str, int]] | None = None  # its engine's, as of its last finished request
    watcher: asyncio.Task | None = None

    def place(self, where: dict[str, Any]) -> None:
        self.node_id, self.node_ip, self.pid = where["node_id"], where["node_ip"], where["pid"]

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(self.index, self.state, self.node_id, self.node_ip, self.in_flight, self.served,
                           self.restarts, self.error, self.pid, self.caches)  # fmt: skip

    async def refresh_caches(self) -> None:
        """Ask the actor for its engine's cache figures (after a request; a lost actor leaves the last ones)."""
        with contextlib.suppress(Exception):
            self.caches = await self.actor.cache_stats.remote()

    def label(self, uid: str) -> str:
        return f"replica {self.index} of {uid} (node {self.node_ip} {self.node_id[:12]}, pid {self.pid})"


@dataclass
class Slot(SlotBase):
    replicas: list[Replica] = field(default_factory=list)
    running: dict[str, Replica] = field(default_factory=dict)  # request id -> replica

    def snapshot(self) -> ModelRecord:
        return replace(self.record, replicas=tuple(r.info() for r in self.replicas))

    def pick(self) -> Replica | None:
        """The ready replica with the fewest requests in flight (the first on ties)."""
        ready = [r for r in self.replicas if r.state == "ready"]
        return min(ready, key=lambda r: r.in_flight) if ready else None
