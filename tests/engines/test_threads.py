"""Torch work off the scheduler thread runs on threads that end with it (see engines/threads.py:
a lingering helper thread's OpenMP team throttled every later decode step)."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from vlserve.engines.threads import in_own_thread


def _alive(name: str) -> list[str]:
    """Threads called exactly `name` (other tests' threads may share a prefix: the API tests' 'vlserve-test-server')."""
    return [t.name for t in threading.enumerate() if t.name == name]


def _wait_gone(name: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while _alive(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _alive(name)


async def test_runs_on_a_thread_that_ends():
    where = await in_own_thread("vlserve-threads-probe", lambda: threading.current_thread().name)
    assert where == "vlserve-threads-probe" and where != threading.current_thread().name
    assert _wait_gone("vlserve-threads-probe") == []


_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def test_the_callers_context_variables_go_along():
    _REQUEST_ID.set("req-7")
    assert await in_own_thread("vlserve-threads-probe", _REQUEST_ID.get) == "req-7"


async def test_exceptions_reach_the_caller():
    def fail():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await in_own_thread("vlserve-threads-probe", fail)


async def test_engine_leaves_no_helper_thread_after_load_and_a_request(engine_for):
    from tests.engines.test_transformers_engine import GREEDY, answer, ask, image

    engine = engine_for("InternVL2_5-1B")
    deltas = await answer(engine, ask("Describe.", image(2)), GREEDY)
    assert deltas[-1].finish_reason is not None
    assert _wait_gone("vlserve-load") == [] and _wait_gone("vlserve-prep") == []
    assert len(_alive("vlserve-transformers-scheduler")) >= 1
