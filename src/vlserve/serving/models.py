"""The model service: launch (Xinference's body), describe, list and terminate models on the host.

Launch parameters are checked before anything starts, so a bad spec, engine combination or model_path is a 400 with
the registry's message; failures during download or loading come back from `wait_ready` with their own type.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio

from vlserve import settings
from vlserve.errors import InvalidRequest
from vlserve.hub import local_model_path
from vlserve.registry import KNOWN_ENGINES, Registry, ResolvedSpec, resolve
from vlserve.serving.host import ModelHost
from vlserve.serving.protocol import LaunchBody
from vlserve.serving.records import LaunchRequest, ModelRecord, Phase, ReplicaInfo

# Launch keys xinference-client always sends. Unset (None/False/empty) they are dropped; set, they are refused,
# because this server has no equivalent and silently ignoring them would surprise the caller.
_XINFERENCE_ONLY = (
    "peft_model_config", "request_limits", "replica_config", "enable_thinking",
    "enable_virtual_env", "virtual_env_packages", "virtual_env_find_links", "envs",
)
# Xinference's instance status names (LaunchStatus) for each phase.
_INSTANCE_STATUS = {Phase.DOWNLOADING: "CREATING", Phase.LOADING: "CREATING", Phase.READY: "READY", Phase.ERROR: "ERROR"}


class ModelService:
    def __init__(self, host: ModelHost, registry: Registry) -> None:
        self.host = host
        self.registry = registry

    async def launch(self, body: LaunchBody, *, wait_ready: bool = True) -> dict[str, str]:
        request = await asyncio.to_thread(self._launch_request, body)
        record = await self.host.launch(request)
        if wait_ready:
            try:
                await self.host.wait_ready(record.uid)
            except BaseException:
                with anyio.CancelScope(shield=True):  # a failed synchronous launch leaves nothing behind
                    await self.host.terminate(record.uid)
                raise
        return {"model_uid": record.uid}

    def _launch_request(self, body: LaunchBody) -> LaunchRequest:
        if body.model_type != "LLM":
            raise InvalidRequest(f"model_type {body.model_type!r} is not served here; only LLM", param="model_type")
        if body.n_worker not in (None, 1):
            raise InvalidRequest("n_worker > 1 is not supported; use replica for more instances", param="n_worker")
        if not body.model_engine:
            raise InvalidRequest(f"model_engine is required; choose one of {', '.join(KNOWN_ENGINES)}",
                                 param="model_engine")
        options = body.engine_options()
        worker_ip, gpu_idx = options.pop("worker_ip", None) or None, _gpu_idx(options.pop("gpu_idx", None))
        max_running = _limit(options.pop("max_concurrent_requests", None), "max_concurrent_requests", 1)
        max_queued = _limit(options.pop("max_queued_requests", None), "max_queued_requests", 0)
        for key in _XINFERENCE_ONLY:
            if options.pop(key, None):
                raise InvalidRequest(f"launch option {key!r} is not supported by this server", param=key)
        resolved = resolve(self.registry, model_name=body.model_name, model_engine=body.model_engine,
                           model_format=body.model_format, model_size_in_billions=body.model_size_in_billions,
                           quantization=body.quantization)
        if body.model_path is not None:
            local_model_path(body.model_path)  # refuse a wrong folder now, not after the launch has started
        return LaunchRequest(resolved=resolved, model_uid=body.model_uid, replica=body.replica, n_gpu=body.n_gpu,
                             download_hub=body.download_hub, model_path=body.model_path, options=options,
                             worker_ip=worker_ip, gpu_idx=gpu_idx, max_concurrent_requests=max_running,
                             max_queued_requests=max_queued)  # fmt: skip

    async def terminate(self, uid: str) -> None:
        await self.host.terminate(uid)

    async def cancel(self, uid: str) -> None:
        """Stop a launch in progress (Xinference's cancel); a ready model is terminated with DELETE instead."""
        if self.host.get(uid).phase is Phase.READY:
            raise InvalidRequest(f"{uid} has finished launching; terminate it with DELETE /v1/models/{uid}",
                                 param="model_uid")
        await self.host.terminate(uid)

    def describe(self, uid: str) -> dict[str, Any]:
        return describe(self.host.get(uid))

    async def abort_request(self, uid: str, request_id: str) -> dict[str, Any]:
        """Stop one request of a model (its id is the completion's `id`); one that has finished is a no-op, as in
        Xinference. An unknown model is a 404."""
        self.host.get(uid)
        await self.host.abort(uid, request_id)
        return {}

    def list_openai(self) -> dict[str, Any]:
        """The OpenAI list shape; xinference-client reads `data[*].id`, the rest is Xinference's description."""
        return {"object": "list", "data": [describe(r) for r in self.host.list()]}

    def progress(self, uid: str) -> dict[str, Any]:
        record = self.host.get(uid)
        return {"progress": record.progress, "status": record.phase.value, "error": record.error}

    def instances(self, model_name: str | None = None, model_uid: str | None = None) -> list[dict[str, Any]]:
        records = [r for r in self.host.list() if model_uid in (None, r.uid) and model_name in (None, r.resolved.model_name)]
        return [_instance(r) for r in records]


def _limit(value: Any, name: str, minimum: int) -> int | None:
    """A per-model request limit given at launch (None: the server's default)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequest(f"{name} must be an integer >= {minimum} (got {value!r})", param=name)
    return value


def _gpu_idx(value: Any) -> tuple[int, ...] | None:
    """Xinference's gpu_idx: one index or a list of them; the host decides whether it can honour them."""
    if value is None or value == []:
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise InvalidRequest(f"gpu_idx must be a GPU index or a list of them (got {value!r})", param="gpu_idx")
    return tuple(values)


def model_version(resolved: ResolvedSpec) -> str:
    """Xinference's version string, e.g. InternVL2.5--1B--pytorch--none."""
    return f"{resolved.model_name}--{resolved.spec.size_label}B--{resolved.spec.model_format}--{resolved.quantization}"


def describe(record: ModelRecord) -> dict[str, Any]:
    """OpenAI's model object (id, object, created, owned_by) and Xinference's model description, plus the launch
    state (status, progress, error) and what the engine reports."""
    resolved, launch, info = record.resolved, record.launch, record.info
    family, spec = resolved.family, resolved.spec
    return {
        "id": record.uid, "object": "model", "created": int(record.created_at), "owned_by": "vlserve",
        "model_type": "LLM", "address": "", "accelerators": [],
        "model_name": family.model_name, "model_lang": family.model_lang, "model_ability": family.model_ability,
        "model_description": family.model_description, "model_format": spec.model_format,
        "model_size_in_billions": spec.model_size_in_billions, "model_family": family.model_family,
        "quantization": resolved.quantization, "model_engine": resolved.engine,
        "model_hub": None if launch.model_path else (launch.download_hub or settings.default_hub()),
        "model_path": launch.model_path, "revision": None, "context_length": family.context_length,
        "replica": launch.replica, "n_gpu": launch.n_gpu, "engine_options": dict(launch.options),
        "status": record.phase.value, "progress": record.progress, "error": record.error,
        "max_model_len": info.max_model_len if info else None,
        "device": info.device if info else None, "dtype": info.dtype if info else None,
        "placement": [_placement(r) for r in record.replicas],
        "max_concurrent_requests": launch.max_concurrent_requests, "max_queued_requests": launch.max_queued_requests,
    }


def _placement(replica: ReplicaInfo) -> dict[str, Any]:
    return {"replica": replica.index, "state": replica.state, "node_id": replica.node_id, "node_ip": replica.node_ip,
            "in_flight": replica.in_flight, "served": replica.served, "restarts": replica.restarts,
            "error": replica.error, "pid": replica.pid, "caches": replica.caches}  # fmt: skip


def _instance(record: ModelRecord) -> dict[str, Any]:
    return {
        "model_name": record.resolved.model_name, "model_uid": record.uid,
        "model_version": model_version(record.resolved), "model_ability": record.resolved.family.model_ability,
        "replica": record.launch.replica, "status": _INSTANCE_STATUS[record.phase],
        "instance_created_ts": int(record.created_at),
        "phase": record.phase.value, "progress": record.progress, "error": record.error,
    }
