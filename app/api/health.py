"""Liveness and readiness probes (no credentials: they reveal nothing but status words)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import SettingsDep
from app.core.db import session_scope
from app.services import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:  # on the event loop itself: it answers only if the loop is free
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers and the promoted scorer is usable")
def readyz(settings: SettingsDep) -> JSONResponse:
    try:
        with session_scope() as session:
            state = readiness.check(session, settings.models_dir)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    ready = all(v == "ok" for v in state.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", **state}, status_code=200 if ready else 503)
