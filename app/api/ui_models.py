"""ML engineers' pages: model versions (promote and roll back beside the gate's comparison), training jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api.deps import MAX_ROW_ID, SessionDep, SettingsDep
from app.api.ui_common import EngineerPage, PageError, act_then_redirect, checked_form, page
from app.services import pages, registry, training

router = APIRouter(prefix="/ui", include_in_schema=False)
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


@router.get("/models")
def models_page(browser: EngineerPage, db: SessionDep, settings: SettingsDep) -> Response:
    return page("models.html", browser, kinds=pages.models_page(session=db, settings=settings))


@router.post("/models/{model_id}/promote")
async def promote(model_id: RowId, request: Request, browser: EngineerPage, db: SessionDep) -> Response:
    await checked_form(request, browser)
    return await act_then_redirect(
        lambda: registry.promote(session=db, model_id=model_id, actor=browser.principal.name),
        db=db,
        browser=browser,
        then="/ui/models",
    )


@router.post("/models/rollback")
async def rollback(request: Request, browser: EngineerPage, db: SessionDep) -> Response:
    form = await checked_form(request, browser)
    kind = form.get("kind", "")
    if kind not in registry.KINDS:
        raise PageError(422, f"kind must be one of {', '.join(registry.KINDS)}")
    return await act_then_redirect(
        lambda: registry.rollback(session=db, kind=kind, actor=browser.principal.name),
        db=db,
        browser=browser,
        then="/ui/models",
    )


@router.get("/training")
def training_page(browser: EngineerPage, db: SessionDep, settings: SettingsDep) -> Response:
    jobs = [{"job": j, "progress": training.job_progress(settings, j)} for j in training.list_jobs(session=db)]
    return page("training.html", browser, jobs=jobs, max_steps=settings.training_max_steps)


@router.post("/training")
async def start_job(request: Request, browser: EngineerPage, db: SessionDep, settings: SettingsDep) -> Response:
    """A job with the API's defaults except its kind, steps and auto-promotion (checked like POST /training-jobs)."""
    from app.api.training import TrainingParams

    form = await checked_form(request, browser)
    kind = form.get("kind", "")
    if kind not in registry.KINDS or not form.get("steps", "").isdigit():
        raise PageError(422, f"kind must be one of {', '.join(registry.KINDS)} and steps a whole number")
    steps = int(form["steps"])
    if not 1 <= steps <= 1_000_000:
        raise PageError(422, "steps must be between 1 and 1000000")
    params = TrainingParams(steps=steps, encoder_steps=steps // 2).model_dump()
    limits = training.TrainingLimits(max_steps=settings.training_max_steps,
                                     max_active_jobs=settings.training_max_active_jobs)  # fmt: skip
    return await act_then_redirect(lambda: training.request_job(
        session=db, kind=kind, params=params, auto_promote=form.get("auto_promote") == "on",
        actor=browser.principal.name, limits=limits), db=db, browser=browser, then="/ui/training")  # fmt: skip


@router.post("/training/{job_id}/cancel")
async def cancel(job_id: RowId, request: Request, browser: EngineerPage, db: SessionDep) -> Response:
    await checked_form(request, browser)
    return await act_then_redirect(
        lambda: training.cancel_job(session=db, job_id=job_id, actor=browser.principal.name),
        db=db,
        browser=browser,
        then="/ui/training",
    )
