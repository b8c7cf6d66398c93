"""Radiologists' pages: the queue and one case (evidence, heat-maps over the CT, viewer link, contour upload)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import MAX_ROW_ID, SessionDep, SettingsDep
from app.api.ui_common import PageError, RadiologistPage, checked_form, domain_page, page, see_other
from app.core.errors import DomainError
from app.services import evidence, labeling, pages
from app.services.ui_sessions import BrowserSession

router = APIRouter(prefix="/ui", include_in_schema=False)
CaseId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
Rank = Annotated[int, Path(ge=0, le=evidence.TOP_K - 1)]


def _age(created: datetime) -> str:
    minutes = int((datetime.now(UTC) - created).total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h" if minutes < 48 * 60 else f"{minutes // 1440} d"


@router.get("/queue")
def queue_page(browser: RadiologistPage, db: SessionDep) -> Response:
    reader = browser.principal.name
    items = [{"view": v, "age": _age(v.case.created_at), "mine": v.case.claimed_by == reader and v.position is None}
             for v in labeling.list_queue(session=db, reader=reader)]  # fmt: skip
    return page("queue.html", browser, items=items, closed=pages.closed_cases(session=db, reader=reader))


@router.get("/cases/{case_id}")
def case_page(case_id: CaseId, browser: RadiologistPage, db: SessionDep, settings: SettingsDep) -> Response:
    try:
        view = pages.case_for_reader(session=db, case_id=case_id, reader=browser.principal.name)
    except DomainError as exc:
        return domain_page(exc, browser)
    view = pages.with_evidence(view, settings)
    return page("case.html", browser, c=view, age=_age(view.case.created_at),
                viewer=f"/viewer/viewer?StudyInstanceUIDs={view.study_uid}")  # fmt: skip


@router.get("/cases/{case_id}/heatmap/{rank}.png")
async def heatmap_png(case_id: CaseId, rank: Rank, browser: RadiologistPage, db: SessionDep,
                      settings: SettingsDep) -> Response:  # fmt: skip
    """The rank-th top slice's heat-map over its CT slice, at the slice's size (rendered here, never cached)."""

    def render() -> bytes:
        view = pages.with_evidence(pages.case_for_reader(session=db, case_id=case_id, reader=browser.principal.name),
                                   settings)  # fmt: skip
        npz = pages.evidence_path(view, settings)
        if npz is None or rank >= len(view.top_slices):
            raise PageError(404, "this case has no heat-map of that rank (the series was not scored)")
        index = view.top_slices[rank]["index"]
        hu = pages.slice_hu(session=db, settings=settings, series_id=view.case.series_id, index=index)
        return evidence.render_overlay(npz, rank, hu)

    return Response(await run_in_threadpool(render), media_type="image/png", headers={"Cache-Control": "no-store"})


async def _act(request: Request, browser: RadiologistPage, db: SessionDep, case_id: int, action: str,
               lease_s: float) -> Response:  # fmt: skip
    form = await checked_form(request, browser)
    return await run_in_threadpool(_apply, browser, db, case_id, action, lease_s, form)


def _apply(browser: BrowserSession, db: Session, case_id: int, action: str, lease_s: float,
           form: dict[str, str]) -> Response:  # fmt: skip
    reader = browser.principal.name
    try:
        if action == "claim":
            labeling.claim_case(session=db, case_id=case_id, reader=reader, lease_s=lease_s)
        elif action == "next":
            case_id = labeling.claim_next_case(session=db, reader=reader, lease_s=lease_s).id
        elif action == "release":
            labeling.release_case(session=db, case_id=case_id, reader=reader)
        else:
            reason = form.get("reason", "").strip()
            if not 3 <= len(reason) <= 500 or "\x00" in reason:
                raise PageError(422, "a rejection needs a reason of 3 to 500 characters")
            labeling.reject_case(session=db, case_id=case_id, reader=reader, reason=reason)
    except DomainError as exc:
        db.rollback()
        return domain_page(exc, browser)
    return see_other("/ui/queue" if action == "release" else f"/ui/cases/{case_id}")


@router.post("/queue/next")
async def claim_next(request: Request, browser: RadiologistPage, db: SessionDep, settings: SettingsDep) -> Response:
    return await _act(request, browser, db, 0, "next", settings.claim_lease_s)


@router.post("/cases/{case_id}/claim")
async def claim(case_id: CaseId, request: Request, browser: RadiologistPage, db: SessionDep,
                settings: SettingsDep) -> Response:  # fmt: skip
    return await _act(request, browser, db, case_id, "claim", settings.claim_lease_s)


@router.post("/cases/{case_id}/release")
async def release(case_id: CaseId, request: Request, browser: RadiologistPage, db: SessionDep) -> Response:
    return await _act(request, browser, db, case_id, "release", 0)


@router.post("/cases/{case_id}/reject")
async def reject(case_id: CaseId, request: Request, browser: RadiologistPage, db: SessionDep) -> Response:
    return await _act(request, browser, db, case_id, "reject", 0)
