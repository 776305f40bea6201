"""Freed memory goes back to the OS after a load and after an unload (engines/transformers_engine/heap.py).

Each check runs in a fresh interpreter with glibc told never to trim on its own (MALLOC_TRIM_THRESHOLD_) and to
serve every size from its heap (MALLOC_MMAP_THRESHOLD_), so what is observed is what vlserve releases, not what
glibc happened to; each also shows that the memory in question was there to release (the control)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux",
                                reason="reads RssAnon from Linux's /proc and relies on glibc's malloc")  # fmt: skip

GLIBC_KEEPS_EVERYTHING = {"MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}
MIB = 1 << 20

RSS = """
import json, sys
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
"""

HELPER = RSS + """
from vlserve.engines.transformers_engine.heap import release_freed_heap
start = anon()
blocks = [bytearray(1 << 20) for _ in range(200)]
held = anon()
del blocks
freed = anon()
release_freed_heap()
print(json.dumps({"start": start, "held": held, "freed": freed, "released": anon()}))
"""

ENGINE = RSS + """
import asyncio
from tests.engines.conftest import resolved_for
from vlserve.engines import get_factory

def cycle():
    engine = get_factory("Transformers").create(resolved_for("InternVL2_5-1B"), sys.argv[1], {"dtype": "float32"})
    asyncio.run(engine.load())
    loaded = anon()
    asyncio.run(engine.unload())
    return loaded

cycle()  # imports and one-time caches, so that the baseline below is the engine-free process
base = anon()
loaded = cycle()
print(json.dumps({"base": base, "loaded": loaded, "unloaded": anon()}))
"""


def _run(code: str, *args: str) -> dict[str, int]:
    env = {**os.environ, **GLIBC_KEEPS_EVERYTHING}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, env=env,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_release_freed_heap_returns_what_glibc_kept():
    seen = _run(HELPER)
    assert seen["held"] - seen["start"] > 150 * MIB, seen
    assert seen["freed"] - seen["start"] > 150 * MIB, f"glibc released the blocks by itself; no control: {seen}"
    assert seen["released"] - seen["start"] < 50 * MIB, seen


def test_an_unloaded_engine_leaves_its_memory_to_the_os(twin_dir):
    seen = _run(ENGINE, str(twin_dir("InternVL2_5-1B")))
    grown = seen["loaded"] - seen["base"]
    assert grown > 10 * MIB, f"the twin's load did not show; no control: {seen}"
    assert seen["unloaded"] - seen["base"] < grown / 4, seen
