"""Build the FastAPI app from a `ServerConfig`, and run it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI

from vlserve import __version__
from vlserve.api.config import ServerConfig
from vlserve.api.deps import Services
from vlserve.api.errors import install_error_handler
from vlserve.api.logs import configure_logging
from vlserve.api.middleware import RequestContextMiddleware
from vlserve.api import ui
from vlserve.api.routes import catalog, models, openai, ops
from vlserve.registry import Registry
from vlserve.serving.catalog import CatalogService
from vlserve.serving.chat import ChatService
from vlserve.serving.embedded import EmbeddedHost
from vlserve.serving.host import ModelHost
from vlserve.serving.media import FetchLimits, fetch_url
from vlserve.serving.metrics import Metrics
from vlserve.serving.models import ModelService
from vlserve.serving.records import Phase


def build_services(config: ServerConfig, host: ModelHost | None = None, registry: Registry | None = None) -> Services:
    host = host or EmbeddedHost()
    registry = registry or Registry.default()
    metrics = Metrics()
    metrics.count_running_models(lambda: sum(r.phase is Phase.READY for r in host.list()))
    fetch = partial(fetch_url, limits=FetchLimits(config.media_fetch_timeout_s, config.media_max_bytes))
    return Services(
        config=config, host=host, models=ModelService(host, registry), chat=ChatService(host, metrics, fetch),
        catalog=CatalogService(registry), metrics=metrics,
    )


def create_app(config: ServerConfig | None = None, *, host: ModelHost | None = None) -> FastAPI:
    """The app with every route; `host` replaces the embedded model host (e.g. a Ray host)."""
    services = build_services(config or ServerConfig(), host)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await services.host.close()  # shutdown: unload every model

    app = FastAPI(title="vlserve", version=__version__, lifespan=lifespan)
    app.state.services = services
    install_error_handler(app)
    app.add_middleware(RequestContextMiddleware, metrics=services.metrics)
    for module in (openai, models, catalog, ops, ui):
        app.include_router(module.router)
    return app


def run_server(config: ServerConfig | None = None, **fields: Any) -> None:
    """Serve until interrupted. `fields` are ServerConfig fields (host, port, log_level, ...), overriding `config`."""
    config = ServerConfig.model_validate({**(config or ServerConfig()).model_dump(), **fields})
    configure_logging(config.log_level, config.log_format)
    import uvicorn

    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level=config.log_level,
                log_config=None, access_log=False)
