"""Cluster-mode rules that need no cluster: launch parameters -> Ray resources and pinning, the placement failure
messages, and the coalescing of a delta stream into batches."""

from __future__ import annotations

import asyncio

import pytest

from vlserve.errors import InvalidRequest
from vlserve.registry import Registry, resolve
from vlserve.serving.ray.batching import Coalesce, coalesce
from vlserve.serving.ray.placement import placement_failure, plan_replicas
from vlserve.serving.records import LaunchRequest


def node(node_id: str, ip: str = "10.0.0.1", alive: bool = True, **resources: float) -> dict:
    return {"NodeID": node_id, "NodeManagerAddress": ip, "Alive": alive,
            "Resources": {"CPU": 8.0, f"node:{ip}": 1.0, **resources}}  # fmt: skip


def launch(engine: str = "Transformers", **fields) -> LaunchRequest:
    resolved = resolve(Registry.default(), model_name="InternVL2.5", model_engine=engine, model_format="pytorch",
                       model_size_in_billions=1 if engine == "Transformers" else 78, quantization="none")  # fmt: skip
    return LaunchRequest(resolved, **fields)


CPU_ONLY = [node("a" * 56), node("b" * 56, "10.0.0.2")]
WITH_GPUS = [node("a" * 56, GPU=8.0), node("b" * 56, "10.0.0.2", GPU=8.0)]


def test_n_gpu_auto_is_one_gpu_on_a_gpu_cluster_and_none_on_a_cpu_one():
    assert plan_replicas(launch(), CPU_ONLY, 1).needs() == {"CPU": 1}
    gpu = plan_replicas(launch(), WITH_GPUS, 2)
    assert gpu.needs() == {"CPU": 2, "GPU": 1} and gpu.engine_options == {"n_gpu": 1}
    assert plan_replicas(launch(n_gpu=None), WITH_GPUS, 1).needs() == {"CPU": 1}


def test_transformers_keeps_several_gpus_in_one_process_vllm_runs_them_tensor_parallel():
    split = plan_replicas(launch(n_gpu=2), WITH_GPUS, 1)
    assert (split.num_gpus, split.tensor_parallel, split.engine_options) == (2, 1, {"n_gpu": 2})
    tp = plan_replicas(launch("vLLM", n_gpu=4), WITH_GPUS, 1)
    assert (tp.num_gpus, tp.tensor_parallel) == (0, 4)
    assert tp.engine_options == {"n_gpu": 4, "distributed_executor_backend": "ray"}
    assert tp.bundles() == [{"CPU": 1, "GPU": 1.0}] + [{"GPU": 1.0}] * 3


def test_worker_ip_pins_by_address_or_node_id_and_unknown_ones_are_refused():
    assert plan_replicas(launch(worker_ip="10.0.0.2"), CPU_ONLY, 1).node_id == "b" * 56
    assert plan_replicas(launch(worker_ip="a" * 56), CPU_ONLY, 1).node_id == "a" * 56
    shared = [node("a" * 56, "127.0.0.1"), node("b" * 56, "127.0.0.1")]  # several nodes on one machine
    plan = plan_replicas(launch("vLLM", worker_ip="127.0.0.1", n_gpu=2), shared, 1)
    assert plan.node_id is None and plan.node_resource == "node:127.0.0.1"
    assert all(b["node:127.0.0.1"] == 0.001 for b in plan.bundles())
    with pytest.raises(InvalidRequest, match=r"worker_ip '10.0.0.9' is not an alive node.*10.0.0.1"):
        plan_replicas(launch(worker_ip="10.0.0.9"), CPU_ONLY, 1)
    dead = [node("a" * 56), node("c" * 56, "10.0.0.3", alive=False)]
    with pytest.raises(InvalidRequest, match="not an alive node"):
        plan_replicas(launch(worker_ip="10.0.0.3"), dead, 1)


def test_gpu_idx_and_bad_n_gpu_are_refused():
    with pytest.raises(InvalidRequest, match="gpu_idx is not supported on a Ray cluster") as refused:
        plan_replicas(launch(gpu_idx=(0, 1)), WITH_GPUS, 1)
    assert refused.value.param == "gpu_idx"
    with pytest.raises(InvalidRequest, match="n_gpu must be"):
        plan_replicas(launch(n_gpu="many"), WITH_GPUS, 1)


def test_placement_failures_say_whether_the_cluster_is_too_small_or_busy():
    too_big = placement_failure(plan_replicas(launch(n_gpu=16), WITH_GPUS, 1), 0, "m", 60, WITH_GPUS)
    assert "needs CPU 1, GPU 16 but no node of the Ray cluster has that much" in too_big.message
    assert "10.0.0.2 (bbbbbbbbbbbb): CPU 8, GPU 8" in too_big.message
    busy = placement_failure(plan_replicas(launch(n_gpu=4), WITH_GPUS, 1), 1, "m", 60, WITH_GPUS)
    assert "replica 1 of m within 60 s" in busy.message and "busy" in busy.message
    gpus_elsewhere = [node("a" * 56), node("b" * 56, "10.0.0.2", GPU=8)]
    pinned = plan_replicas(launch(n_gpu=4, worker_ip="10.0.0.1"), gpus_elsewhere, 1)  # pinned to the node without
    assert "no node" in placement_failure(pinned, 0, "m", 60, gpus_elsewhere).message


async def _source(items, gaps):
    for item, gap in zip(items, gaps):
        await asyncio.sleep(gap)
        yield item


async def test_the_first_item_goes_alone_then_items_are_coalesced_within_the_window():
    # item 0 at once; 1..4 arrive 1 ms apart (one batch within the 50 ms window); 5 after 100 ms (a batch alone)
    source = _source(range(6), [0, 0.001, 0.001, 0.001, 0.001, 0.1])
    batches = [b async for b in coalesce(source, Coalesce(max_wait_s=0.05, max_items=32))]
    assert batches == [[0], [1, 2, 3, 4], [5]]


async def test_batches_hold_at_most_max_items_and_an_error_arrives_after_the_items_before_it():
    batches = [b async for b in coalesce(_source(range(7), [0] * 7), Coalesce(max_wait_s=1.0, max_items=3))]
    assert [len(b) for b in batches] == [1, 3, 3] and sum(batches, []) == list(range(7))

    async def failing():
        yield 1
        yield 2
        raise ValueError("engine broke")

    got = []
    with pytest.raises(ValueError, match="engine broke"):
        async for batch in coalesce(failing(), Coalesce(max_wait_s=0.01)):
            got.extend(batch)
    assert got == [1, 2]


async def test_closing_the_batches_closes_the_source():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                await asyncio.sleep(0.001)
                yield 0
        finally:
            closed.set()

    batches = coalesce(endless(), Coalesce(max_wait_s=0.005))
    await anext(batches)
    await batches.aclose()
    await asyncio.wait_for(closed.wait(), 1)
