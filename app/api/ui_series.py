"""Operators' page: series by state, with the decision of their current revision and failures' reasons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.deps import SessionDep
from app.api.ui_common import ReaderPage, page
from app.db.states import SeriesStatus
from app.services import pages

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/series")
def series_page(browser: ReaderPage, db: SessionDep,
                status: Annotated[SeriesStatus | None, Query()] = None) -> Response:  # fmt: skip
    rows = pages.series_page(session=db, status=status)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["series"].status] = counts.get(row["series"].status, 0) + 1
    return page("series.html", browser, rows=rows, counts=counts, statuses=list(SeriesStatus), status=status)
