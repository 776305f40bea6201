"""The cluster view: the host's nodes, their resources and the replicas each holds, shaped for the API
(`GET /v1/cluster/info`, Xinference's node list; `GET /v1/workers`, one entry per node with its replicas)."""

from __future__ import annotations

from typing import Any

from vlserve.serving.host import ModelHost
from vlserve.serving.records import NodeInfo


class ClusterService:
    def __init__(self, host: ModelHost) -> None:
        self.host = host

    async def info(self) -> list[dict[str, Any]]:
        """Xinference's shape (node_type, ip_address, gpu_count, ...) plus each node's id, resources and replicas."""
        return [_info(node) for node in await self.host.nodes()]

    async def workers(self) -> list[dict[str, Any]]:
        return [_worker(node) for node in await self.host.nodes()]


def _info(node: NodeInfo) -> dict[str, Any]:
    return {
        "node_type": "Supervisor" if node.is_head else "Worker", "ip_address": node.address,
        "node_id": node.node_id, "alive": node.alive,
        "cpu_count": node.resources.get("CPU", 0.0), "gpu_count": int(node.resources.get("GPU", 0.0)),
        "mem_total": int(node.resources.get("memory", 0.0)), "replicas": list(node.replicas),
    }


def _worker(node: NodeInfo) -> dict[str, Any]:
    return {
        "node_id": node.node_id, "address": node.address, "alive": node.alive, "is_head": node.is_head,
        "resources": dict(node.resources), "available": dict(node.available), "replicas": list(node.replicas),
    }
