"""P6: launch-to-ready of the 1B twin through the API (`POST /v1/models`, wait_ready, then terminate) against the
bare engine load of the same folder in-process; overhead = the difference, per paired repeat.

Both sides are warm (one unrecorded launch and one bare load first), so module imports are paid by neither. What
the overhead covers: HTTP, spec resolution, checking the model folder, the host's launch phases, replica set-up.
"""

from __future__ import annotations

import itertools
import statistics

from benchmarks import models
from benchmarks.inprocess import InProcessEngine
from benchmarks.results import ScenarioResult, skipped
from benchmarks.scenarios import Context
from benchmarks.servers import launch, terminate, vlserve_available, vlserve_server
from benchmarks.stats import Figure, at_most, paired, timed

ID, TITLE = "P6", "Launch-to-ready through the API, minus the bare engine load (1B twin)"
BASELINE = "the bare Transformers engine load of the same folder, in-process"


def run(ctx: Context) -> ScenarioResult:
    available, reason = vlserve_available()
    if not available:
        return skipped(ID, TITLE, BASELINE, reason)
    model = models.twin(ctx.work_dir)
    uids = (f"p6-{n}" for n in itertools.count())

    def via_api() -> float:
        uid = next(uids)
        seconds = launch(server, models.launch_body(model, uid))
        terminate(server, uid)
        return seconds

    def bare() -> float:
        seconds, engine = timed(lambda: InProcessEngine(model))
        engine.close()
        return seconds

    with vlserve_server(ctx.work_dir) as server:
        times = paired(ctx.config.p6_repeats, {"api": via_api, "bare": bare})
    overhead = [a - b for a, b in zip(times["api"], times["bare"], strict=True)]
    result = ScenarioResult(ID, TITLE, BASELINE)
    result.check(Figure.of("launch-to-ready − bare load", "s", overhead), at_most(2.0, "s"))
    result.add(Figure.of("launch-to-ready via POST /v1/models", "s", times["api"]),
               Figure.of("bare engine load", "s", times["bare"]))  # fmt: skip
    ctx.log(f"P6 overhead {statistics.median(overhead):.2f} s")
    return result
