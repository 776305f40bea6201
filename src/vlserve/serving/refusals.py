"""What this server does not serve, and why. xinference-client has methods for other model types (embeddings,
rerank, images, audio, video, ...) and for Xinference management features vlserve has no counterpart for. Each of
their routes answers a 400 that says why and what to do instead, not a bare 404 (README: "xinference-client,
method by method").

The tables are data; `api/routes/refused.py` registers one route per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from vlserve.errors import InvalidRequest
from vlserve.serving.records import ModelRecord

_CHAT = "send the image with a question to POST /v1/chat/completions"
_RESTART = "vlserve is one process (with --cluster ray, Ray restarts a dead replica): restart `vlserve serve`"
_RELAUNCH = f"vlserve has no separate API, supervisor and worker processes to relaunch; {_RESTART}"


@dataclass(frozen=True)
class OtherTask:
    """A call for another model type: `task` names what it asks for, `hint` (optional) how an LLM can help."""

    path: str
    task: str
    hint: str = ""


@dataclass(frozen=True)
class NotOffered:
    """A management feature with no counterpart here, and why."""

    method: str
    path: str
    reason: str


OTHER_TASKS = (
    OtherTask("/v1/embeddings", "embeddings"),
    OtherTask("/v1/convert_ids_to_tokens", "token-id conversion (an embedding-model call)"),
    OtherTask("/v1/rerank", "reranking"),
    OtherTask("/v1/images/generations", "image generation"),
    OtherTask("/v1/images/variations", "image variations"),
    OtherTask("/v1/images/edits", "image edits"),
    OtherTask("/v1/images/inpainting", "inpainting"),
    OtherTask("/v1/images/ocr", "the OCR-model API", f"to read the text in an image, {_CHAT}"),
    OtherTask("/v1/video/generations", "video generation"),
    OtherTask("/v1/video/generations/image", "video generation"),
    OtherTask("/v1/video/generations/flf", "video generation"),
    OtherTask("/v1/worlds/generations", "world generation"),
    OtherTask("/v1/audio/embeddings", "audio embeddings"),
    OtherTask("/v1/audio/transcriptions", "transcription"),
    OtherTask("/v1/audio/translations", "audio translation"),
    OtherTask("/v1/audio/speech", "speech"),
    OtherTask("/v1/flexible/infers", "flexible-model inference"),
)

_AUTOSTART = "vlserve has no autostart list; launch models after `vlserve serve` starts (`vlserve launch ...`)"
_RELOAD = ("a running model's parameters cannot be changed in place; terminate it (DELETE /v1/models/{uid}) and "
           "launch it again with the new ones")  # fmt: skip
_REPLICAS = "a model's replica count is fixed at launch; terminate it and launch it again with `replica`"

NOT_OFFERED = (
    NotOffered("POST", "/token", "vlserve has API keys, not user accounts: create the client with "
                                 "RESTfulClient(url, api_key=<key>) and it sends the key as a Bearer token"),
    NotOffered("GET", "/v1/address", "vlserve has no internal actor address; the server's own is GET /v1/supervisor"),
    NotOffered("GET", "/v1/autostart/models", _AUTOSTART),
    NotOffered("POST", "/v1/autostart/models", _AUTOSTART),
    NotOffered("GET", "/v1/autostart/models/summary", _AUTOSTART),
    NotOffered("DELETE", "/v1/autostart/models/{model_uid}", _AUTOSTART),
    NotOffered("POST", "/v1/models/{model_uid}/reload", _RELOAD),
    NotOffered("GET", "/v1/models/{model_uid}/reload", _RELOAD),
    NotOffered("GET", "/v1/models/{model_uid}/reload/config", _RELOAD),
    NotOffered("POST", "/v1/models/{model_uid}/replicas", _REPLICAS),
    NotOffered("DELETE", "/v1/models/{model_uid}/replicas/{replica_id}", _REPLICAS),
    NotOffered("GET", "/v1/requests/{request_id}/progress",
               "request progress is Xinference's for image and video generation; to follow a text answer, stream it "
               "(stream: true)"),
    NotOffered("DELETE", "/v1/clusters", "stopping the server over the API is not offered; stop `vlserve serve` "
                                         "(SIGTERM), which unloads every model and ends its processes"),
    NotOffered("POST", "/v1/api/relaunch", _RELAUNCH),
    NotOffered("GET", "/v1/api-relaunches", _RELAUNCH),
    NotOffered("GET", "/v1/api-relaunches/{operation_id}", _RELAUNCH),
    NotOffered("POST", "/v1/supervisor/relaunch", _RELAUNCH),
    NotOffered("GET", "/v1/supervisor-relaunches", _RELAUNCH),
    NotOffered("GET", "/v1/supervisor-relaunches/{operation_id}", _RELAUNCH),
    NotOffered("POST", "/v1/workers/{worker_address:path}/relaunch", _RELAUNCH),
    NotOffered("GET", "/v1/worker-relaunches", _RELAUNCH),
    NotOffered("GET", "/v1/worker-relaunches/{operation_id}", _RELAUNCH),
)


def refuse_task(record: ModelRecord, task: OtherTask) -> NoReturn:
    hint = f"; {task.hint}" if task.hint else ""
    raise InvalidRequest(f"model {record.uid!r} is an LLM; it serves chat and completions, not {task.task}{hint}",
                         param="model")


def refuse_feature(feature: NotOffered) -> NoReturn:
    raise InvalidRequest(f"{feature.method} {feature.path.replace(':path', '')} is not served: {feature.reason}")
