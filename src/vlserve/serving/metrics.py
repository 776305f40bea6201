"""Prometheus metrics of one server. Each app gets its own registry, so several servers (or tests) in one process
never collide on metric names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "vlserve_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )
        self.http_latency = Histogram(
            "vlserve_http_request_duration_seconds", "HTTP request latency (streams: until the last byte).",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter("vlserve_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generated_tokens = Counter("vlserve_generated_tokens", "Completion tokens generated.", ["model"], registry=r)
        self.ttft = Histogram(
            "vlserve_time_to_first_token_seconds", "Time from request to the first generated text.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.generation_latency = Histogram(
            "vlserve_generation_duration_seconds", "Time from request to the last generated token.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.running_models = Gauge("vlserve_running_models", "Models launched and ready.", registry=r)

    def count_running_models(self, count: Callable[[], int]) -> None:
        self.running_models.set_function(count)

    def watch_caches(self, records: Callable[[], list[Any]]) -> None:
        """Export each replica's engine caches (encoder outputs, prompt prefixes) from the model records."""
        self.registry.register(_CacheCollector(records))

    def record_generation(self, model: str, prompt: int, completion: int, ttft: float | None, total: float) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.generated_tokens.labels(model).inc(completion)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
        self.generation_latency.labels(model).observe(total)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_CACHE_GAUGES = {"bytes": "Bytes held", "budget_bytes": "Byte budget", "entries": "Entries held"}
_CACHE_COUNTERS = {"hits": "Lookups that found an entry", "misses": "Lookups that found none",
                   "evictions": "Entries evicted to stay within the budget",
                   "tokens_reused": "Prompt tokens taken from the cache instead of computed"}  # fmt: skip


class _CacheCollector:
    """vlserve_cache_<figure>{model, replica, cache}: read from the records at every scrape."""

    def __init__(self, records: Callable[[], list[Any]]) -> None:
        self.records = records

    def collect(self) -> Iterator[Any]:
        labels = ["model", "replica", "cache"]
        gauges = {k: GaugeMetricFamily(f"vlserve_cache_{k}", f"{h} by an engine cache.", labels=labels)
                  for k, h in _CACHE_GAUGES.items()}  # fmt: skip
        counters = {k: CounterMetricFamily(f"vlserve_cache_{k}", f"{h} (engine cache).", labels=labels)
                    for k, h in _CACHE_COUNTERS.items()}  # fmt: skip
        for record in self.records():
            for replica in record.replicas:
                for cache, figures in (replica.caches or {}).items():
                    values = [record.uid, str(replica.index), cache]
                    for name, family in (gauges | counters).items():
                        if name in figures:
                            family.add_metric(values, figures[name])
        yield from gauges.values()
        yield from counters.values()
