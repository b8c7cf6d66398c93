"""GET /metrics: the Prometheus exposition, behind a token of role ``monitoring`` (or admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import MonitoringPrincipal, SettingsDep
from app.core.db import session_scope
from app.services import metrics
from app.services.broker_metrics import BrokerCollector

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics (role monitoring or admin)")
async def scrape(_: MonitoringPrincipal, settings: SettingsDep) -> Response:
    body = await run_in_threadpool(metrics.exposition, session_scope, BrokerCollector(settings))
    return Response(body, media_type=metrics.CONTENT_TYPE)
