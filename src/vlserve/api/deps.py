"""What routers receive: the services of this app, built once by create_app."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from vlserve.config import ServerConfig
from vlserve.serving.catalog import CatalogService
from vlserve.serving.chat import ChatService
from vlserve.serving.completions import CompletionService
from vlserve.serving.host import ModelHost
from vlserve.serving.metrics import Metrics
from vlserve.serving.models import ModelService


@dataclass(frozen=True)
class Services:
    config: ServerConfig
    host: ModelHost
    models: ModelService
    chat: ChatService
    completions: CompletionService
    catalog: CatalogService
    metrics: Metrics
    started_at: float = field(default_factory=time.time)


def services(request: Request) -> Services:
    return request.app.state.services
