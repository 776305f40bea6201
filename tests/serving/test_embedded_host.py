"""The embedded host: launch phases and progress, uids, replicas spread least-in-flight, aborts, terminate."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest
from stub_engine import StubFactory

from vlserve.engines.base import GenerateRequest, SamplingParams
from vlserve.errors import Conflict, DownloadError, EngineUnavailable, ModelNotReady, NotFound
from vlserve.registry import Registry, resolve
from vlserve.serving.embedded import EmbeddedHost
from vlserve.serving.records import LaunchRequest, Phase, allocate_uid


@pytest.fixture
def resolved(tmp_path):
    return resolve(Registry(tmp_path), model_name="InternVL2.5", model_engine="Transformers",
                   model_format="pytorch", model_size_in_billions=1, quantization="none")


def fetch_instantly(resolved, *, download_hub=None, model_path=None, on_progress=None) -> Path:
    on_progress(1.0)
    return Path("/nonexistent/model")


def make_host(factory: StubFactory, fetch=fetch_instantly) -> EmbeddedHost:
    return EmbeddedHost(fetch_model=fetch, factory_for=lambda engine: factory)


async def launched(resolved, replica: int = 1, **template) -> tuple[EmbeddedHost, StubFactory]:
    """A host with one ready model (uid InternVL2.5) on stub engines built from `template`."""
    factory = StubFactory(template=template)
    host = make_host(factory)
    await host.launch(LaunchRequest(resolved, replica=replica))
    await host.wait_ready("InternVL2.5")
    return host, factory


def request(rid: str = "r1", n: int = 1) -> GenerateRequest:
    return GenerateRequest(rid, (), SamplingParams(n=n))


def test_uids_default_to_the_model_name_and_are_suffixed_when_taken():
    assert allocate_uid(None, "InternVL2.5", []) == "InternVL2.5"
    assert allocate_uid(None, "InternVL2.5", ["InternVL2.5"]) == "InternVL2.5-1"
    assert allocate_uid(None, "InternVL2.5", ["InternVL2.5", "InternVL2.5-1"]) == "InternVL2.5-2"
    assert allocate_uid("mine", "InternVL2.5", ["InternVL2.5"]) == "mine"
    with pytest.raises(Conflict, match="already in use"):
        allocate_uid("mine", "InternVL2.5", ["mine"])


async def test_launch_goes_downloading_loading_ready_with_progress(resolved):
    gate_download, gate_load = threading.Event(), asyncio.Event()
    factory = StubFactory(template={"load_gate": gate_load})

    def slow_fetch(resolved, *, download_hub=None, model_path=None, on_progress=None):
        on_progress(0.5)
        gate_download.wait(5)
        return Path("/m")

    host = make_host(factory, slow_fetch)
    record = await host.launch(LaunchRequest(resolved))
    assert record.uid == "InternVL2.5" and record.phase is Phase.DOWNLOADING
    for _ in range(100):
        await asyncio.sleep(0.01)
        if host.get("InternVL2.5").download_progress == 0.5:
            break
    assert host.get("InternVL2.5").progress == pytest.approx(0.45)
    gate_download.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if host.get("InternVL2.5").phase is Phase.LOADING:
            break
    assert host.get("InternVL2.5").phase is Phase.LOADING
    gate_load.set()
    ready = await host.wait_ready("InternVL2.5", timeout=5)
    assert ready.phase is Phase.READY and ready.progress == 1.0 and ready.info.max_model_len == 4096
    await host.close()


async def test_launch_failure_keeps_the_record_in_error_with_the_reason(resolved):
    def failing_fetch(resolved, **kwargs):
        raise DownloadError("hub unreachable; pass --model-path")

    host = make_host(StubFactory(), failing_fetch)
    await host.launch(LaunchRequest(resolved, model_uid="m"))
    with pytest.raises(DownloadError, match="hub unreachable"):
        await host.wait_ready("m")
    assert host.get("m").phase is Phase.ERROR and host.get("m").error == "hub unreachable; pass --model-path"
    with pytest.raises(ModelNotReady, match="hub unreachable"):
        await host.stream("m", request()).__anext__()
    await host.terminate("m")
    with pytest.raises(NotFound):
        host.get("m")


async def test_an_engine_that_cannot_serve_the_spec_is_refused_before_anything_starts(resolved):
    host = make_host(StubFactory(refuse="needs a GPU"))
    with pytest.raises(EngineUnavailable, match="needs a GPU"):
        await host.launch(LaunchRequest(resolved))
    assert host.list() == []


async def test_options_and_n_gpu_reach_the_engine_and_replicas_are_separate_engines(resolved):
    factory = StubFactory()
    host = make_host(factory)
    await host.launch(LaunchRequest(resolved, replica=2, n_gpu=1, options={"max_batch_size": 4}))
    await host.wait_ready("InternVL2.5")
    assert len(factory.created) == 2 and all(e.loaded for e in factory.created)
    assert factory.options == [{"max_batch_size": 4, "n_gpu": 1}] * 2
    await host.terminate("InternVL2.5")
    assert all(e.unloaded for e in factory.created)


async def test_requests_go_to_the_replica_with_the_fewest_in_flight(resolved):
    host, factory = await launched(resolved, replica=2, step_s=0.05)
    first, second = host.stream("InternVL2.5", request("a")), host.stream("InternVL2.5", request("b"))
    await first.__anext__()
    await second.__anext__()
    assert host.in_flight("InternVL2.5") == (1, 1)
    assert [len(e.seen) for e in factory.created] == [1, 1]
    await first.aclose()
    await second.aclose()
    assert host.in_flight("InternVL2.5") == (0, 0)
    third = [d async for d in host.stream("InternVL2.5", request("c"))]
    assert "".join(d.text for d in third) == "hello world"
    await host.close()


async def test_a_stream_closed_early_aborts_the_engine_request(resolved):
    host, factory = await launched(resolved, step_s=0.01)
    stream = host.stream("InternVL2.5", request("gone"))
    await stream.__anext__()
    await stream.aclose()
    assert factory.created[0].aborted == ["gone"]
    finished = [d async for d in host.stream("InternVL2.5", request("done"))]
    assert finished[-1].finish_reason == "stop" and factory.created[0].aborted == ["gone"]
    await host.close()


async def test_a_cancelled_consumer_aborts_the_engine_request(resolved):
    host, factory = await launched(resolved, step_s=10)

    async def consume():
        async for _ in host.stream("InternVL2.5", request("cancelled")):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert factory.created[0].aborted == ["cancelled"]
    assert host.in_flight("InternVL2.5") == (0,)
    await host.close()


async def test_terminate_during_loading_cancels_the_launch_and_frees_the_uid(resolved):
    gate = asyncio.Event()
    factory = StubFactory(template={"load_gate": gate})
    host = make_host(factory)
    await host.launch(LaunchRequest(resolved, model_uid="m"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if factory.created:
            break
    await host.terminate("m")
    assert host.list() == [] and factory.created[0].unloaded
    gate.set()
    await host.launch(LaunchRequest(resolved, model_uid="m"))
    assert (await host.wait_ready("m")).phase is Phase.READY
    await host.close()
