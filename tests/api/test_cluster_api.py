"""Cluster mode through the HTTP API: the cluster view of the embedded server (one local node), and a server on the
Ray host over a simulated two-node cluster (tests/conftest.py): launch with replica=2, placement in describe,
/v1/workers and `vlserve list`, streaming, a client disconnect reaching the actor, a replica killed mid-request
(a clean 500, the other replica keeps answering, the killed one comes back), an unplaceable launch, terminate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from api_helpers import SEED_LAUNCH, assert_openai_error, start_server

from vlserve.api.app import create_app
from vlserve.config import ServerConfig

UID = "clustered"


def ask(max_tokens: int = 8, **extra) -> dict:
    return {"model": UID, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": max_tokens,
            "temperature": 0, **extra}  # fmt: skip


def wait_for(check, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(every)
    return value


# -- the embedded server ---------------------------------------------------------------------------------------


def test_importing_the_api_does_not_import_ray():
    code = "import sys, vlserve.api.app, vlserve.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_the_embedded_server_is_one_local_node_holding_every_replica(http, model_uid):
    info = http.get("/v1/cluster/info").json()
    assert len(info) == 1 and info[0]["node_type"] == "Supervisor" and info[0]["cpu_count"] >= 1
    assert f"{model_uid}/0" in info[0]["replicas"]
    (worker,) = http.get("/v1/workers").json()
    assert worker["node_id"] == "local" and worker["resources"]["CPU"] >= 1
    placement = http.get(f"/v1/models/{model_uid}").json()["placement"]
    assert [(p["replica"], p["node_id"], p["state"]) for p in placement] == [(0, "local", "ready")]


def test_the_embedded_server_refuses_worker_ip(http):
    response = http.post("/v1/models", json={**SEED_LAUNCH, "model_uid": "pinned", "worker_ip": "10.0.0.2"})
    assert "--cluster ray" in assert_openai_error(response, 400)["message"]


# -- a server on the Ray host --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_server(ray_cluster, vlserve_home, twin_1b):
    from vlserve.serving.ray.host import RayHost

    host = RayHost(placement_timeout_s=60, max_restarts=2)
    server = start_server(create_app(ServerConfig(), host=host))
    body = {**SEED_LAUNCH, "model_uid": UID, "model_path": str(twin_1b), "replica": 2, "dtype": "float32",
            "num_threads": 1}  # fmt: skip
    response = httpx.post(f"{server.url}/v1/models", json=body, timeout=300)
    assert response.status_code == 200, response.text
    yield server
    server.stop()


@pytest.fixture
def api(ray_server) -> httpx.Client:
    with httpx.Client(base_url=ray_server.url, timeout=120) as client:
        yield client


def replicas(server):
    return server.services.host._slots[UID].replicas


def test_replicas_show_their_nodes_in_describe_workers_cluster_info_and_vlserve_list(api, ray_server, ray_cluster):
    placement = api.get(f"/v1/models/{UID}").json()["placement"]
    assert {p["node_id"] for p in placement} == {ray_cluster.head_id, ray_cluster.second_id}
    assert all(p["state"] == "ready" and p["node_ip"] == "127.0.0.1" for p in placement)
    workers = {w["node_id"]: w for w in api.get("/v1/workers").json()}
    assert set(workers) == {ray_cluster.head_id, ray_cluster.second_id}
    assert workers[ray_cluster.second_id]["resources"]["second_node"] == 1
    assert sorted(sum((w["replicas"] for w in workers.values()), [])) == [f"{UID}/0", f"{UID}/1"]
    types = sorted(n["node_type"] for n in api.get("/v1/cluster/info").json())
    assert types == ["Supervisor", "Worker"]

    from typer.testing import CliRunner

    from vlserve.cli import app

    result = CliRunner().invoke(app, ["list", "--endpoint", ray_server.url], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "Placement" in result.output and ray_cluster.second_id[:8] in result.output
    assert ray_cluster.head_id[:8] in result.output


def test_chat_streams_through_ray_and_requests_spread_over_both_replicas(api, ray_server):
    with api.stream("POST", "/v1/chat/completions", json=ask(12, ignore_eos=True, stream=True)) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and sum('"content"' in line for line in lines) >= 2
    before = [r.served for r in replicas(ray_server)]
    threads = [threading.Thread(target=lambda: api.post("/v1/chat/completions", json=ask(16, ignore_eos=True)))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r.served > b for r, b in zip(replicas(ray_server), before))
    served = [p["served"] for p in api.get(f"/v1/models/{UID}").json()["placement"]]
    assert sum(served) >= 5
    # each replica keeps its own engine caches; the host learns their figures after each request
    deadline = time.monotonic() + 10
    placement = api.get(f"/v1/models/{UID}").json()["placement"]
    while any(p["caches"] is None for p in placement):
        assert time.monotonic() < deadline, placement
        time.sleep(0.1)
        placement = api.get(f"/v1/models/{UID}").json()["placement"]
    assert all(p["caches"]["prefix"]["misses"] >= 1 for p in placement)


def test_a_client_disconnect_cancels_the_request_in_the_replica(api, ray_server):
    with api.stream("POST", "/v1/chat/completions", json=ask(4000, ignore_eos=True, stream=True)) as response:
        lines = response.iter_lines()
        next(line for line in lines if '"content"' in line and '"role"' not in line)
        replica = next(r for r in replicas(ray_server) if r.in_flight)
    import ray

    wait_for(lambda: ray.get(replica.actor.active.remote()) == [] and replica.in_flight == 0, timeout=15)


def test_a_replica_killed_mid_request_is_a_clean_500_the_other_answers_and_it_comes_back(api, ray_server):
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(r=api.post("/v1/chat/completions",
                                                                       json=ask(4000, ignore_eos=True))))
    thread.start()
    victim = wait_for(lambda: next((r for r in replicas(ray_server) if r.in_flight), None), timeout=30)
    time.sleep(0.3)  # well into generating
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the request on the killed replica hung"
    error = assert_openai_error(outcome["r"], 500, "engine_error")
    assert "was lost during request" in error["message"] and "retry" in error["message"]
    assert api.post("/v1/chat/completions", json=ask()).status_code == 200  # the healthy replica answers
    wait_for(lambda: victim.state == "ready", timeout=120)
    placement = api.get(f"/v1/models/{UID}").json()["placement"]
    assert placement[victim.index]["restarts"] == 1 and api.get(f"/v1/models/{UID}").json()["status"] == "ready"


def test_an_unplaceable_launch_is_a_400_with_the_reason(api, ray_server, twin_1b):
    host = ray_server.services.host
    host.placement_timeout_s, saved = 2, host.placement_timeout_s
    try:
        body = {**SEED_LAUNCH, "model_uid": "too-big", "model_path": str(twin_1b), "n_gpu": 8}
        error = assert_openai_error(api.post("/v1/models", json=body), 400)
    finally:
        host.placement_timeout_s = saved
    assert "needs CPU 1, GPU 8 but no node of the Ray cluster has that much" in error["message"]
    assert "too-big" not in [m["id"] for m in api.get("/v1/models").json()["data"]]
    gpu_idx = api.post("/v1/models", json={**SEED_LAUNCH, "model_path": str(twin_1b), "gpu_idx": [0]})
    assert "gpu_idx is not supported on a Ray cluster" in assert_openai_error(gpu_idx, 400)["message"]


def test_terminate_frees_every_replica(api, ray_server):
    import ray

    total = ray.cluster_resources()["CPU"]
    assert api.delete(f"/v1/models/{UID}").status_code == 200
    wait_for(lambda: ray.available_resources().get("CPU", 0) == total, timeout=30)
    assert all(w["replicas"] == [] for w in api.get("/v1/workers").json())
