"""Build the FastAPI app from a `ServerConfig`, and run it with uvicorn."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from vlserve import __version__, reaper
from vlserve.api import ui
from vlserve.api.auth import ApiKeyMiddleware
from vlserve.api.deps import Services
from vlserve.api.errors import install_error_handler
from vlserve.api.logs import configure_logging
from vlserve.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from vlserve.api.routes import catalog, cluster, models, openai, ops, refused
from vlserve.config import ServerConfig
from vlserve.registry import Registry
from vlserve.serving.admission import AdmissionLimits
from vlserve.serving.catalog import CatalogService
from vlserve.serving.chat import ChatService
from vlserve.serving.chat_request import InputLimits
from vlserve.serving.completions import CompletionService
from vlserve.serving.embedded import EmbeddedHost
from vlserve.serving.host import ModelHost
from vlserve.serving.media_fetch import MediaFetcher, MediaPolicy
from vlserve.serving.metrics import Metrics
from vlserve.serving.models import ModelService
from vlserve.serving.records import Phase


def default_host(config: ServerConfig) -> ModelHost:
    """The embedded host, or with `cluster="ray"` a Ray host on the configured cluster (only then is Ray imported)."""
    if config.cluster == "ray":
        from vlserve.serving.ray import connect

        return connect(config.ray_address, placement_timeout_s=config.placement_timeout_s,
                       max_restarts=config.ray_max_restarts, cpus_per_replica=config.ray_cpus_per_replica)
    return EmbeddedHost()


def build_services(config: ServerConfig, host: ModelHost | None = None, registry: Registry | None = None) -> Services:
    host = host or default_host(config)
    registry = registry or Registry.default()
    metrics = Metrics()
    metrics.count_running_models(lambda: sum(r.phase is Phase.READY for r in host.list()))
    metrics.watch_caches(host.list)
    chat = ChatService(host, metrics, _media_fetcher(config), InputLimits.from_config(config),
                       AdmissionLimits.from_config(config))  # fmt: skip
    return Services(
        config=config, host=host, models=ModelService(host, registry), chat=chat,
        completions=CompletionService(chat), catalog=CatalogService(registry), metrics=metrics,
    )


def _media_fetcher(config: ServerConfig) -> MediaFetcher:
    return MediaFetcher(MediaPolicy(
        timeout_s=config.media_fetch_timeout_s, max_bytes=config.media_max_bytes,
        allow_private=config.allow_private_media, allow_domains=config.media_allow_domains,
        allow_dirs=tuple(Path(d) for d in config.media_allow_dirs),
    ))  # fmt: skip


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
    # the last added runs first: request context (logs every answer), CORS (answers preflights), keys, body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.config.max_request_bytes)
    if services.config.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=services.config.api_keys)
    if services.config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(services.config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["X-Request-Id", "Retry-After"])  # fmt: skip
    app.add_middleware(RequestContextMiddleware, metrics=services.metrics)
    for module in (openai, models, catalog, ops, cluster, ui, refused):  # refused last: it serves no real route
        app.include_router(module.router)
    return app


def run_server(config: ServerConfig | None = None, **fields: Any) -> None:
    """Serve until interrupted. `fields` are ServerConfig fields (host, port, log_level, ...), overriding `config`."""
    config = ServerConfig.model_validate({**(config or ServerConfig()).model_dump(), **fields})
    configure_logging(config.log_level, config.log_format)
    _own_children(config.log_format)
    import uvicorn

    app = create_app(config)
    _exit_quietly_on(signal.SIGTERM, signal.SIGINT)  # after create_app: ray.init installs a SIGTERM handler
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level,
                log_config=None, access_log=False, timeout_graceful_shutdown=config.shutdown_grace_s)  # fmt: skip


def _own_children(log_format: str) -> None:
    """Clean what a vlserve process that died left behind, then make sure nothing this server starts for a model
    (vLLM's processes, a private Ray cluster) outlives it, however it ends (see vlserve.reaper)."""
    log = logging.getLogger("vlserve.reaper")
    try:
        leftovers = reaper.sweep()
    except Exception:  # cleaning up after another process must never keep this one from starting
        log.exception("the start-up sweep of leftovers failed")
    else:
        if leftovers:
            log.warning(leftovers.describe())
    reaper.guard_this_process(log_format)


def _exit_quietly_on(*signals: signal.Signals) -> None:
    """uvicorn handles these signals (stop accepting, let requests finish within the grace, shut down) and then
    raises them again for the previous handler: make that a no-op, so a graceful stop exits with status 0."""
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            signal.signal(sig, lambda *_: None)
