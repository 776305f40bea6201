"""The xinference-client calls vlserve does not serve, each answered with a 400 that says why (the tables and the
reasons are in vlserve.serving.refusals). Registered after the routes that are served."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request

from vlserve.api.deps import Services, services
from vlserve.errors import InvalidRequest
from vlserve.serving.refusals import NOT_OFFERED, OTHER_TASKS, NotOffered, OtherTask, refuse_feature, refuse_task

router = APIRouter(tags=["not served"])
_SERVICES = Depends(services)
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_MODEL = {"type": "object", "required": ["model"],
          "properties": {"model": {"type": "string", "description": "the uid of a launched model"}}}  # fmt: skip
_MODEL_BODY = {"requestBody": {"required": True, "content": {kind: {"schema": _MODEL}
                                                             for kind in ("application/json", "multipart/form-data")}}}


async def model_of(request: Request) -> str:
    """The `model` field of a JSON or a form body (xinference-client sends either, by method)."""
    if request.headers.get("content-type", "").startswith(_FORMS):
        async with request.form() as form:
            model = form.get("model")
    else:
        try:
            body = await request.json()
        except ValueError:
            raise InvalidRequest("the request body is not valid JSON") from None
        model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: the uid of a launched model is required", param="model")
    return model


def _task_route(task: OtherTask) -> None:
    async def refuse(request: Request, s: Services = _SERVICES) -> None:
        refuse_task(s.host.get(await model_of(request)), task)

    router.add_api_route(task.path, refuse, methods=["POST"], openapi_extra=_MODEL_BODY, response_model=None,
                         summary=f"Not served: {task.task} (the models here are LLMs)")  # fmt: skip


def _path_parameters(path: str) -> dict[str, Any]:
    names = re.findall(r"{(\w+)(?::path)?}", path)
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]}


def _feature_route(feature: NotOffered) -> None:
    async def refuse() -> None:
        refuse_feature(feature)

    router.add_api_route(feature.path, refuse, methods=[feature.method], response_model=None,
                         openapi_extra=_path_parameters(feature.path), summary=f"Not served: {feature.reason}")


for _task in OTHER_TASKS:
    _task_route(_task)
for _feature in NOT_OFFERED:
    _feature_route(_feature)
