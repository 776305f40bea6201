"""The harness's own torch work leaves no OpenMP team on the calling thread (benchmarks/threads.py: a lingering
team slowed the in-process engine it measured beside by a fifth). Observed as the process's OS threads, in a fresh
interpreter so that nothing earlier in the test session has already given the main thread a team."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from benchmarks.scenarios import bounds
from benchmarks.threads import on_own_thread

def count():  # once settled: an ended thread's OpenMP workers leave a moment after it
    threads = len(os.listdir("/proc/self/task"))
    for _ in range(40):
        time.sleep(0.05)
        threads, before = len(os.listdir("/proc/self/task")), threads
        if threads == before:
            return threads
    return threads

big = on_own_thread(torch.ones, 4_000_000)  # filling it is a parallel op too
seen = {"start": count()}
bounds.read_bandwidth(gib=0.02, calls=1)
bounds.copy_bandwidth(gib=0.02, calls=1)
seen["bounds"] = count()
seen["sum on own thread"] = (on_own_thread(lambda: float(big.sum())), count())[1]
big.sum()  # the control: the same op on this thread leaves its team behind
seen["sum here"] = count()
print(json.dumps(seen))
"""


def _probe() -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO)], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "2", "PATH": ""}, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_bounds_and_on_own_thread_leave_no_openmp_team_behind():
    seen = _probe()
    assert seen["sum here"] > seen["start"], f"the control did not show a team; the probe sees nothing: {seen}"
    assert seen["bounds"] == seen["start"] and seen["sum on own thread"] == seen["start"], seen


def test_on_own_thread_returns_and_raises_like_a_call():
    if str(REPO) not in sys.path:  # `benchmarks` is a top-level package of the repository
        sys.path.insert(0, str(REPO))
    from benchmarks.threads import on_own_thread

    assert on_own_thread(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ValueError, match="no"):
        on_own_thread(lambda: (_ for _ in ()).throw(ValueError("no")))
