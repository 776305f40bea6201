"""Bringing one engine up, the same way in every host: pick the engine factory, check the spec, fetch the model
folder from its hub, build and load the engine; and the quiet cleanup steps a failed launch or a gone client needs.

The embedded host calls these in the server process; the Ray host calls them inside each replica actor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio

from vlserve.engines.base import Engine, EngineFactory, LoadedModelInfo
from vlserve.errors import EngineUnavailable, VlserveError
from vlserve.registry import ResolvedSpec
from vlserve.serving.records import LaunchRequest

log = logging.getLogger(__name__)

# ensure_local(resolved, *, download_hub, model_path, on_progress) -> Path, blocking (it runs in a thread)
FetchModel = Callable[..., Path]
FactoryFor = Callable[[str], EngineFactory]


def engine_factory(factory_for: FactoryFor, engine: str) -> EngineFactory:
    try:
        return factory_for(engine)
    except ImportError as exc:
        raise EngineUnavailable(f"engine {engine} is not installed here ({exc})", param="model_engine") from exc


def check_engine(factory_for: FactoryFor, resolved: ResolvedSpec) -> None:
    """Refuse a spec the engine cannot serve here, with the engine's reason (blocking: may import the engine)."""
    ok, reason = engine_factory(factory_for, resolved.engine).supports(resolved)
    if not ok:
        raise EngineUnavailable(reason, param="model_engine")


def fetch_model_dir(fetch: FetchModel, launch: LaunchRequest, on_progress: Callable[[float], None]) -> Path:
    """The model's local folder: `model_path` verified, or downloaded from the hub (blocking)."""
    return fetch(launch.resolved, download_hub=launch.download_hub, model_path=launch.model_path,
                 on_progress=on_progress)  # fmt: skip


async def start_engine(
    factory: EngineFactory, launch: LaunchRequest, model_dir: Path
) -> tuple[Engine, LoadedModelInfo]:
    """Build an engine from the launch's options and load it; a failed load is unloaded before the error returns."""
    engine = await asyncio.to_thread(factory.create, launch.resolved, model_dir, launch.engine_options())
    try:
        return engine, await engine.load()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await unload_quietly([engine])
        raise


def failure_reason(exc: BaseException) -> str:
    """One line for a model's `error` field."""
    if isinstance(exc, VlserveError):
        return exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "launch cancelled"
    return f"{type(exc).__name__}: {exc}"


async def abort_quietly(engine: Engine, request_id: str) -> None:
    try:
        await engine.abort(request_id)
    except Exception:  # the request may be gone already; aborting must never fail a cleanup
        log.exception("aborting request %s failed", request_id)


async def unload_quietly(engines: Iterable[Engine]) -> None:
    for engine in engines:
        try:
            await engine.unload()
        except Exception:
            log.exception("unloading an engine failed")
