"""Prometheus metrics computed from the store at scrape time.

Nothing is counted in process memory, so the numbers are right however many workers, beats and API
processes run: every scrape reads the same store the workers write. Run counts come from
``sync_runs`` and so drop when old runs are pruned; Prometheus's ``rate()`` treats that as a reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.queries import DatasetReader
from worker.broker import broker_url_of
from worker.health import STATES, system_health
from worker.run_log import bytes_fetched, duration_histogram, run_counts
from worker.settings import Settings

DURATION_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class StoreCollector(Collector):
    def __init__(self, reader: DatasetReader, settings: Settings, now: datetime) -> None:
        self.reader, self.settings, self.now = reader, settings, now

    def collect(self) -> Iterator[Metric]:
        yield from self._datasets()
        yield from self._runs()
        yield from self._system()

    def _datasets(self) -> Iterator[Metric]:
        labels = ["dataset", "category"]
        state = GaugeMetricFamily(
            "datasync_dataset_state",
            "1 for the dataset's current health state, 0 for the others",
            labels=[*labels, "state"],
        )
        success = GaugeMetricFamily(
            "datasync_dataset_last_success_timestamp_seconds", "Unix time of the last successful sync", labels=labels
        )
        options = GaugeMetricFamily("datasync_dataset_options", "Options in the stored list", labels=labels)
        failures = GaugeMetricFamily(
            "datasync_dataset_consecutive_failures", "Failed attempts since the last success", labels=labels
        )
        for key, _, category, count, health in self.reader.all_health(self.now):
            for name in STATES:
                state.add_metric([key, category, name], 1.0 if health.state == name else 0.0)
            if health.last_success_at:
                success.add_metric([key, category], health.last_success_at.timestamp())
            options.add_metric([key, category], count)
            failures.add_metric([key, category], health.consecutive_failures)
        yield from (state, success, options, failures)

    def _runs(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "datasync_runs", "Sync attempts in the kept history", labels=["status", "trigger", "error_kind"]
        )
        for status, trigger, kind, count in run_counts(self.reader.sessions):
            runs.add_metric([status, trigger, kind], count)
        yield runs
        fetched = CounterMetricFamily(
            "datasync_bytes_fetched", "Body bytes downloaded by the kept sync attempts", labels=["dataset"]
        )
        for key, total in bytes_fetched(self.reader.sessions):
            fetched.add_metric([key], total)
        yield fetched
        cumulative, total, seconds = duration_histogram(self.reader.sessions, DURATION_BOUNDS)
        buckets = [(f"{bound:g}", float(count)) for bound, count in zip(DURATION_BOUNDS, cumulative, strict=True)]
        yield HistogramMetricFamily(
            "datasync_sync_duration_seconds",
            "Duration of finished sync attempts (skips excluded)",
            buckets=[*buckets, ("+Inf", float(total))],
            sum_value=seconds,
        )

    def _system(self) -> Iterator[Metric]:
        system = system_health(self.settings, broker_url_of(self.settings), self.now)
        up = GaugeMetricFamily(
            "datasync_component_up", "1 when the part of the system answers well", labels=["component"]
        )
        for component in system.components:
            up.add_metric([component.name], 1.0 if component.status == "ok" else 0.0)
        yield up
        yield GaugeMetricFamily("datasync_workers_online", "Workers that answered a ping", value=len(system.workers))
        optional = (
            (
                "datasync_scheduler_heartbeat_age_seconds",
                "Seconds since beat last sent a scan",
                system.heartbeat_age_seconds,
            ),
            ("datasync_queue_length", "Tasks waiting in the broker queue", system.queue_length),
            (
                "datasync_queue_oldest_age_seconds",
                "Seconds the oldest queued task has waited",
                system.oldest_queued_seconds,
            ),
        )
        for name, documentation, value in optional:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=float(value))


def render(reader: DatasetReader, settings: Settings, now: datetime) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(reader, settings, now))
    return generate_latest(registry), CONTENT_TYPE_LATEST
