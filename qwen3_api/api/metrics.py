"""Prometheus metrics of one app: request outcomes, tokens, latencies, and the engine's load at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
                    5.0, 10.0, 30.0, 60.0)


class _EngineCollector(Collector):
    """Reads ``engine.stats()`` when scraped, so the gauges are never stale and cost nothing per token."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            s = self._stats()
        except Exception:  # an engine that is starting or stopped has no stats; scrape the rest anyway
            return
        yield GaugeMetricFamily("qwen3_api_num_requests_running", "Sequences running in the engine.",
                                value=s.running)
        yield GaugeMetricFamily("qwen3_api_num_requests_waiting", "Sequences waiting for the engine.",
                                value=s.waiting)
        yield GaugeMetricFamily("qwen3_api_kv_cache_usage", "Share of KV-cache blocks in use (0..1).",
                                value=s.kv_usage)
        yield GaugeMetricFamily("qwen3_api_prefix_cache_hit_rate",
                                "Cached prompt tokens / prompt tokens looked up (0..1).",
                                value=s.prefix_cache_hit_rate)


class Metrics:
    """The app's metrics in their own registry (several apps in one process, as tests do, never collide)."""

    def __init__(self, engine_stats: Callable[[], Any] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qwen3_api_requests", "HTTP requests to /v1/* by endpoint and response status.",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("qwen3_api_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.completion_tokens = Counter("qwen3_api_completion_tokens",
                                         "Completion tokens generated (reasoning included).", registry=r)
        self.reasoning_tokens = Counter("qwen3_api_reasoning_tokens", "Reasoning tokens generated.", registry=r)
        self.cached_tokens = Counter("qwen3_api_cached_prompt_tokens", "Prompt tokens served from the prefix cache.",
                                     registry=r)
        self.ttft = Histogram("qwen3_api_time_to_first_token_seconds", "Time from request to first token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("qwen3_api_inter_token_latency_seconds", "Time between two output steps of a request.",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("qwen3_api_request_duration_seconds", "Time from request to last token.",
                             buckets=_LATENCY_BUCKETS, registry=r)
        if engine_stats is not None:
            r.register(_EngineCollector(engine_stats))

    def observe_usage(self, prompt: int, completion: int, reasoning: int, cached: int) -> None:
        """Add one request's token counts."""
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
        self.reasoning_tokens.inc(reasoning)
        self.cached_tokens.inc(cached)


class MetricsMiddleware:
    """Counts every /v1/* request by its response status (400s and 404s included, unlike the routes' view)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = path if not path.startswith("/v1/models/") else "/v1/models/{id}"
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
