"""Broker restart: Redis killed and restarted during a push, its data kept (append-only file) or flushed.

Ingest never needs the broker (jobs go to the outbox in the completion's transaction), so every STOW and
completion must answer 200 throughout. Every series must then be routed, each within two reconciler
periods of the later of its completion and the broker's last return: a message the restart lost (a flush,
or one the worker held unacknowledged on the old connection) is published again by the reconciler.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import redis

from app.client import stow
from bench.chaos.common import wait_final
from testkit.dicom_factory import make_series
from testkit.servers import PrivateRedis, Stack

# flushed: the restarts (0-based) after which the broker starts empty; the others keep its append-only file
SHORT = {"series": 10, "restarts": 5, "flushed": [2], "reconcile_s": 3}
LONG = {"series": 40, "restarts": 5, "flushed": [2], "reconcile_s": 3}
GAP_S, DOWN_S = 0.5, 0.3
SENTINEL = "chaos:sentinel"


def run(make_stack, workdir, *, series: int, restarts: int, flushed: list[int], reconcile_s: float) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    broker = PrivateRedis(workdir, persist=True)
    broker.start()
    stack: Stack = make_stack(GATEKEEPER_BROKER_URL=broker.url, GATEKEEPER_RECONCILE_AFTER_S=str(reconcile_s))
    codes: list[int] = []
    uids: list[str] = []
    # spread the push over the restarts, so series complete before, during and after each of them
    pause = restarts * (GAP_S + DOWN_S + 0.1) / series

    def push() -> None:
        with stack.client("pacs") as c:
            for _ in range(series):
                spec, blobs = make_series(4)
                codes.append(stow(c, blobs).status_code)
                codes.append(c.post(f"/series/{spec.series_uid}/complete").status_code)
                uids.append(spec.series_uid)
                time.sleep(pause)

    sender = threading.Thread(target=push)
    sender.start()
    kept: list[tuple[int, int]] = []  # (keys before, keys after) for restarts that keep the data
    try:
        for k in range(restarts):
            time.sleep(GAP_S)
            # a key nothing else touches: it must survive a kept restart and be gone after a flushed one
            redis.Redis.from_url(broker.url).set(SENTINEL, k)
            before = broker.keys()
            broker.stop()  # SIGKILL: the append-only file is fsynced on every write, so nothing is lost
            time.sleep(DOWN_S)
            if k in flushed:
                broker.wipe()
            broker.start()
            after = broker.keys()
            survived = redis.Redis.from_url(broker.url).get(SENTINEL) == str(k).encode()
            assert survived != (k in flushed), f"restart {k}: data {'kept' if survived else 'lost'}"
            if k not in flushed:
                kept.append((before, after))
        last_back = datetime.now(UTC)
        sender.join(timeout=120)
        assert not sender.is_alive(), "the push did not finish"
        settle_s = wait_final(stack, uids, timeout_s=60)
        rows = stack.rows(
            "SELECT s.series_uid, s.status, s.instance_count, s.completed_at, d.created_at FROM series s "
            "LEFT JOIN series_decisions d ON d.series_id = s.id WHERE s.series_uid = ANY(:u)",
            u=uids,
        )
    finally:
        stack.service.stop()
        broker.stop()
    assert set(codes) == {200}, f"ingest must keep answering 200 while the broker restarts: {sorted(set(codes))}"
    lost = [r for r in rows if r[1] != "manual" or r[2] != 4 or r[4] is None]
    assert len(rows) == series and not lost, f"{series - len(rows) + len(lost)} series lost"
    # each series routed within two reconciler periods of (its completion, the broker's last return)
    latency = max((decided - max(completed, last_back)).total_seconds() for _, _, _, completed, decided in rows)
    assert latency <= 2 * reconcile_s, f"a series took {latency:.1f} s after the broker was back (> 2 x {reconcile_s})"
    return {
        "series": series,
        "restarts": restarts,
        "restarts_flushed": len(flushed),
        "broker_keys_kept": kept,
        "requests": len(codes),
        "non_200": sum(c != 200 for c in codes),
        "worst_routing_after_broker_back_s": round(max(latency, 0.0), 1),
        "bound_s": 2 * reconcile_s,
        "settle_s": round(settle_s, 1),
        "runs": series,
        "files_tried": series * 4,
        "lost": len(lost),
        "seconds": round(time.monotonic() - t0, 1),
    }
