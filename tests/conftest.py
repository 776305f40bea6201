"""Fixtures shared across test folders: a simulated two-node Ray cluster on loopback (cluster mode tests)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class RayCluster:
    cluster: Any  # ray.cluster_utils.Cluster
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
    files in a temporary folder, no usage stats, no auth token in the home folder. Shut down after the module."""
    _require_ray()
    home_token = Path.home() / ".ray" / "auth_token"
    home_token_before = home_token.exists()
    tmpdir = tempfile.mkdtemp(prefix="vlray-")  # short: Ray's unix sockets live under it (108-byte path limit)
    os.environ["RAY_TMPDIR"] = tmpdir
    from vlserve.serving.ray import env

    env.prepare(local=True)
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    second = cluster.add_node(num_cpus=2, resources={SECOND_NODE: 1})
    ray.init(address=cluster.address, namespace="vlserve-tests", log_to_driver=False)
    try:
        yield RayCluster(cluster, cluster.head_node.node_id, second.node_id, tmpdir, home_token_before)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmpdir, ignore_errors=True)
