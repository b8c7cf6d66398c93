"""The ASGI app: routers, error mapping and the dispatcher thread. Nothing else."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.requests import ClientDisconnect

from app import __version__
from app.api import (
    deliveries,
    docs,
    health,
    metrics,
    models,
    orthanc,
    qido,
    queue,
    series,
    stow,
    tokens,
    training,
    ui_auth,
    ui_common,
    ui_models,
    ui_queue,
    ui_series,
    viewer,
    wado,
    wado_frames,
)
from app.api.access import AccessLog
from app.api.deps import get_store
from app.core.config import get_settings
from app.core.errors import DomainError
from app.core.heap import freeze_startup_heap
from app.core.logging import configure_logging
from app.core.proxy import ForwardedHeadersMiddleware, parse_trusted
from app.core.security import bootstrap_problem
from app.services import dispatch
from app.services.jobs import publish_delivery, publish_job

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    problem = bootstrap_problem(settings)
    if problem is not None:  # refuse to start rather than serve a guessable admin token
        log.error("refusing to start: %s", problem)
        raise RuntimeError(problem)
    stop = threading.Event()
    thread = None
    if settings.run_dispatcher:
        thread = threading.Thread(
            target=dispatch.run_forever,
            args=(settings, publish_job, get_store(), stop, publish_delivery),
            name="dispatcher",
            daemon=True,
        )
        thread.start()
    frozen = freeze_startup_heap()  # full GC pauses stalled every request (app/core/heap.py)
    log.debug("%d start-up objects frozen out of garbage collection", frozen)
    yield
    stop.set()
    if thread is not None:
        thread.join(timeout=10)


ROUTERS = tuple(
    m.router
    for m in (
        health,
        stow,
        qido,
        wado,
        wado_frames,
        orthanc,
        series,
        queue,
        models,
        training,
        tokens,
        metrics,
        deliveries,
    )
)
app = FastAPI(title="gatekeeper", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
app.add_middleware(AccessLog, enabled=get_settings().access_log)
for router in ROUTERS:
    app.include_router(router)
docs.mount(app)  # /docs from local assets (a hospital network usually has no internet)
viewer.mount(app)  # /viewer/: OHIF on the service's own DICOMweb
# the browser pages (/ui/...): sessions from /ui/login; not in api_routes(), their access is tested page by page
ui_common.mount(app, [m.router for m in (ui_auth, ui_queue, ui_models, ui_series)])
# Forwarded headers only from GATEKEEPER_TRUSTED_PROXIES (uvicorn's own handling is off: app/cli/main.py serve).
app.add_middleware(ForwardedHeadersMiddleware, trusted=parse_trusted(get_settings().trusted_proxies))


def api_routes() -> list[APIRoute]:
    """Every route of the API (the role x route matrix is generated from this)."""
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


@app.exception_handler(OperationalError)
async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
    return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})


@app.exception_handler(ClientDisconnect)
async def client_gone(_: Request, exc: ClientDisconnect) -> Response:
    """The client went away mid-body (or a read timeout closed it): nothing was stored, no one to answer."""
    return Response(status_code=400)


@app.exception_handler(DomainError)
async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
    """The one mapping of domain errors to HTTP: the error's kind gives the status, its message the detail."""
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)
