"""A simulated two-node Ray cluster on loopback, run as its own process by the `ray_cluster` fixture (tests/conftest.py).

Why a process of its own: Ray starts its servers with `subprocess.Popen(..., preexec_fn=...)`, which runs Python in
the forked child before exec. Forked from the test process (torch's thread pools and every thread earlier tests left
running), that child can block for good on a lock another thread held at the fork: CI saw `gcs_server`'s start hang
past the 20-minute test timeout. This process has imported nothing but Ray when it forks.

Prints one JSON line {"address", "head_id", "second_id"} once both nodes are up, then keeps the cluster until its
standard input is closed (the fixture's teardown), and shuts it down.
"""

from __future__ import annotations

import json
import sys

from ray.cluster_utils import Cluster


def main(second_node_resource: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        second = cluster.add_node(num_cpus=2, resources={second_node_resource: 1})
        up = {"address": cluster.address, "head_id": cluster.head_node.node_id, "second_id": second.node_id}
        print(json.dumps(up), flush=True)
        sys.stdin.read()  # until the fixture closes our standard input (or dies)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
