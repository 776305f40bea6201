"""run_server (what `vlserve serve` calls) in its own process: it serves, logs one JSON object per line with the
request id, and stops cleanly on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from api_helpers import free_port

from vlserve.api.app import run_server


def test_run_server_serves_and_logs_json_lines(tmp_path):
    port = free_port()
    code = f"from vlserve.api.app import run_server; run_server(host='127.0.0.1', port={port}, log_level='info')"
    env = {**os.environ, "VLSERVE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Request-Id": "from-test"})
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert entries and len(entries) == len([line for line in stderr.splitlines() if line.strip()])
    [access] = [e for e in entries if e["logger"] == "vlserve.access"]
    assert access["request_id"] == "from-test" and access["status"] == 200 and access["path"] == "/health"
    assert proc.returncode == 0


def test_run_server_refuses_unknown_settings():
    with pytest.raises(Exception, match="log_level"):
        run_server(log_level="loud")
