"""SIGTERM on a real `vlserve serve` process: it stops accepting connections, lets the request in flight finish
within --shutdown-grace, unloads its models and exits with status 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
from api_helpers import SEED_LAUNCH, free_port, wait_until_up


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path, twin_1b):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "vlserve.cli", "serve", "--port", str(port), "--shutdown-grace", "60"]
    env = {**os.environ, "VLSERVE_HOME": str(tmp_path)}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wait_until_up(url, proc)
        launch = {**SEED_LAUNCH, "model_path": str(twin_1b), "dtype": "float32"}
        assert httpx.post(f"{url}/v1/models", json=launch, timeout=300).status_code == 200
        body = {"model": "InternVL2.5", "messages": [{"role": "user", "content": "Talk."}], "max_tokens": 400,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
            lines = response.iter_lines()
            next(line for line in lines if '"content":"' in line and '"role"' not in line)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            try:  # no new connections once shutting down
                httpx.get(f"{url}/health", timeout=2)
                accepted_new = True
            except httpx.TransportError:
                accepted_new = False
            rest = [line for line in lines if line]
        assert not accepted_new
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["usage"]["completion_tokens"] == 400  # the whole answer, not cut off
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    messages = [json.loads(line)["message"] for line in stderr.splitlines() if line.startswith("{")]
    assert "terminated InternVL2.5" in messages  # unloaded on the way out
