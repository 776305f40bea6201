"""Torch work off the scheduler thread runs on threads that end with it, and an idle scheduler's own thread ends too
(see engines/threads.py and scheduler.py: a lingering thread's OpenMP team throttled every other decode step)."""

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


def _parked(scheduler, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not (scheduler._parked and not scheduler._thread.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return scheduler._parked and not scheduler._thread.is_alive()


async def test_an_idle_scheduler_lets_its_thread_go_and_a_request_starts_another(engine_for):
    """Idle for IDLE_PARK_S, the loop's thread ends (its OpenMP team with it); the next request runs on a new thread
    and answers as before, and aborting a request that is over does not touch a later one of the same id."""
    from tests.engines.test_transformers_engine import GREEDY, answer, ask, image, tokens_of

    engine = engine_for("InternVL2_5-1B")
    scheduler = engine.scheduler
    first = await answer(engine, ask("Describe.", image(3)), GREEDY, "parked-1")
    assert _parked(scheduler)
    before = scheduler._thread
    await engine.abort("parked-1")  # over already: dropped, as nothing runs
    again = await answer(engine, ask("Describe.", image(3)), GREEDY, "parked-1")
    assert scheduler._thread is not before and tokens_of(again) == tokens_of(first)
    assert again[-1].finish_reason == first[-1].finish_reason != "abort"
    assert _parked(scheduler)


async def test_a_parked_model_unloads_and_then_refuses_requests(twin_dir, resolve_spec):
    from vlserve.engines import get_factory
    from vlserve.errors import EngineDead

    engine = get_factory("Transformers").create(resolve_spec("InternVL2_5-1B"), twin_dir("InternVL2_5-1B"), {})
    await engine.load()
    scheduler = engine.scheduler
    try:
        assert _parked(scheduler)  # loaded, never asked
    finally:
        await engine.unload()
    assert scheduler.failure == "the model was unloaded" and not scheduler._thread.is_alive()
    with pytest.raises(EngineDead):
        scheduler.submit(object())
