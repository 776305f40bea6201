"""The harness's own torch work (bandwidth and matmul bounds, tiling timings, writing model folders, the naive
baseline's load) runs on threads that end with it.

Why: libgomp gives every thread that runs a parallel torch op its own OpenMP team, kept until that thread ends.
Once a process holds more OpenMP threads than cores, libgomp shortens the spin-wait of all of them, and the engine
under test pays at every step: measured on the 2-core machine, the full-size 1B decoded at 19.5 tok/s in-process,
and at 15.9 tok/s after one bandwidth sum had run on the harness's main thread (the same sum on a thread that ended:
19.0). vlserve's engine keeps its own torch work on such threads (engines/transformers_engine/threads.py); the
harness must not undo that for the in-process side of a comparison.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def on_own_thread(fn: Callable[..., T], *args: object) -> T:
    """fn(*args) on a fresh thread, waited for; its result returned, its exception raised here."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((fn(*args), None))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread below
            outcome.append((None, exc))

    thread = threading.Thread(target=run, name=f"bench-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    while thread.is_alive():  # join in slices so Ctrl-C / SIGTERM still reach the main thread
        thread.join(0.5)
    result, exc = outcome[0]
    if exc is not None:
        raise exc
    return result
