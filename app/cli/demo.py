"""``gatekeeper demo``: the whole ingest path on one machine, shown step by step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from app.cli.demo_models import ensure_demo_models
from app.client import read_files, stow
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.security import Role, create_token
from app.processes import Service, migrate


def _env() -> dict[str, str]:
    s = get_settings()
    return {"GATEKEEPER_DATABASE_URL": s.database_url, "GATEKEEPER_BROKER_URL": s.broker_url,
            "GATEKEEPER_STORAGE_DIR": str(s.storage_dir.resolve()),
            "GATEKEEPER_SERIES_STABLE_AGE_S": os.environ.get("GATEKEEPER_SERIES_STABLE_AGE_S", "5")}  # fmt: skip


def _follow(client: httpx.Client, series_uid: str, timeout_s: float, console: Console) -> dict:
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        state = client.get(f"/series/{series_uid}").json()
        if state["status"] != last:
            console.print(f"  series status: [bold]{state['status']}[/bold]")
            last = state["status"]
        if state["status"] in ("auto", "manual", "failed"):
            return state
        time.sleep(0.5)
    raise TimeoutError(f"series still {last} after {timeout_s} s")


def run_demo(*, study_dir: Path, timeout_s: float, console: Console) -> int:
    settings = get_settings()
    console.print(f"database: {settings.database_url.split('@')[-1]}  broker: {settings.broker_url.split('@')[-1]}")
    migrate(settings.database_url)
    ensure_demo_models(console)
    with session_scope() as session:
        token, _ = create_token(session, role=Role.PACS, name=None)  # a generated name: each run is its own identity
    service = Service(env=_env(), log_dir=settings.storage_dir.resolve().parent / "logs")
    try:
        service.start_api()
        service.start_worker()
        console.print(f"API at {service.url}; worker started; logs in {service.log_dir}")
        blobs = read_files(study_dir)
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            t0 = time.perf_counter()
            reply = stow(client, blobs)
            console.print(
                f"STOW-RS of {len(blobs)} instances: HTTP {reply.status_code} in {time.perf_counter() - t0:.2f} s"
            )
            body = reply.json()
            stored = body.get("00081199", {}).get("Value", [])
            failed = body.get("00081198", {}).get("Value", [])
            console.print(f"  stored {len(stored)}, failed {len(failed)}")
            if not stored:
                return 1
            series_uid = stored[0]["00081190"]["Value"][0].split("/series/")[1].split("/")[0]
            console.print(
                f"waiting {_env()['GATEKEEPER_SERIES_STABLE_AGE_S']} s of quiet for the series to complete..."
            )
            state = _follow(client, series_uid, timeout_s, console)
        _summary(console, state, service.url)
        _decision(console, state["id"])
        return 0 if state["status"] in ("auto", "manual") else 1
    finally:
        service.stop()


def _summary(console: Console, state: dict, url: str) -> None:
    table = Table(title="series routed")
    for key in ("id", "status", "revision", "attempts", "instance_count", "last_error"):
        table.add_row(key, str(state[key]))
    g = state.get("geometry") or {}
    if g:
        table.add_row("volume", f"{g['n_slices']} x {g['rows']} x {g['columns']}")
        table.add_row("spacing (mm)", f"{g['pixel_spacing_mm']} / {g['slice_spacing_mm']:.2f}")
    console.print(table)


def _decision(console: Console, series_id: int) -> None:
    """What the gate decided and where a person looks at the result."""
    from app.db import decisions

    settings = get_settings()
    with session_scope() as session:
        d = decisions.latest_decision(session, series_id)
        seg = decisions.latest_segmentation(session, series_id)
    if d is None:
        return
    score = "n/a" if d.series_score is None else f"{d.series_score:.4f}"
    threshold = "n/a" if d.threshold is None else f"{d.threshold:.4f}"
    console.print(f"decision: [bold]{d.decision}[/bold] ({d.reason}); series score {score}, threshold {threshold}")
    console.print(f"model versions: scorer id {d.scorer_version_id}, segmenter id {d.segmenter_version_id}")
    if seg is not None:
        console.print(f"DICOM SEG: {settings.storage_dir / str(seg.seg_path)}")
        console.print(f"NIfTI mask: {settings.storage_dir / seg.nifti_path}")
    if d.evidence_path:
        from app.services.evidence import render_png

        out = settings.storage_dir.resolve().parent / f"evidence-series-{series_id}.png"
        out.write_bytes(render_png(settings.storage_dir / d.evidence_path))
        console.print(f"evidence (score profile, top slices' heat-maps): {out}")
    console.print("with the API running (gatekeeper serve), the same is at /queue (radiologist) and over WADO-RS")
