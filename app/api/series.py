"""Series state: read it, with the decision of its current revision, or complete a series at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import PacsPrincipal, ReaderPrincipal, SessionDep, SettingsDep
from app.api.qido import UidPath
from app.api.stow import base_url
from app.services import series as service


class DecisionOut(BaseModel):
    """How the worker routed this revision, and with which model versions."""

    revision: int
    decision: str = Field(description="auto | manual")
    reason: str = Field(description="in_distribution, anomalous, no_scorer, scorer_unavailable, ...")
    series_score: float | None
    threshold: float | None = Field(description="the scorer's calibrated series threshold")
    scorer_version_id: int | None
    segmenter_version_id: int | None
    decided_at: datetime


class SegmentationOut(BaseModel):
    revision: int
    source: str = Field(description="model")
    segmenter_version_id: int
    seg_series_uid: str | None = Field(description="None where no SEG could be made (no FrameOfReferenceUID)")
    seg_url: str | None = Field(description="WADO-RS URL of the stored DICOM SEG series")
    created_at: datetime


class SeriesOut(BaseModel):
    id: int
    series_uid: str
    study_uid: str
    status: str
    revision: int
    attempts: int
    instance_count: int
    last_instance_at: datetime
    completed_at: datetime | None
    geometry: dict[str, Any] | None
    last_error: str | None
    decision: DecisionOut | None = Field(description="for the current revision; None until it is decided")
    segmentation: SegmentationOut | None = Field(description="the current revision's automatic segmentation")


router = APIRouter(prefix="/series", tags=["series"])


def _out(view: service.SeriesView, base: str) -> SeriesOut:
    s, d, g = view.series, view.decision, view.segmentation
    decision = None if d is None else DecisionOut.model_validate({
        "revision": d.revision, "decision": d.decision, "reason": d.reason, "series_score": d.series_score,
        "threshold": d.threshold, "scorer_version_id": d.scorer_version_id,
        "segmenter_version_id": d.segmenter_version_id, "decided_at": d.created_at,
    })  # fmt: skip
    seg = None
    if g is not None:
        url = f"{base}/dicomweb/studies/{view.study_uid}/series/{g.seg_series_uid}" if g.seg_series_uid else None
        seg = SegmentationOut(revision=g.revision, source=g.source, segmenter_version_id=g.segmenter_version_id,
                              seg_series_uid=g.seg_series_uid, seg_url=url, created_at=g.created_at)  # fmt: skip
    fields = {k: getattr(s, k) for k in SeriesOut.model_fields if k not in ("study_uid", "decision", "segmentation")}
    return SeriesOut(**fields, study_uid=view.study_uid, decision=decision, segmentation=seg)


@router.get("/{series_uid}", summary="State of one series, with the decision of its current revision")
def read_series(
    series_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep
) -> SeriesOut:
    series = service.get_series(session=db, series_uid=series_uid)
    return _out(service.view_series(session=db, series=series), base_url(request, settings))


@router.post("/{series_uid}/complete", summary="Complete a series now (instead of waiting for the stable age)")
def complete_series(
    series_uid: UidPath, request: Request, principal: PacsPrincipal, db: SessionDep, settings: SettingsDep
) -> SeriesOut:
    series = service.complete_now(session=db, series_uid=series_uid, actor=principal.name)
    return _out(service.view_series(session=db, series=series), base_url(request, settings))
