"""Series queries, with what was decided for the current revision, and the explicit completion call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.db import decisions, reads
from app.db import series as series_sql
from app.db.tables import Segmentation, Series, SeriesDecision
from app.services import audit


class SeriesNotFound(NotFound):
    pass


class SeriesNotReceiving(Conflict):
    pass


def get_series(*, session: Session, series_uid: str) -> Series:
    series = reads.series_by_uid(session, series_uid)
    if series is None:
        raise SeriesNotFound("no such series")
    return series


@dataclass(frozen=True)
class SeriesView:
    """A series with its study and the outcome of its current revision (None until decided)."""

    series: Series
    study_uid: str
    decision: SeriesDecision | None
    segmentation: Segmentation | None


def view_series(*, session: Session, series: Series) -> SeriesView:
    # Only the current revision's outcome: after a late instance re-opened the series, the
    # old decision was made on other images and must not read as this series' result.
    key = {"series_id": series.id, "revision": series.revision}
    return SeriesView(series, reads.study_uid_of(session, series.study_id), decisions.decision_for(session, **key),
                      decisions.segmentation_for(session, **key))  # fmt: skip


def complete_now(*, session: Session, series_uid: str, actor: str, trigger: str = "api") -> Series:
    """Complete a series at once instead of waiting for the stable age (the API, or a DIMSE release)."""
    series = get_series(session=session, series_uid=series_uid)
    revision = series_sql.complete_series(session, series_id=series.id, now=datetime.now(UTC), older_than=None)
    if revision is None:
        raise SeriesNotReceiving(f"series is {series.status}, not receiving")
    audit.record(session, actor=actor, action="series.completed", entity_type="series",
                 entity_id=series.id, revision=revision, trigger=trigger)  # fmt: skip
    session.refresh(series)
    return series
