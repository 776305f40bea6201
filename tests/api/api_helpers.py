"""Helpers for the API tests: a uvicorn server in a thread on a free loopback port, request bodies, error checks."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from vlserve.api.deps import Services

SESSION_UID = "InternVL2.5"
SEED_LAUNCH = {  # the seed's launch parameters (the model page), as xinference-client sends them
    "model_engine": "Transformers", "model_name": "InternVL2.5", "model_size_in_billions": 1,
    "model_format": "pytorch", "quantization": "none",
}


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def services(self) -> Services:
        return self.app.state.services

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_server(app: FastAPI, *, lifespan: bool = True) -> LiveServer:
    """Serve `app` on a free loopback port. lifespan=False for an app sharing another server's model host, so
    stopping it does not unload that host's models."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on" if lifespan else "off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="vlserve-test-server")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{sock.getsockname()[1]}", app, server, thread)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}/health")
            return
        except httpx.ConnectError:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


class ServerProcess:
    """A real `vlserve serve` in its own process on a free loopback port, with its own VLSERVE_HOME."""

    def __init__(self, home: Path, *args: str, timeout_s: float = 90) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "vlserve.cli", "serve", "--port", str(port), *args]
        env = {**os.environ, "VLSERVE_HOME": str(home)}
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_until_up(self.url, self.proc, timeout_s)

    def send_signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def close(self) -> str:
        """Stop it if it still runs; its log."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=60)[1]


def png_data_uri(size: tuple[int, int] = (96, 64), color=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def assert_openai_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict:
    """Every error is an OpenAI error body; returns its `error` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and body["error"]["code"] == status
    if error_type is not None:
        assert body["error"]["type"] == error_type
    return body["error"]
