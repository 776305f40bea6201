"""A real vlserve server on loopback for the whole session: uvicorn in a thread on a free port, a temporary
VLSERVE_HOME, and one InternVL2.5-1B twin loaded once into the real Transformers engine (uid `InternVL2.5`).

Tests that launch more models terminate them themselves, so the session model is the only one left between tests.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_helpers import SEED_LAUNCH, SESSION_UID, LiveServer, start_server

from vlserve.api.app import create_app
from vlserve.config import ServerConfig


@pytest.fixture(scope="session")
def vlserve_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("vlserve-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLSERVE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def twin_1b(tmp_path_factory) -> Path:
    from vlserve.families.internvl2_5.twin import write_twin

    return write_twin("InternVL2_5-1B", tmp_path_factory.mktemp("twin-1b"))


@pytest.fixture(scope="session")
def live(vlserve_home) -> LiveServer:
    # the tests serve images from loopback stand-ins, which a default server refuses (tests/api/test_media_guard.py)
    config = ServerConfig(media_fetch_timeout_s=5, media_max_bytes=1_000_000, allow_private_media=True)
    server = start_server(create_app(config))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_uid(live, twin_1b) -> str:
    """The session's loaded model: launched once over HTTP, with the seed's parameters and the twin's path."""
    body = {**SEED_LAUNCH, "model_uid": SESSION_UID, "model_path": str(twin_1b), "dtype": "float32"}
    response = httpx.post(f"{live.url}/v1/models", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["model_uid"]


@pytest.fixture
def http(live) -> httpx.Client:
    with httpx.Client(base_url=live.url, timeout=120) as client:
        yield client
