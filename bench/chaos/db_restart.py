"""Database restart: a private PostgreSQL stopped (-m immediate) during a push, then started again.

While it is down every push must get 503 (never 200: nothing may be acknowledged that is not committed)
and /readyz 503; once it is back, ingest must recover by itself (no API restart) and every instance
pushed must be stored exactly once.
"""

from __future__ import annotations

import time

import httpx
from sqlalchemy import create_engine, text

from app.client import stow
from app.processes import migrate
from testkit.dicom_factory import make_series, uid_of
from testkit.servers import PrivatePostgres, Stack

SHORT = {"restarts": 1, "per_outage": 10}
LONG = {"restarts": 3, "per_outage": 20}
BEFORE = 10  # instances pushed while the database is up, before each outage


def _push(c: httpx.Client, blob: bytes, i: int) -> int:
    """Alternate peer push and STOW-RS, so both paths meet the outage."""
    return (c.post("/instances", content=blob) if i % 2 else stow(c, [blob])).status_code


def run(make_stack, workdir, *, restarts: int, per_outage: int) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    pg = PrivatePostgres()
    pg.start()
    down_codes: list[int] = []
    ready_codes: list[int] = []
    recovery_s: list[float] = []
    sent: list[bytes] = []
    try:
        migrate(pg.url)
        stack: Stack = make_stack(worker=False, GATEKEEPER_DATABASE_URL=pg.url)
        with stack.client("pacs", timeout=30) as c:
            for _ in range(restarts):
                _, blobs = make_series(BEFORE + per_outage)
                for i, blob in enumerate(blobs[:BEFORE]):
                    assert _push(c, blob, i) == 200
                pg.stop()
                outage = blobs[BEFORE:]
                down_codes += [_push(c, blob, i) for i, blob in enumerate(outage)]
                ready_codes.append(c.get("/readyz").status_code)
                pg.start()
                back = time.monotonic()
                while _push(c, outage[0], 0) != 200:  # the same client, the same API process: no restart
                    assert time.monotonic() - back < 60, "ingest did not recover by itself"
                    time.sleep(0.1)
                recovery_s.append(time.monotonic() - back)
                for i, blob in enumerate(outage[1:], 1):
                    assert _push(c, blob, i) == 200
                sent += blobs
        stack.service.stop()
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            stored = [r[0] for r in conn.execute(text("SELECT sop_instance_uid FROM instances"))]
        engine.dispose()
    finally:
        pg.remove()
    assert set(down_codes) == {503}, f"while the database was down: {sorted(set(down_codes))} (only 503 allowed)"
    assert set(ready_codes) == {503}, "/readyz must say 503 while the database is down"
    lost = len({uid_of(b) for b in sent} - set(stored))
    assert not lost and len(stored) == len(set(stored)) == len(sent), f"{lost} lost, {len(stored)} rows"
    return {
        "restarts": restarts,
        "runs": len(down_codes) + len(sent),
        "pushes_while_down": len(down_codes),
        "answered_503_while_down": down_codes.count(503),
        "answered_200_while_down": down_codes.count(200),
        "worst_recovery_s": round(max(recovery_s), 1),
        "files_tried": len(sent),
        "stored": len(stored),
        "lost": lost,
        "seconds": round(time.monotonic() - t0, 1),
    }
