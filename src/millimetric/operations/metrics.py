"""The server's Prometheus metrics: defined once here, counted where things happen, served by
`GET /metrics` (`millimetric.api.metrics`).

A leaf module (it imports only `prometheus_client`), so any layer may count into it: the API
(requests), the writer (events accepted), the event stores (flush and insert latency), without a
dependency pointing up. Under `serve` every process writes its samples to files in the directory
`millimetric.operations.metrics_dir` chose before this module was imported, and a scrape sums
them; anywhere else (CLI commands, tests in one process) the samples stay in memory.

Requests are tallied in plain dictionaries and published to the shared files once a second (and
before a scrape), so a scrape may see another worker's last second late; scrape-time gauges
(spool, forget jobs) cost nothing until scraped.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter as Tally
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric

from millimetric.operations.metrics_dir import ENV

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUBLISH_SECONDS = 1.0
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("millimetric_http_requests", "HTTP requests answered, by route, method and status.",
                   ["route", "method", "status"])  # fmt: skip
REQUEST_SECONDS = Histogram(
    "millimetric_http_request_duration_seconds",
    "Time from a request's arrival to its response's start, by route (the read routes' are the read latencies).",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter("millimetric_rate_limited_requests", "Requests refused with 429 rate_limited, by route.",
                       ["route"])  # fmt: skip
EVENTS_ACCEPTED = Counter("millimetric_events_accepted", "Events made durable by the ingest writer.")
EVENTS_DROPPED = Counter("millimetric_events_dropped", "Events accepted but not stored, by reason.", ["reason"])
EVENTS_DUPLICATE = Counter(
    "millimetric_events_duplicate", "Events answered as accepted but stored once: an event_id seen before."
)
QUEUE_EVENTS = Gauge(
    "millimetric_ingest_queue_events",
    "Events waiting for the writer's next commit, summed over the worker processes.",
    multiprocess_mode="livesum",
)
FLUSH_SECONDS = Histogram(
    "millimetric_store_flush_duration_seconds",
    "Time to move the journal's (spool's) rows into the event store proper, per flush.",
    buckets=_LATENCY_BUCKETS,
)
CLICKHOUSE_INSERT_SECONDS = Histogram(
    "millimetric_clickhouse_insert_duration_seconds",
    "Time of one insert of spooled rows into ClickHouse, retries included.",
    buckets=_LATENCY_BUCKETS,
)

_BOUNDS = (*_LATENCY_BUCKETS, float("inf"))
_counts: dict[tuple[str, str, int], int] = {}
_latencies: dict[str, list[float]] = {}  # route -> observations per bucket, then their sum


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request, tallied in this process until `publish`: a write to the shared
    files costs a lock and an mmap write per value (a counter and a histogram took 18 us a
    request on the bench machine, against about 1 us for these tallies). Event loop only."""
    key = (route, method, status)
    _counts[key] = _counts.get(key, 0) + 1
    tally = _latencies.get(route)
    if tally is None:
        tally = _latencies[route] = [0.0] * (len(_BOUNDS) + 1)
    tally[bisect.bisect_left(_BOUNDS, seconds)] += 1
    tally[-1] += seconds


def publish() -> None:
    """Move the request tallies into the metrics every process's scrape reads (each worker does
    this every `PUBLISH_SECONDS`, and before answering a scrape). Event loop only."""
    global _counts, _latencies
    counts, latencies = _counts, _latencies
    _counts, _latencies = {}, {}
    for (route, method, status), n in counts.items():
        REQUESTS.labels(route, method, str(status)).inc(n)
        if status == 429:
            RATE_LIMITED.labels(route).inc(n)
    for route, tally in latencies.items():
        child = REQUEST_SECONDS.labels(route)
        # prometheus-client (pinned) has no public call for many observations at once.
        for bucket, observed in zip(child._buckets, tally):
            if observed:
                bucket.inc(observed)
        child._sum.inc(tally[-1])


def count_accepted(events: int) -> None:
    EVENTS_ACCEPTED.inc(events)


def count_dropped(reasons: Tally[str]) -> None:
    for reason, events in reasons.items():
        EVENTS_DROPPED.labels(reason).inc(events)


def count_duplicates(events: int) -> None:
    EVENTS_DUPLICATE.inc(events)


def set_queue_depth(events: int) -> None:
    QUEUE_EVENTS.set(events)


def process_exiting() -> None:
    """Take this process's live gauges out of the sums (a worker stopping)."""
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(os.getpid())


def gauge(name: str, documentation: str, values: Iterable[tuple[dict[str, str], float]]) -> Metric:
    """A gauge read at scrape time (from the stores): it describes the whole server, not one process."""
    family: GaugeMetricFamily | None = None
    for labels, value in values:
        if family is None:
            family = GaugeMetricFamily(name, documentation, labels=list(labels))
        family.add_metric(list(labels.values()), value)
    return family or GaugeMetricFamily(name, documentation)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(scraped: list[Metric]) -> bytes:
    """The text exposition: every process's samples, summed, then the scrape-time gauges."""
    if os.environ.get(ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    extra = CollectorRegistry(auto_describe=False)
    extra.register(_Families(scraped))
    return text + generate_latest(extra)
