"""Running models, Xinference's way: launch, list (also OpenAI's `GET /v1/models`), describe, progress,
instances, cancel, abort one request, and terminate. The fixed `/v1/models/...` paths are registered before
`/v1/models/{model_uid}`, so no fixed name is taken for a model uid."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from vlserve.api.deps import Services, services
from vlserve.serving.protocol import LaunchBody

router = APIRouter(tags=["models"])


@router.post("/v1/models")
async def launch_model(body: LaunchBody, wait_ready: bool = True, s: Services = Depends(services)) -> dict[str, str]:
    return await s.models.launch(body, wait_ready=wait_ready)


@router.get("/v1/models")
async def list_models(s: Services = Depends(services)) -> dict[str, Any]:
    return s.models.list_openai()


@router.get("/v1/models/instances")
async def instances(
    model_name: str | None = None, model_uid: str | None = None, s: Services = Depends(services)
) -> list[dict[str, Any]]:
    return s.models.instances(model_name=model_name, model_uid=model_uid)


@router.get("/v1/models/vllm-supported")
async def vllm_supported(s: Services = Depends(services)) -> dict[str, list[str]]:
    return s.catalog.vllm_supported()


@router.get("/v1/models/{model_uid}")
async def describe_model(model_uid: str, s: Services = Depends(services)) -> dict[str, Any]:
    return s.models.describe(model_uid)


@router.get("/v1/models/{model_uid}/progress")
async def launch_progress(model_uid: str, s: Services = Depends(services)) -> dict[str, Any]:
    return s.models.progress(model_uid)


@router.post("/v1/models/{model_uid}/cancel")
async def cancel_launch(model_uid: str, s: Services = Depends(services)) -> None:
    await s.models.cancel(model_uid)


@router.post("/v1/models/{model_uid}/requests/{request_id}/abort")
async def abort_request(model_uid: str, request_id: str, s: Services = Depends(services)) -> dict[str, Any]:
    """Xinference's abort (its `block_duration` body is accepted and not needed: an id is never reused)."""
    return await s.models.abort_request(model_uid, request_id)


@router.delete("/v1/models/{model_uid}")
async def terminate_model(model_uid: str, s: Services = Depends(services)) -> None:
    await s.models.terminate(model_uid)
