"""Servers as subprocesses on loopback, so a client's work never shares a process (or the GIL) with the server's:
vlserve (`vlserve.api.app.run_server`) and vLLM's own OpenAI server. Logs go to the work folder; a server is
stopped with SIGINT (graceful, models unloaded), then SIGKILL if it does not exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx

VLSERVE_MAIN = (
    "import json, sys; from vlserve.api.app import run_server; "
    "run_server(host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', log_format='text', "
    "**json.loads(sys.argv[2]))"
)


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vlserve_available() -> tuple[bool, str]:
    """Whether this checkout has the HTTP server the HTTP scenarios drive."""
    try:
        from vlserve.api.app import create_app, run_server  # noqa: F401
    except ImportError as exc:
        return False, f"vlserve's HTTP server is not available here ({exc})"
    return True, ""


class Server:
    """A server process; `url` once `start()` has seen it answer `health_path`."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, env: dict[str, str] | None = None,
                 health_path: str = "/health") -> None:  # fmt: skip
        self.name, self.argv, self.port, self.health_path = name, argv, port, health_path
        self.url = f"http://127.0.0.1:{port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{port}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 600) -> Server:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.process.returncode}; log: {self.tail()}")
            try:
                if httpx.get(self.url + self.health_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"{self.name} did not answer {self.health_path} within {timeout_s:.0f} s; log: {self.tail()}")

    def stop(self, timeout_s: float = 60) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and the workers it spawned
            process.wait(timeout=30)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def vlserve_server(work_dir: Path, python: str = sys.executable, env: dict[str, str] | None = None,
                   **fields: Any) -> Server:  # fmt: skip
    """A vlserve server; `fields` are further ServerConfig fields (e.g. cluster="ray")."""
    port = free_port()
    home = work_dir / "vlserve-home"
    env = {"VLSERVE_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    argv = [python, "-c", VLSERVE_MAIN, str(port), json.dumps(fields)]
    return Server("vlserve", argv, port, work_dir / "logs", env)


def launch(server: Server, body: dict[str, Any], timeout_s: float = 1800) -> float:
    """POST /v1/models (wait_ready): seconds until the model is ready."""
    start = time.perf_counter()
    response = httpx.post(f"{server.url}/v1/models", json=body, params={"wait_ready": "true"}, timeout=timeout_s)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise ServerError(f"launch failed: HTTP {response.status_code} {response.text[:500]}")
    return elapsed


def terminate(server: Server, uid: str) -> None:
    response = httpx.delete(f"{server.url}/v1/models/{uid}", timeout=300)
    if response.status_code not in (200, 204):
        raise ServerError(f"terminate {uid} failed: HTTP {response.status_code} {response.text[:300]}")
