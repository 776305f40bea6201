"""Operations: liveness, readiness, Prometheus metrics, server status, and Xinference's cluster-auth probe and
supervisor info."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from vlserve import __version__
from vlserve.api.deps import Services, services
from vlserve.serving.records import Phase

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(model: str | None = None, s: Services = Depends(services)) -> JSONResponse:
    """Readiness: 200 when every launched model (or the one named by `model`) is ready, else 503 with each state."""
    records = [s.host.get(model)] if model else s.host.list()
    phases = {r.uid: r.phase.value for r in records}
    ok = all(r.phase is Phase.READY for r in records)
    return JSONResponse({"status": "ready" if ok else "not_ready", "models": phases}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(s: Services = Depends(services)) -> Response:
    return Response(s.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/status")
async def status(s: Services = Depends(services)) -> dict[str, Any]:
    models = {r.uid: r.phase.value for r in s.host.list()}
    return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - s.started_at, 1), "models": models}


@router.get("/v1/cluster/auth")
async def cluster_auth(s: Services = Depends(services)) -> dict[str, bool]:
    """xinference-client asks this first (without a key); only when it says auth does the client send its key."""
    return {"auth": bool(s.config.api_keys)}


@router.get("/v1/supervisor")
async def supervisor(s: Services = Depends(services)) -> dict[str, Any]:
    """Xinference's supervisor info: this server is its own supervisor."""
    return {"supervisor_ip": f"{s.config.host}:{s.config.port}", "version": __version__}
