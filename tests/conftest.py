"""Fixtures shared across test folders: a simulated two-node Ray cluster on loopback (cluster mode tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class RayCluster:
    head_id: str
    second_id: str  # the second node; it alone has the custom resource SECOND_NODE
    tmpdir: str
    home_token_before: bool  # whether ~/.ray/auth_token existed before the cluster started


SECOND_NODE = "second_node"


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise  # CI installs the test extra, which includes Ray: a missing Ray there is a broken install
        pytest.skip("Ray is not installed (pip install -e .[cluster])")


@pytest.fixture(scope="module")
def ray_cluster() -> RayCluster:
    """Two Ray nodes in this machine (2 logical CPUs each), the driver connected; everything on loopback, Ray's
    files in a temporary folder, no usage stats, no auth token in the home folder. Shut down after the module.
    The nodes run under a fresh process (tests/ray_cluster_main.py says why), with this process's Ray environment."""
    _require_ray()
    home_token = Path.home() / ".ray" / "auth_token"
    home_token_before = home_token.exists()
    tmpdir = tempfile.mkdtemp(prefix="vlray-")  # short: Ray's unix sockets live under it (108-byte path limit)
    os.environ["RAY_TMPDIR"] = tmpdir
    from vlserve.serving.ray import env

    env.prepare(local=True)
    import ray

    nodes = _start_nodes()
    try:
        up = _read_up_line(nodes)
        ray.init(address=up["address"], namespace="vlserve-tests", log_to_driver=False)
        try:
            yield RayCluster(up["head_id"], up["second_id"], tmpdir, home_token_before)
        finally:
            ray.shutdown()
    finally:
        _stop_nodes(nodes)
        shutil.rmtree(tmpdir, ignore_errors=True)


def _start_nodes() -> subprocess.Popen:
    main = Path(__file__).with_name("ray_cluster_main.py")
    return subprocess.Popen([sys.executable, str(main), SECOND_NODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # stderr: the test's own, where Ray's start-up messages belong


def _read_up_line(nodes: subprocess.Popen) -> dict[str, str]:
    """The line the node process prints once both nodes are up (after whatever else Ray prints to standard output);
    the process failing to start fails the fixture at once."""
    for line in nodes.stdout:  # a hang here ends at pytest-timeout, with every thread's stack printed
        if line.startswith('{"address"'):
            return json.loads(line)
    raise RuntimeError(f"the Ray node process exited ({nodes.wait()}) before both nodes were up; see its stderr")


def _stop_nodes(nodes: subprocess.Popen) -> None:
    nodes.stdin.close()  # the process shuts the cluster down and exits
    try:
        nodes.wait(timeout=120)
    except subprocess.TimeoutExpired:
        nodes.kill()
        nodes.wait()
