"""/metrics in Prometheus format (prometheus-client), read from Cairn's database at each scrape.

The server keeps no counters of its own: several server processes may serve one deployment and
any may restart, so each scrape asks the database (`Client.stats`, a handful of GROUP BY queries)
and a collector turns the answer into metric families. The registry is built per scrape, never
the process-wide default: that one would mix in whatever else the process registered, and two
apps in one process (two deployments, or tests) would share a collector. Prometheus scrapes with
a viewer token (dashboards/README.md); dashboards/cairn.json draws these names, and a test holds
the two together.

| metric | type | labels |
|---|---|---|
| `cairn_runs` | gauge | state |
| `cairn_step_runs` | gauge | kind, state |
| `cairn_step_duration_seconds` | histogram | kind, state (computed steps: succeeded, failed, cancelled) |
| `cairn_run_queue_seconds` | histogram | (created → started, runs that started) |
| `cairn_cache_hits_total`, `cairn_cache_misses_total` | counter | kind |
| `cairn_store_written_bytes_total` | counter | type (bytes of the artifacts steps produced) |
| `cairn_release_audits_total` | counter | result (ok, failed) |
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cairn.client import Client
from cairn.engine.stats import Histogram
from cairn.engine.tokens import Principal
from cairn.server.auth import require

router = APIRouter()


class CairnCollector(Collector):
    """Cairn's metric families, from one `Client.stats()` per scrape."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        st = self.client.stats()
        runs = GaugeMetricFamily("cairn_runs", "Runs by state.", labels=["state"])
        for state, n in sorted(st.runs.items()):
            runs.add_metric([state], n)
        yield runs

        steps = GaugeMetricFamily(
            "cairn_step_runs",
            "Step runs (attempts and cache hits) by kind and state.",
            labels=["kind", "state"],
        )
        for (kind, state), n in sorted(st.step_runs.items()):
            steps.add_metric([kind, state], n)
        yield steps

        durations = HistogramMetricFamily(
            "cairn_step_duration_seconds",
            "Seconds from a step attempt's start to its end, by kind and how it ended "
            "(cache hits excluded).",
            labels=["kind", "state"],
        )
        for (kind, state), h in sorted(st.step_seconds.items()):
            durations.add_metric([kind, state], buckets(h), h.total)
        yield durations

        queue = HistogramMetricFamily(
            "cairn_run_queue_seconds",
            "Seconds from a run's creation (submission) to its driver starting it.",
        )
        queue.add_metric([], buckets(st.run_queue_seconds), st.run_queue_seconds.total)
        yield queue

        for name, counts, what in (
            ("cairn_cache_hits", st.cache_hits, "Step runs that reused a verified artifact."),
            (
                "cairn_cache_misses",
                st.cache_misses,
                "Steps that looked the cache up and computed (first attempts only).",
            ),
        ):
            family = CounterMetricFamily(name, what, labels=["kind"])
            for kind, n in sorted(counts.items()):
                family.add_metric([kind], n)
            yield family

        written = CounterMetricFamily(
            "cairn_store_written_bytes",
            "Bytes of the artifacts steps wrote to the store, by artifact type.",
            labels=["type"],
        )
        for type_, n in sorted(st.written_bytes.items()):
            written.add_metric([type_], n)
        yield written

        audits = CounterMetricFamily(
            "cairn_release_audits",
            "Audits of release bundles made through this deployment, by result.",
            labels=["result"],
        )
        for passed in (True, False):
            audits.add_metric(["ok" if passed else "failed"], st.audits.get(passed, 0))
        yield audits


def buckets(h: Histogram) -> list[tuple[str, float]]:
    """Prometheus's cumulative buckets, +Inf (every observation) last."""
    found: list[tuple[str, float]] = [
        (floatToGoString(b), n) for b, n in zip(h.bounds, h.below, strict=True)
    ]
    return [*found, ("+Inf", h.count)]


def registry(client: Client) -> CollectorRegistry:
    """A registry with nothing but Cairn's collector over `client`'s deployment."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CairnCollector(client))
    return reg


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, who: Annotated[Principal, Depends(require("viewer"))]) -> Response:
    # The format the scraper asks for (Accept): Prometheus's text format unless it wants
    # OpenMetrics, as prometheus-client's own exporters answer.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry(request.app.state.client)), media_type=content_type)
