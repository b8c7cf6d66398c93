"""The scored series' state changes: claimed, decision recorded, auto, manual, failed, retry.

Each step is one transaction (``session_scope``) and is fenced: it writes only while its
``Attempt`` still holds the series (the attempt number is the token a claim hands out), so a
stale run whose lease was taken over records nothing. The worker's pipeline
(``workers.serving.score``) calls these in order; the decision itself is made without I/O
(``workers.serving.route.decide``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.db import cases, decisions
from app.db import model_versions as versions
from app.db import series as series_sql
from app.db.series import Attempt
from app.db.states import DecisionReason, Route, SeriesStatus
from app.db.tables import Instance, ModelVersion, Series
from app.services import audit, delivery
from app.services.derived import add_derived_instance

ACTOR = "worker"
FIRST = math.inf  # queue priority of a case without a score: it goes first


@dataclass
class Claimed:
    """What a run needs from the database, read once: its attempt, the pinned model versions and the files."""

    attempt: Attempt
    exhausted: bool  # over the attempt cap: fail the series
    scorer: ModelVersion | None
    segmenter: ModelVersion | None
    study_id: int
    paths: dict[str, Path]  # SOPInstanceUID -> file


@dataclass
class Decision:
    route: Route
    reason: DecisionReason
    scorer_key: str = "none"
    scorer_version_id: int | None = None
    series_score: float | None = None
    threshold: float | None = None
    slice_scores: list[float] | None = None
    evidence_path: str | None = None
    top_slices: list[int] = field(default_factory=list)
    liver_mask: np.ndarray | None = field(default=None, repr=False)  # the segmenter's mask, when scoring used it
    scoring_s: float | None = None  # the worker's time to score (the metrics' histogram reads it)
    detail: str | None = None  # for a radiologist: which signal flagged it, which slices, how far over

    @property
    def priority(self) -> float:
        """Queue priority: the higher the anomaly, the sooner; a case without a usable score goes first.

        Only an anomalous decision's score ranks it: the score of an uncalibrated scorer, or of a liver
        the segmenter did not find (no_liver_found scores 0), says nothing about the series."""
        if self.reason != DecisionReason.ANOMALOUS or self.series_score is None:
            return FIRST
        return float(self.series_score)


@dataclass
class Segmentation:
    """The auto-segmentation's files: NIfTI always, the DICOM SEG when the series can carry one."""

    nifti_path: str
    seg_path: str | None = None
    seg_series_uid: str | None = None
    seg_sop_uid: str | None = None
    sop_class_uid: str = ""
    transfer_syntax_uid: str = ""
    sha256: str = ""
    size: int = 0
    seg_refused: str | None = None
    duration_s: float | None = None  # the worker's time to segment (the metrics' histogram reads it)


def _now() -> datetime:
    return datetime.now(UTC)


def claim(settings: Settings, *, series_id: int, revision: int, task_id: str) -> Claimed | None:
    """QUEUED -> SCORING for this task, pinning the promoted models at the revision's first claim;
    None when the series is not ours to take (stale revision, finished, held by a live worker)."""
    with session_scope() as session:
        scorer, segmenter = versions.promoted(session, "scorer"), versions.promoted(session, "segmenter")
        got = series_sql.claim_series(session, series_id=series_id, revision=revision, task_id=task_id, now=_now(),
                             lease_s=settings.task_time_limit_s + 60, max_attempts=settings.max_attempts,
                             scorer_id=scorer.id if scorer else None,
                             segmenter_id=segmenter.id if segmenter else None)  # fmt: skip
        if got is None:
            return None
        # in the claim's transaction: every run that started is on record
        audit.record(session, actor=ACTOR, action="series.claimed", entity_type="series", entity_id=series_id,
                     revision=revision, attempt=got.attempt, task_id=task_id, scorer_version_id=got.scorer_id,
                     segmenter_version_id=got.segmenter_id)  # fmt: skip
        # the pinned versions, not the promoted ones: a retry keeps the models its first attempt pinned
        pinned = {i: session.get(ModelVersion, i) for i in (got.scorer_id, got.segmenter_id) if i is not None}
        study_id = session.scalar(select(Series.study_id).where(Series.id == series_id))
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.storage_path).where(Instance.series_id == series_id)
        ).all()
    assert study_id is not None  # series.study_id is NOT NULL and the claim holds the series
    return Claimed(Attempt(series_id, revision, got.attempt), got.exhausted,
                   pinned.get(got.scorer_id) if got.scorer_id else None,
                   pinned.get(got.segmenter_id) if got.segmenter_id else None,
                   study_id, {uid: settings.storage_dir / path for uid, path in rows})  # fmt: skip


def fail(attempt: Attempt, reason: str, geometry: dict | None = None) -> None:
    """FAILED, and a manual case: a series the pipeline cannot handle still reaches a radiologist, with the
    primary stack's ``geometry`` when it is known, so the case can be contoured. A decision already recorded
    for this revision (auto, say, before writing the mask failed) is turned into manual/failed: no record may
    say a failed series was accepted."""
    with session_scope() as session:
        values = {"geometry": geometry} if geometry is not None else {}
        if series_sql.finish_series(
            session, attempt, status=SeriesStatus.FAILED, now=_now(), last_error=reason, **values
        ):
            decisions.mark_failed(session, series_id=attempt.series_id, revision=attempt.revision)
            cases.open_case(session, series_id=attempt.series_id, revision=attempt.revision,
                            reason=DecisionReason.FAILED, priority=FIRST)  # fmt: skip
            audit.record(session, actor=ACTOR, action="series.failed", entity_type="series",
                         entity_id=attempt.series_id, revision=attempt.revision, attempt=attempt.number,
                         reason=reason)  # fmt: skip


def retry_later(attempt: Attempt, reason: str) -> None:
    """SCORING -> QUEUED and back into the outbox, so the relay sends it again."""
    with session_scope() as session:
        if series_sql.finish_series(session, attempt, status=SeriesStatus.QUEUED, now=_now(), last_error=reason):
            series_sql.republish(session, series_id=attempt.series_id, revision=attempt.revision)
            audit.record(session, actor=ACTOR, action="series.retry", entity_type="series",
                         entity_id=attempt.series_id, revision=attempt.revision, attempt=attempt.number,
                         reason=reason)  # fmt: skip


def record_decision(attempt: Attempt, d: Decision, segmenter_id: int | None) -> bool:
    """The decision with the model versions that made it; False when this attempt was fenced off."""
    with session_scope() as session:
        if not series_sql.holds(session, attempt):
            return False
        since = series_sql.since_completion(session, series_id=attempt.series_id, revision=attempt.revision,
                                            now=_now())  # fmt: skip
        decisions.record_decision(session, series_id=attempt.series_id, revision=attempt.revision,
                                  scorer_key=d.scorer_key, scorer_version_id=d.scorer_version_id,
                                  segmenter_version_id=segmenter_id, decision=d.route, reason=d.reason,
                                  series_score=d.series_score, threshold=d.threshold, slice_scores=d.slice_scores,
                                  evidence_path=d.evidence_path, scoring_s=d.scoring_s,
                                  completion_to_decision_s=since)  # fmt: skip
        audit.record(session, actor=ACTOR, action="series.decided", entity_type="series",
                     entity_id=attempt.series_id, revision=attempt.revision, decision=d.route, reason=d.reason,
                     scorer_version_id=d.scorer_version_id, segmenter_version_id=segmenter_id,
                     series_score=d.series_score, threshold=d.threshold)  # fmt: skip
        return True


def to_manual(
    attempt: Attempt, *, reason: str, priority: float, geometry: dict | None, detail: str | None = None
) -> bool:
    """SCORING -> MANUAL and a case for a radiologist (``detail``: the reason in words, kept as last_error);
    False when fenced off."""
    with session_scope() as session:
        if not series_sql.finish_series(session, attempt, status=SeriesStatus.MANUAL, now=_now(), geometry=geometry,
                               last_error=detail):  # fmt: skip
            return False
        cases.open_case(session, series_id=attempt.series_id, revision=attempt.revision, reason=reason,
                        priority=priority)  # fmt: skip
        audit.record(session, actor=ACTOR, action="case.opened", entity_type="series", entity_id=attempt.series_id,
                     revision=attempt.revision, reason=reason)  # fmt: skip
    return True


def record_auto(
    settings: Settings, attempt: Attempt, *, study_id: int, segmenter_id: int, seg: Segmentation, geometry: dict
) -> bool:
    """SCORING -> AUTO with the segmentation (and its SEG as a derived instance, and its delivery to the PACS
    in the same transaction); False when fenced off, and the caller removes the files it wrote."""
    with session_scope() as session:
        if not series_sql.holds(session, attempt):
            return False
        if seg.seg_path and seg.seg_series_uid and seg.seg_sop_uid:
            add_derived_instance(session, study_id=study_id, series_uid=seg.seg_series_uid, sop_uid=seg.seg_sop_uid,
                                 sop_class_uid=seg.sop_class_uid, modality="SEG", relative=seg.seg_path,
                                 sha256=seg.sha256, size=seg.size,
                                 transfer_syntax_uid=seg.transfer_syntax_uid)  # fmt: skip
            delivery.enqueue_auto_seg(session, settings, series_id=attempt.series_id, revision=attempt.revision,
                                      seg_path=seg.seg_path, seg_sop_uid=seg.seg_sop_uid)  # fmt: skip
        decisions.record_segmentation(session, series_id=attempt.series_id, revision=attempt.revision,
                                      segmenter_version_id=segmenter_id, source="model",
                                      seg_series_uid=seg.seg_series_uid, seg_sop_uid=seg.seg_sop_uid,
                                      seg_path=seg.seg_path, nifti_path=seg.nifti_path,
                                      duration_s=seg.duration_s)  # fmt: skip
        series_sql.finish_series(
            session, attempt, status=SeriesStatus.AUTO, now=_now(), geometry=geometry, last_error=None
        )
        audit.record(session, actor=ACTOR, action="series.segmented", entity_type="series",
                     entity_id=attempt.series_id, revision=attempt.revision, segmenter_version_id=segmenter_id,
                     seg_refused=seg.seg_refused)  # fmt: skip
    return True


def record_model_unusable(row: ModelVersion, error: str) -> None:
    """A pinned model that failed to load (readiness reads this and reports 503)."""
    with session_scope() as session:
        audit.record(session, actor=ACTOR, action="model.load_failed", entity_type="model", entity_id=row.id,
                     error=error)  # fmt: skip
