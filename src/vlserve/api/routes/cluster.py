"""The cluster: which nodes models can run on, their resources, and the replicas each holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from vlserve.api.deps import Services, services
from vlserve.serving.cluster import ClusterService

router = APIRouter(tags=["cluster"])


@router.get("/v1/cluster/info")
async def cluster_info(s: Services = Depends(services)) -> list[dict[str, Any]]:
    return await ClusterService(s.host).info()


@router.get("/v1/workers")
async def workers(s: Services = Depends(services)) -> list[dict[str, Any]]:
    return await ClusterService(s.host).workers()
