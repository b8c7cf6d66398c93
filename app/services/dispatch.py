"""Series completion, the outbox relay and the reconciler: one tick of the dispatcher.

Runs in every API process (or ``gatekeeper dispatcher``); several may run at
once because every step is a compare-and-set or skips rows another holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.db import series as series_sql
from app.db.ingest import stored_paths
from app.db.tables import Instance, OutboxEvent
from app.services import audit, delivery
from app.services.delivery import DeliveryPublisher
from app.services.storage import InstanceStore

log = logging.getLogger(__name__)
Publisher = Callable[[OutboxEvent], None]


def complete_stable(*, stable_age_s: float, now: datetime | None = None) -> list[int]:
    """Queue every series that received nothing for stable_age_s; return their ids."""
    now = now or datetime.now(UTC)
    older_than = now - timedelta(seconds=stable_age_s)
    done: list[int] = []
    with session_scope() as session:
        for series_id in series_sql.stable_series_ids(session, older_than=older_than):
            revision = series_sql.complete_series(session, series_id=series_id, now=now, older_than=older_than)
            if revision is not None:
                audit.record(session, actor="dispatcher", action="series.completed", entity_type="series",
                             entity_id=series_id, revision=revision, trigger="stable_age")  # fmt: skip
                done.append(series_id)
    return done


def relay(publish: Publisher) -> int:
    """Publish unpublished outbox rows; a broker error leaves them for the next tick."""
    sent = 0
    with session_scope() as session:
        for job in series_sql.unpublished_jobs(session):
            try:
                publish(job)
            except Exception as exc:  # noqa: BLE001 - broker down: keep the row, try next tick
                log.warning("broker publish failed (%s); %d job(s) kept in the outbox", type(exc).__name__, 1)
                break
            job.published_at = datetime.now(UTC)
            job.publish_count += 1
            sent += 1
    return sent


def reconcile(*, reconcile_after_s: float, now: datetime | None = None) -> int:
    """Mark for re-publishing the jobs that were sent but never picked up (or whose holder died)."""
    now = now or datetime.now(UTC)
    with session_scope() as session:
        before = now - timedelta(seconds=reconcile_after_s)
        stale = series_sql.stale_jobs(session, now=now, published_before=before)
        stale += series_sql.stale_training_jobs(session, published_before=before)
        for job in stale:
            job.published_at = None
            kind, entity = ("training_job", job.training_job_id) if job.series_id is None else ("series", job.series_id)
            audit.record(session, actor="dispatcher", action="job.resent", entity_type=kind,
                         entity_id=entity, revision=job.revision, publish_count=job.publish_count)  # fmt: skip
    return len(stale)


def sweep_orphans(store: InstanceStore, *, min_age_s: float) -> int:
    """Delete files that no row references and no live upload owns (a crash between rename and commit)."""
    with session_scope() as session:
        referenced = set(session.scalars(select(Instance.storage_path)))

    def referenced_now(paths: list[str]) -> set[str]:
        with session_scope() as session:  # a fresh transaction: it sees what owners committed meanwhile
            return stored_paths(session, paths)

    removed = store.sweep(referenced, min_age_s, referenced_now)
    if removed:
        log.info("swept %d orphan file(s)", len(removed))
    return len(removed)


def tick(
    settings: Settings, publish: Publisher, store: InstanceStore, *, sweep: bool,
    publish_delivery: DeliveryPublisher | None = None,
) -> None:  # fmt: skip
    complete_stable(stable_age_s=settings.series_stable_age_s)
    reconcile(reconcile_after_s=settings.reconcile_after_s)
    relay(publish)
    if publish_delivery is not None:  # the results outbox (SEGs to the PACS)
        delivery.reconcile(reconcile_after_s=settings.reconcile_after_s)
        delivery.relay(publish_delivery)
    if sweep:
        sweep_orphans(store, min_age_s=settings.orphan_min_age_s)


def run_forever(
    settings: Settings, publish: Publisher, store: InstanceStore, stop: threading.Event,
    publish_delivery: DeliveryPublisher | None = None,
) -> None:  # fmt: skip
    """The dispatcher loop: a failing tick (database down) is logged and retried."""
    next_sweep = time.monotonic()
    while not stop.is_set():
        sweep = time.monotonic() >= next_sweep
        if sweep:
            next_sweep = time.monotonic() + settings.orphan_sweep_interval_s
        try:
            tick(settings, publish, store, sweep=sweep, publish_delivery=publish_delivery)
        except Exception as exc:  # noqa: BLE001 - keep the loop alive through outages
            log.warning("dispatcher tick failed: %s", type(exc).__name__)
        stop.wait(settings.dispatch_interval_s)
