"""No process of a model outlives its server or its `terminate` (issue: a killed server left vLLM's EngineCore and
Worker running for hours). A real `vlserve serve` process; the processes below it are read from /proc before the
server is stopped, and each must have ended within 10 s (a zombie counts as ended: it holds no memory)."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import httpx
import pytest
from api_helpers import SEED_LAUNCH, ServerProcess

from vlserve.reaper.ending import wait_gone
from vlserve.reaper.proc import Ident, descendants, ident

HAVE_VLLM = importlib.util.find_spec("vllm") is not None  # not the vLLM test pool: importing it makes a folder
needs_vllm = [pytest.mark.vllm, pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed")]
END_WITHIN_S = 10


def below(server: ServerProcess) -> list[Ident]:
    return descendants([server.proc.pid])


def launch(server: ServerProcess, twin, **extra) -> list[Ident]:
    """Launch the twin; the model's processes: those the launch added below the server, and a Ray replica's process
    with everything below it (Ray may hand the actor a worker process it had started before)."""
    before = set(below(server))
    body = {**SEED_LAUNCH, "model_path": str(twin), "dtype": "float32", **extra}
    response = httpx.post(f"{server.url}/v1/models", json=body, timeout=600)
    assert response.status_code == 200, response.text
    added = [p for p in below(server) if p not in before]
    placement = httpx.get(f"{server.url}/v1/models/{response.json()['model_uid']}").json()["placement"]
    replicas = [r["pid"] for r in placement if r["pid"] != server.proc.pid]
    return [p for p in {*added, *(ident(pid) for pid in replicas), *descendants(replicas)} if p is not None]


def left(processes: list[Ident]) -> list[str]:
    """Those still running after END_WITHIN_S, by name."""
    return [f"{p.pid} {_name(p.pid)}" for p in wait_gone(processes, END_WITHIN_S)]


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "(ended just now)"


def terminate(server: ServerProcess, uid: str = "InternVL2.5") -> None:
    assert httpx.delete(f"{server.url}/v1/models/{uid}", timeout=120).status_code == 200


VLLM = {"model_engine": "vLLM", "enforce_eager": True, "cpu_kvcache_space_gib": 1}


@pytest.fixture
def vllm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))


@pytest.mark.parametrize("engine", [pytest.param("vLLM", marks=needs_vllm), "ray"])
def test_terminate_then_sigkill_leaves_nothing(engine, tmp_path, twin_1b, vllm_cache):
    args, extra = (("--cluster", "ray"), {}) if engine == "ray" else ((), VLLM)
    server = ServerProcess(tmp_path / "home", *args)
    try:
        model = launch(server, twin_1b, **extra)
        assert model, "the launch started no process below the server"
        terminate(server)
        assert left(model) == []

        launch(server, twin_1b, **extra)
        everything = below(server)
        server.send_signal(signal.SIGKILL)
        assert left(everything) == []
    finally:
        log = server.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("engine", [pytest.param("vLLM", marks=needs_vllm), "ray"])
def test_sigterm_leaves_nothing(engine, tmp_path, twin_1b, vllm_cache):
    args, extra = (("--cluster", "ray"), {}) if engine == "ray" else ((), VLLM)
    server = ServerProcess(tmp_path / "home", *args)
    try:
        launch(server, twin_1b, **extra)
        everything = below(server)
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=120) == 0
        assert left(everything) == []
    finally:
        server.close()
