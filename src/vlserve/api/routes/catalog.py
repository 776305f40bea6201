"""Registrations, engines and the download cache, Xinference's way. The handlers are plain functions: they read
files, so FastAPI runs them in its thread pool, off the event loop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from vlserve.api.deps import Services, services
from vlserve.serving.protocol import RegisterBody

router = APIRouter(tags=["catalog"])


@router.get("/v1/model_registrations/{model_type}")
def list_registrations(model_type: str, detailed: bool = False, s: Services = Depends(services)) -> list[dict[str, Any]]:
    return s.catalog.list_registrations(model_type, detailed)


@router.get("/v1/model_registrations/{model_type}/{model_name}")
def get_registration(model_type: str, model_name: str, s: Services = Depends(services)) -> dict[str, Any]:
    return s.catalog.get_registration(model_type, model_name)


@router.post("/v1/model_registrations/{model_type}")
def register_model(model_type: str, body: RegisterBody, s: Services = Depends(services)) -> None:
    s.catalog.register(model_type, body)


@router.delete("/v1/model_registrations/{model_type}/{model_name}")
def unregister_model(model_type: str, model_name: str, s: Services = Depends(services)) -> None:
    s.catalog.unregister(model_type, model_name)


@router.get("/v1/engines/{model_name}")
def engines(model_name: str, s: Services = Depends(services)) -> dict[str, list[dict[str, Any]]]:
    return s.catalog.engines_for(model_name)


@router.get("/v1/engines/{model_type}/{model_name}")
def engines_by_type(model_type: str, model_name: str, s: Services = Depends(services)) -> dict[str, list[dict[str, Any]]]:
    return s.catalog.engines_for(model_name, model_type)


@router.get("/v1/cache/models")
def list_cached(model_name: str | None = None, s: Services = Depends(services)) -> dict[str, list[dict[str, Any]]]:
    return s.catalog.list_cached(model_name)


@router.get("/v1/cache/models/files")
def cached_files(
    model_version: str | None = None, worker_ip: str | None = None, s: Services = Depends(services)
) -> dict[str, Any]:
    return s.catalog.cached_files(model_version, worker_ip)


@router.delete("/v1/cache/models")
def remove_cached(
    model_id: str | None = None, hub: str | None = None, model_version: str | None = None,
    s: Services = Depends(services),
) -> dict[str, bool]:
    return s.catalog.remove_cached(model_id, hub, model_version)
