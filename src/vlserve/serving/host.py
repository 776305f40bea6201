"""The hosting seam: where launched models live and how requests reach them.

The API and the services speak only to a `ModelHost`. The embedded host (vlserve.serving.embedded) keeps models in
the server process; the Ray host (vlserve.serving.ray) runs each replica as a Ray actor on a cluster's nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from vlserve.engines.base import Delta, GenerateRequest
from vlserve.serving.records import LaunchRequest, ModelRecord, NodeInfo


class ModelHost(Protocol):
    async def launch(self, request: LaunchRequest) -> ModelRecord:
        """Start bringing a model up and return at once (phase `downloading`); see `wait_ready`."""
        ...

    async def wait_ready(self, uid: str, timeout: float | None = None) -> ModelRecord:
        """Wait until the model is ready; raise its launch error if it failed (the record stays, in `error`)."""
        ...

    def get(self, uid: str) -> ModelRecord:
        """The model's record; `NotFound` for an unknown uid."""
        ...

    def list(self) -> list[ModelRecord]: ...

    async def nodes(self) -> list[NodeInfo]:
        """The machines models can run on, their resources and the replicas each holds."""
        ...

    def stream(self, uid: str, request: GenerateRequest) -> AsyncIterator[Delta]:
        """Run one request on a ready model (on the least busy replica) and yield its deltas."""
        ...

    async def abort(self, uid: str, request_id: str) -> None:
        """Stop a running request; unknown ids are ignored (it may have just finished)."""
        ...

    async def terminate(self, uid: str) -> None:
        """Stop launching or unload the model, abort its requests, and free its uid."""
        ...

    async def close(self) -> None:
        """Terminate every model (server shutdown)."""
        ...
