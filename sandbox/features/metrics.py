"""Prometheus metrics of one engine (prometheus-client, a registry per engine).

stack_calls_total{door, language, outcome}
stack_call_duration_seconds{door, language}          histogram
stack_spawn_latency_seconds                          histogram: spawn to the launcher running
stack_running_calls, stack_queued_calls              gauges
stack_limit_hits_total{kind}                         timeout, cpu, memory, file_size, output
stack_bytes_in_total, stack_bytes_out_total
stack_build_cache_hits_total, stack_build_cache_misses_total
stack_warm_pool_size{language}                       gauge: interpreters loaded and waiting
stack_warm_pool_hits_total{language}                 calls given a loaded interpreter
stack_warm_pool_early_total{language}                ... one still loading (ahead of a cold start)
stack_warm_pool_misses_total{language}               calls of a warm service that started cold
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.engine import Engine
from ..core.observer import WarmUse
from ..core.process import Outcome

LIMIT_REASONS = {"timeout", "cpu", "memory", "file_size", "output"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The metrics of one engine; :meth:`render` gives the Prometheus text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("stack_calls", "Calls by front door, language and outcome",
                             ["door", "language", "outcome"], registry=self.registry)  # fmt: skip
        self.duration = Histogram(
            "stack_call_duration_seconds", "Wall time of calls", ["door", "language"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )  # fmt: skip
        self.spawn = Histogram(
            "stack_spawn_latency_seconds", "From spawn to the call's process tree running",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry,
        )  # fmt: skip
        self.limit_hits = Counter("stack_limit_hits", "Calls ended by a limit", ["kind"],
                                  registry=self.registry)  # fmt: skip
        self.bytes_in = Counter("stack_bytes_in", "Bytes written to calls' stdin",
                                registry=self.registry)  # fmt: skip
        self.bytes_out = Counter("stack_bytes_out", "Bytes read from calls' stdout",
                                 registry=self.registry)  # fmt: skip
        self.rejected = Counter("stack_rejected", "Calls refused because the queue was full",
                                registry=self.registry)  # fmt: skip
        self.pool_early = Counter("stack_warm_pool_early",
                                  "Calls given a warm interpreter still loading", ["language"],
                                  registry=self.registry)  # fmt: skip
        self.pool_hits = Counter("stack_warm_pool_hits", "Calls served by a warm interpreter",
                                 ["language"], registry=self.registry)  # fmt: skip
        self.pool_misses = Counter("stack_warm_pool_misses",
                                   "Calls of a warm service that started cold", ["language"],
                                   registry=self.registry)  # fmt: skip
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._live: list[Callable[[], tuple[int, int, int, int]]] = []
        self._pools: list[Callable[[], list[tuple[str, int]]]] = []
        self._connections: list[Callable[[], tuple[int, int, int]]] = []
        self.registry.register(_Live(self))

    def watch_engine(self, engine: Engine) -> None:
        """Count ``engine``'s calls, and read its load and pools at each scrape."""
        engine.observe(self)
        self.watch(lambda: (engine.statistics().running, engine.statistics().queued,
                            engine.builds.hits, engine.builds.misses))  # fmt: skip
        self.watch_pools(lambda: [(p.language, p.ready) for p in engine.pool_stats()])

    # -- the engine's Observer --

    def call_ended(self, door: str, language: str, outcome: Outcome) -> None:
        """Count one finished call."""
        usage = outcome.usage
        self.record(door, language, outcome.reason, usage.wall, usage.bytes_in, usage.bytes_out,
                    outcome.spawn)  # fmt: skip

    def call_refused(self) -> None:
        """Count a call refused for a full queue."""
        self.rejected.inc()

    def warm_served(self, language: str, use: WarmUse) -> None:
        """Count how a warm pool's call was served."""
        {"hit": self.pool_hits, "early": self.pool_early, "miss": self.pool_misses}[use].labels(
            language
        ).inc()

    def watch_pools(self, read: Callable[[], list[tuple[str, int]]]) -> None:
        """Read (language, interpreters ready) of each warm pool at each scrape."""
        self._pools.append(read)

    def watch_connections(self, read: Callable[[], tuple[int, int, int]]) -> None:
        """Read (connections open, refused at a cap, closed for taking no bytes) at each scrape."""
        self._connections.append(read)

    def watch(self, read: Callable[[], tuple[int, int, int, int]]) -> None:
        """Read (running, queued, build hits, build misses) at each scrape."""
        self._live.append(read)

    def record(self, door: str, language: str, reason: str, wall: float, bytes_in: int,
               bytes_out: int, spawn: float | None) -> None:  # fmt: skip
        """Count one finished call."""
        key = (door, language, reason)
        children = self._children.get(key)
        if children is None:
            # labels() checks and looks up its values each time: keep what it gives.
            children = (self.calls.labels(door, language, reason),
                        self.duration.labels(door, language))  # fmt: skip
            self._children[key] = children
        children[0].inc()
        children[1].observe(wall)
        if reason in LIMIT_REASONS:
            self.limit_hits.labels(reason).inc()
        if bytes_in:
            self.bytes_in.inc(bytes_in)
        if bytes_out:
            self.bytes_out.inc(bytes_out)
        if spawn is not None:
            self.spawn.observe(spawn)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _Live(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):  # type: ignore[no-untyped-def]
        running = queued = hits = misses = 0
        for read in self.metrics._live:
            r, q, h, m = read()
            running, queued, hits, misses = running + r, queued + q, hits + h, misses + m
        yield GaugeMetricFamily("stack_running_calls", "Calls running now", value=running)
        yield GaugeMetricFamily("stack_queued_calls", "Calls waiting for a slot", value=queued)
        yield CounterMetricFamily("stack_build_cache_hits", "Builds reused", value=hits)
        yield CounterMetricFamily("stack_build_cache_misses", "Builds compiled", value=misses)
        if self.metrics._connections:
            counts = [read() for read in self.metrics._connections]
            yield GaugeMetricFamily("stack_connections", "HTTP connections open",
                                    value=sum(c[0] for c in counts))  # fmt: skip
            yield CounterMetricFamily(
                "stack_connections_refused",
                "HTTP connections refused at the connection caps (503)",
                value=sum(c[1] for c in counts),
            )
            yield CounterMetricFamily(
                "stack_connections_stalled",
                "HTTP connections closed because the client stopped reading (send_timeout)",
                value=sum(c[2] for c in counts),
            )
        sizes: dict[str, int] = {}
        for read_pools in self.metrics._pools:
            for language, ready in read_pools():
                sizes[language] = sizes.get(language, 0) + ready
        if sizes:
            size = GaugeMetricFamily("stack_warm_pool_size", "Warm interpreters loaded and waiting",
                                     labels=["language"])  # fmt: skip
            for language, ready in sorted(sizes.items()):
                size.add_metric([language], ready)
            yield size
