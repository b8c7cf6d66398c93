"""Prometheus metrics: what the API counts as it happens, and what the database says at scrape time.

Two sources, chosen for Celery prefork and for workers on other hosts:
- **In the API process**: ingest (instances stored, duplicate, failed by reason, bytes; per protocol) and HTTP
  requests (by method, route template and status; durations). These happen in the process that serves
  /metrics. With ``gatekeeper serve --workers N`` (N > 1) the processes write prometheus-client's
  multiprocess files under ``PROMETHEUS_MULTIPROC_DIR`` (set by ``serve``) and a scrape sums them.
- **From the database, at scrape time** (``DatabaseCollector``): series by state, decisions by route and
  reason, completion-to-decision, scoring and segmentation durations (histograms), the manual queue's depth
  and oldest case, the outbox backlog, training jobs by state, the promoted model versions. A Celery worker's
  children are forked, replaced and may run on a GPU host the scraper never sees, so a worker keeps no
  metrics in memory: it writes each duration into the row that records its result, in the same
  transaction (``series_decisions.scoring_s``, ``completion_to_decision_s``, ``segmentations.duration_s``).
  Those survive restarts and are the same whichever API process is scraped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Float, case, func, select
from sqlalchemy.orm import Session

from app.db.states import CaseStatus, ModelStatus, SeriesStatus, TrainingJobStatus
from app.db.tables import Case, Instance, ModelVersion, OutboxEvent, Segmentation, Series, SeriesDecision, TrainingJob

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DECISION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WORK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)

INSTANCES = Counter("gatekeeper_instances", "Instances received, by protocol and outcome (stored, duplicate, failed)",
                    ["protocol", "outcome"])  # fmt: skip
FAILED = Counter("gatekeeper_instances_failed", "Instances refused, by protocol and failure reason",
                 ["protocol", "reason"])  # fmt: skip
BYTES = Counter("gatekeeper_instance_bytes", "Bytes of newly stored instances, by protocol", ["protocol"])
REQUESTS = Counter("gatekeeper_http_requests", "HTTP requests, by method, route template and status",
                   ["method", "route", "status"])  # fmt: skip
REQUEST_SECONDS = Histogram("gatekeeper_http_request_duration_seconds", "HTTP request durations, by route template",
                            ["method", "route"])  # fmt: skip


def observe_ingest(protocol: str, outcomes: Iterable[Any], sizes: Iterable[int]) -> None:
    """Count one batch: ``outcomes`` are ``app.services.ingest.Outcome``, ``sizes`` the received file sizes."""
    for outcome, size in zip(outcomes, sizes, strict=False):
        if outcome.reason is not None:
            INSTANCES.labels(protocol, "failed").inc()
            FAILED.labels(protocol, outcome.reason.name.lower()).inc()
        elif outcome.duplicate:
            INSTANCES.labels(protocol, "duplicate").inc()
        else:
            INSTANCES.labels(protocol, "stored").inc()
            BYTES.labels(protocol).inc(size)


def refused(protocol: str, reason: str, count: int = 1) -> None:
    """An instance refused before the parser saw it (a part of another media type)."""
    INSTANCES.labels(protocol, "failed").inc(count)
    FAILED.labels(protocol, reason).inc(count)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    REQUEST_SECONDS.labels(method, route).observe(seconds)


def _histogram(session: Session, name: str, doc: str, column: Any, buckets: tuple[float, ...],
               where: Any = None) -> HistogramMetricFamily:  # fmt: skip
    """A cumulative histogram over every row's value, counted in one SQL statement."""
    cols = [func.sum(case((column <= b, 1), else_=0)) for b in buckets]
    stmt = select(func.count(column), func.coalesce(func.sum(func.cast(column, Float)), 0.0), *cols)
    if where is not None:
        stmt = stmt.where(where)
    total, value_sum, *counts = session.execute(stmt).one()
    family = HistogramMetricFamily(name, doc)
    points = [(str(float(b)), float(c or 0)) for b, c in zip(buckets, counts, strict=True)]
    family.add_metric([], points + [("+Inf", float(total))], sum_value=float(value_sum))
    return family


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def database_families(session: Session, now: datetime) -> Iterator[Metric]:
    series = GaugeMetricFamily("gatekeeper_series", "Series by state", labels=["state"])
    by_state = dict(session.execute(select(Series.status, func.count()).group_by(Series.status)).all())
    for state in SeriesStatus:
        series.add_metric([state.value], float(by_state.get(state.value, 0)))
    yield series

    decisions = CounterMetricFamily("gatekeeper_decisions", "Routing decisions, by route and reason",
                                    labels=["route", "reason"])  # fmt: skip
    rows = session.execute(select(SeriesDecision.decision, SeriesDecision.reason, func.count())
                           .group_by(SeriesDecision.decision, SeriesDecision.reason)).all()  # fmt: skip
    for route, reason, count in rows:
        decisions.add_metric([route, reason], float(count))
    yield decisions

    yield _histogram(session, "gatekeeper_completion_to_decision_seconds",
                     "From a series' completion to its decision", SeriesDecision.completion_to_decision_s,
                     DECISION_BUCKETS)  # fmt: skip
    yield _histogram(session, "gatekeeper_scoring_seconds", "The worker's time to score a series",
                     SeriesDecision.scoring_s, WORK_BUCKETS)  # fmt: skip
    yield _histogram(session, "gatekeeper_segmentation_seconds", "The worker's time to segment a series",
                     Segmentation.duration_s, WORK_BUCKETS, Segmentation.source == "model")  # fmt: skip

    waiting = (CaseStatus.OPEN.value, CaseStatus.CLAIMED.value)
    queue = GaugeMetricFamily("gatekeeper_manual_queue_cases", "Cases in the manual queue, open or claimed",
                              labels=["state"])  # fmt: skip
    by_case = dict(session.execute(select(Case.status, func.count()).where(Case.status.in_(waiting))
                                   .group_by(Case.status)).all())  # fmt: skip
    for waiting_state in waiting:
        queue.add_metric([waiting_state], float(by_case.get(waiting_state, 0)))
    yield queue
    oldest = session.scalar(select(func.min(Case.created_at)).where(Case.status.in_(waiting)))
    age = 0.0 if oldest is None else max(0.0, (now - _as_utc(oldest)).total_seconds())
    yield GaugeMetricFamily("gatekeeper_manual_queue_oldest_case_age_seconds",
                            "Age of the oldest open or claimed case (0 when none)", value=age)  # fmt: skip
    backlog = session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None)))
    yield GaugeMetricFamily("gatekeeper_outbox_unpublished", "Jobs written but not yet published to the broker",
                            value=float(backlog or 0))  # fmt: skip

    jobs = GaugeMetricFamily("gatekeeper_training_jobs", "Training jobs by state", labels=["state"])
    by_job = dict(session.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status)).all())
    for job_state in TrainingJobStatus:
        jobs.add_metric([job_state.value], float(by_job.get(job_state.value, 0)))
    yield jobs

    promoted = GaugeMetricFamily("gatekeeper_model_version_promoted",
                                 "The model version in use per kind (1; its id and version as labels)",
                                 labels=["kind", "id", "version"])  # fmt: skip
    for row in session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.PROMOTED)):
        promoted.add_metric([row.kind, str(row.id), str(row.version)], 1.0)
    yield promoted

    count, size = session.execute(select(func.count(), func.coalesce(func.sum(Instance.size_bytes), 0))).one()
    yield GaugeMetricFamily("gatekeeper_stored_instances", "Instances held in storage", value=float(count))
    yield GaugeMetricFamily("gatekeeper_stored_bytes", "Bytes of the instances held in storage", value=float(size))


class DatabaseCollector(Collector):
    """Reads the database at each scrape; on a database error, ``gatekeeper_database_up 0`` and nothing else."""

    def __init__(self, session_factory: Callable[[], AbstractContextManager[Session]]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        try:
            with self.session_factory() as session:
                families = list(database_families(session, datetime.now(UTC)))
        except Exception:  # noqa: BLE001 - the scrape still answers, and says the database did not
            families = []
        yield GaugeMetricFamily("gatekeeper_database_up", "1 when the scrape could read the database",
                                value=1.0 if families else 0.0)  # fmt: skip
        yield from families


def exposition(
    session_factory: Callable[[], AbstractContextManager[Session]], broker: Collector | None = None
) -> bytes:
    """The text exposition: this process's (or, in multiprocess mode, every API process's) metrics, then the
    database's and the broker's (app/services/broker_metrics.py)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        local = CollectorRegistry()
        MultiProcessCollector(local)
    else:
        local = REGISTRY
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(session_factory))
    if broker is not None:
        database.register(broker)
    return generate_latest(local) + generate_latest(database)
