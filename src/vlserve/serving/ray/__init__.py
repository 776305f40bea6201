"""Cluster mode on Ray: every model replica is a Ray actor (its own process), placed by Ray's scheduler.

Importing this package does not import Ray; `connect` prepares Ray's environment (vlserve.serving.ray.env), then
imports Ray and joins a cluster (or starts a local one) and returns the host. The embedded host never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vlserve.serving.ray import env

if TYPE_CHECKING:
    from vlserve.serving.ray.host import RayHost


def connect(address: str | None = None, *, num_cpus: int | None = None, **host_options: Any) -> RayHost:
    """A Ray host on the cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"), or on a one-machine cluster
    started here (loopback only) when `address` is None. `host_options` are RayHost's (placement_timeout_s, ...)."""
    env.prepare(local=address is None)
    import ray

    from vlserve.serving.ray.host import RayHost

    owns = False
    if not ray.is_initialized():
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, namespace="vlserve")
            owns = True
        else:
            ray.init(address=address, namespace="vlserve")
    return RayHost(owns_ray=owns, **host_options)
