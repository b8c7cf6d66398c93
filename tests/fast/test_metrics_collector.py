"""The metrics read from the database at scrape time (in process, real PostgreSQL, rolled back)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.db.tables import Case, ModelVersion, Segmentation, SeriesDecision, TrainingJob
from app.services.metrics import DECISION_BUCKETS, database_families
from tests.fast.conftest import add_series


def _samples(db: Session, now: datetime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in database_families(db, now) for s in family.samples}  # fmt: skip


def test_histograms_queue_jobs_and_models(db: Session) -> None:
    for table in (Case, Segmentation, SeriesDecision, TrainingJob):  # this transaction only: rolled back after
        db.execute(delete(table))
    now = datetime.now(UTC)
    s = add_series(db, status="manual")
    for revision, latency in enumerate((0.7, 4.0, 4000.0)):
        db.add(SeriesDecision(series_id=s.id, revision=revision, scorer_key="none", decision="manual",
                              reason="no_scorer", scoring_s=0.2, completion_to_decision_s=latency))  # fmt: skip
    db.add(Case(series_id=s.id, revision=0, status="open", reason="no_scorer", created_at=now - timedelta(minutes=5)))
    db.add(Case(series_id=s.id, revision=1, status="claimed", reason="no_scorer", created_at=now))
    db.add(Case(series_id=s.id, revision=2, status="submitted", reason="no_scorer", created_at=now - timedelta(days=9)))
    db.add(TrainingJob(kind="segmenter", status="running", requested_by="t"))
    scorer = ModelVersion(kind="scorer", version=7, path="s.pt", sha256="0" * 64, status="promoted", card={})
    db.add_all([scorer, ModelVersion(kind="scorer", version=6, path="r.pt", sha256="1" * 64, status="retired")])
    db.flush()
    m = _samples(db, now)

    h = "gatekeeper_completion_to_decision_seconds"
    assert m[(f"{h}_count", ())] == 3
    assert abs(m[(f"{h}_sum", ())] - 4004.7) < 1e-6
    buckets = {dict(ls)["le"]: v for (n, ls), v in m.items() if n == f"{h}_bucket"}
    assert buckets["0.5"] == 0 and buckets["1.0"] == 1 and buckets["5.0"] == 2 and buckets["3600.0"] == 2
    assert buckets["+Inf"] == 3 and len(buckets) == len(DECISION_BUCKETS) + 1
    assert m[("gatekeeper_scoring_seconds_count", ())] == 3
    assert m[("gatekeeper_decisions_total", (("reason", "no_scorer"), ("route", "manual")))] == 3
    assert m[("gatekeeper_manual_queue_cases", (("state", "open"),))] == 1
    assert m[("gatekeeper_manual_queue_cases", (("state", "claimed"),))] == 1
    assert 299 <= m[("gatekeeper_manual_queue_oldest_case_age_seconds", ())] <= 301  # the submitted one is done
    assert m[("gatekeeper_training_jobs", (("state", "running"),))] == 1
    assert m[("gatekeeper_training_jobs", (("state", "queued"),))] == 0
    promoted = [ls for (n, ls) in m if n == "gatekeeper_model_version_promoted"]
    assert promoted == [(("id", str(scorer.id)), ("kind", "scorer"), ("version", "7"))]
    assert m[("gatekeeper_series", (("state", "manual"),))] >= 1


def test_empty_histograms_and_queue(db: Session) -> None:
    for table in (Case, Segmentation, SeriesDecision):
        db.execute(delete(table))
    m = _samples(db, datetime.now(UTC))
    assert m[("gatekeeper_segmentation_seconds_count", ())] == 0
    assert m[("gatekeeper_segmentation_seconds_bucket", (("le", "+Inf"),))] == 0
    assert m[("gatekeeper_manual_queue_oldest_case_age_seconds", ())] == 0
