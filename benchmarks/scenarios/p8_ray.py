"""P8: what cluster mode costs. The same model (the full-size 1B architecture, and the twin) served by two vlserve
servers, each its own process, with the same client and request mix: one with the Ray host (`cluster="ray"`: the
model replica is a Ray actor in its own process, deltas cross Ray in batched items), one with the embedded host (the
model in the server process). Ratios: output tok/s Ray / embedded and TTFT embedded / Ray, at each concurrency. The
Ray replica reserves both cores (`ray_cpus_per_replica=2`, which also sets its torch threads) so the engines compute
alike.
"""

from __future__ import annotations

import importlib.util

from benchmarks import models
from benchmarks.load import run_http
from benchmarks.results import ScenarioResult, skipped
from benchmarks.scenarios import Context
from benchmarks.scenarios.compare import Side, sweep
from benchmarks.servers import launch, vlserve_available, vlserve_server
from benchmarks.workload import text_mix

ID, TITLE = "P8", "Ray host vs embedded host: output tok/s and TTFT"
BASELINE = "the embedded host (the default), same twin, same client"
UID = "p8"
TARGET = 0.9


def run(ctx: Context) -> ScenarioResult:
    available, reason = vlserve_available()
    if not available or importlib.util.find_spec("ray") is None:
        return skipped(ID, TITLE, BASELINE, reason or "Ray is not installed (pip install -e .[cluster])")
    result = ScenarioResult(ID, TITLE, BASELINE)
    tokens = ctx.config.p1_max_tokens
    variants = [("1B twin, text", models.twin)]
    if ctx.config.p1_full_size:  # the architecture the target is about: realistic per-token work
        variants.insert(0, ("1B full-size, text", models.full_size))
    for label, prepare in variants:
        model = prepare(ctx.work_dir)
        ray_server = vlserve_server(ctx.work_dir, cluster="ray", ray_cpus_per_replica=2)
        with ray_server as ray_side, vlserve_server(ctx.work_dir) as embedded:
            for server in (ray_side, embedded):
                launch(server, models.launch_body(model, UID))
            sweep(ctx, result, label, Side("Ray", lambda specs, c: run_http(ray_side.url, UID, specs, c)),
                  Side("embedded", lambda specs, c: run_http(embedded.url, UID, specs, c)),
                  lambda n: text_mix(n, tokens), target=TARGET)  # fmt: skip
    result.notes.append(f"target ≥ {TARGET}×: Ray's per-item cost (~0.5 ms) is hidden by batching tokens per item "
                        f"(first token alone, then up to 20 ms / 32 tokens); {tokens} output tokens per request")
    return result
