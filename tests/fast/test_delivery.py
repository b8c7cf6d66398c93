"""The results outbox in process (real PostgreSQL, rolled back): schedule, claim and fencing, what counts as
delivered, relay and reconciler. The destination is a real HTTP server on loopback that answers as scripted
(the real PACS, Orthanc with Basic auth, is in tests/integration/test_delivery_orthanc.py)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db import deliveries
from app.db.states import DeliveryKind, DeliveryStatus
from app.db.tables import AuditEvent, Delivery
from app.processes import free_port
from app.services import delivery
from app.services.destination import read_reply
from tests.fast.conftest import add_series

SOP = "1.2.826.0.1.3680043.8.498.1"


class Scripted(ThreadingHTTPServer):
    """Answers each STOW request with the next (status, body) of ``replies``; keeps what it received."""

    def __init__(self, replies: list[tuple[int, dict | None]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies, self.received = list(replies), []  # type: ignore[var-annotated]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dicom-web"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers), body))
        code, reply = self.server.replies.pop(0)
        data = httpx.Response(200, json=reply).content if reply is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Callable[[list[tuple[int, dict | None]]], Scripted]]:
    servers: list[Scripted] = []

    def make(replies: list[tuple[int, dict | None]]) -> Scripted:
        server = Scripted(replies)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def stored(sop: str = SOP) -> dict:
    return {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [sop]}}]}}


def refused(sop: str = SOP, reason: int = 0x0110) -> dict:
    item = {"00081155": {"vr": "UI", "Value": [sop]}, "00081197": {"vr": "US", "Value": [reason]}}
    return {"00081198": {"vr": "SQ", "Value": [item]}}


def settings_for(tmp_path: Path, url: str, **kw: object) -> Settings:
    return Settings(storage_dir=tmp_path, seg_destination_url=url, delivery_backoff_s=2, delivery_backoff_max_s=5,
                    delivery_max_attempts=3, delivery_timeout_s=5, **kw)  # type: ignore[arg-type]  # fmt: skip


def auto_delivery(db: Session, settings: Settings) -> Delivery:
    s = add_series(db, status="auto")
    (settings.storage_dir / "derived").mkdir(parents=True, exist_ok=True)
    (settings.storage_dir / "derived" / "seg.dcm").write_bytes(b"DICM-not-parsed-by-the-sender")
    row = delivery.enqueue_auto_seg(db, settings, series_id=s.id, revision=0, seg_path="derived/seg.dcm",
                                    seg_sop_uid=SOP)  # fmt: skip
    assert row is not None
    db.flush()
    return row


def state(db: Session, row: Delivery) -> Delivery:
    db.expire_all()
    got = db.get(Delivery, row.id)
    assert got is not None
    return got


def test_the_schedule_doubles_and_is_capped() -> None:
    s = Settings(delivery_backoff_s=5, delivery_backoff_max_s=60)
    assert [delivery.backoff_s(s, n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_no_destination_no_row(db: Session, tmp_path: Path) -> None:
    s = add_series(db)
    assert delivery.enqueue_auto_seg(db, Settings(storage_dir=tmp_path), series_id=s.id, revision=0,
                                     seg_path="x", seg_sop_uid=SOP) is None  # fmt: skip


def test_delivered_only_when_the_destination_lists_the_instance(db: Session, tmp_path: Path, scripted) -> None:  # type: ignore[no-untyped-def]
    server = scripted([(200, {}), (200, stored())])  # an empty reply acknowledges nothing
    settings = settings_for(tmp_path, server.url, seg_destination_username="gk", seg_destination_password="pw")
    row = auto_delivery(db, settings)
    assert delivery.deliver(settings, delivery_id=row.id) == "retry"
    got = state(db, row)
    assert got.status == DeliveryStatus.PENDING and got.attempts == 1 and "without listing" in (got.last_error or "")
    assert got.next_attempt_at > datetime.now(UTC) + timedelta(seconds=1)  # the first backoff, 2 s
    db.execute(update(Delivery).where(Delivery.id == row.id).values(next_attempt_at=datetime.now(UTC)))
    assert delivery.deliver(settings, delivery_id=row.id) == "delivered"
    got = state(db, row)
    assert got.status == DeliveryStatus.DELIVERED and got.delivered_at is not None and got.last_http_status == 200
    path, headers, body = server.received[-1]
    assert path == "/dicom-web/studies"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"gk:pw").decode()
    assert headers["Content-Type"].startswith("multipart/related") and b"DICM-not-parsed" in body
    assert delivery.deliver(settings, delivery_id=row.id) == "skipped"  # a duplicate task sends nothing
    assert len(server.received) == 2


def test_bearer_token_when_no_basic_credentials(db: Session, tmp_path: Path, scripted) -> None:  # type: ignore[no-untyped-def]
    server = scripted([(200, stored())])
    settings = settings_for(tmp_path, server.url, seg_destination_token="s3cret")
    assert delivery.deliver(settings, delivery_id=auto_delivery(db, settings).id) == "delivered"
    assert server.received[0][1]["Authorization"] == "Bearer s3cret"


def test_a_refusal_fails_at_once_and_an_admin_can_send_it_again(db: Session, tmp_path: Path, scripted) -> None:  # type: ignore[no-untyped-def]
    server = scripted([(401, None), (200, refused()), (200, stored())])
    settings = settings_for(tmp_path, server.url)
    row = auto_delivery(db, settings)
    assert delivery.deliver(settings, delivery_id=row.id) == "failed"
    got = state(db, row)
    assert got.status == DeliveryStatus.FAILED and got.last_http_status == 401 and "refused" in (got.last_error or "")
    assert delivery.send_again(session=db, delivery_id=row.id, actor="admin").status == DeliveryStatus.PENDING
    with pytest.raises(delivery.DeliveryNotFailed):
        delivery.send_again(session=db, delivery_id=row.id, actor="admin")  # pending now: refused
    assert delivery.deliver(settings, delivery_id=row.id) == "failed"  # FailureReason in the reply
    assert "0x0110" in (state(db, row).last_error or "")
    delivery.send_again(session=db, delivery_id=row.id, actor="admin")
    assert delivery.deliver(settings, delivery_id=row.id) == "delivered"
    assert state(db, row).attempts == 3  # the fencing token keeps growing across schedules
    with pytest.raises(delivery.DeliveryNotFound):
        delivery.send_again(session=db, delivery_id=row.id + 10_000, actor="admin")


def test_a_destination_that_is_down_is_retried_on_schedule_then_failed(db: Session, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}/dicom-web")  # nothing listens there
    row = auto_delivery(db, settings)
    waits = []
    for expected in ("retry", "retry", "failed"):
        before = datetime.now(UTC)
        assert delivery.deliver(settings, delivery_id=row.id) == expected
        got = state(db, row)
        assert "ConnectError" in (got.last_error or "") and got.last_http_status is None
        waits.append((got.next_attempt_at - before).total_seconds())
        db.execute(update(Delivery).where(Delivery.id == row.id).values(next_attempt_at=datetime.now(UTC)))
    assert 2 <= waits[0] < 3 and 4 <= waits[1] < 5  # 2 s, then 4 s (capped at 5)
    got = state(db, row)
    assert got.status == DeliveryStatus.FAILED and got.attempts == 3 and "schedule spent" in (got.last_error or "")
    actions = list(db.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "delivery",
                                                              AuditEvent.entity_id == str(row.id))))  # fmt: skip
    assert actions == ["delivery.retry", "delivery.retry", "delivery.failed"]


def test_a_run_whose_lease_ran_out_records_nothing(db: Session, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:9/dicom-web")
    row = auto_delivery(db, settings)
    first = deliveries.claim(db, delivery_id=row.id, now=datetime.now(UTC), lease_s=0.0)
    assert first is not None and first.number == 1
    assert deliveries.claim(db, delivery_id=row.id, now=datetime.now(UTC), lease_s=60) is None  # held
    # the holder died: its lease ran out, the reconciler hands the row back, another attempt takes it
    assert delivery.reconcile(reconcile_after_s=30) == 1
    second = deliveries.claim(db, delivery_id=row.id, now=datetime.now(UTC), lease_s=60)
    assert second is not None and second.number == 2
    assert not deliveries.update_held(db, first, status=DeliveryStatus.DELIVERED)  # fenced off
    assert deliveries.update_held(db, second, status=DeliveryStatus.DELIVERED)


def test_relay_publishes_due_rows_once_and_the_reconciler_again_if_lost(db: Session, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:9/dicom-web")
    row = auto_delivery(db, settings)
    later = auto_delivery(db, settings)
    db.execute(update(Delivery).where(Delivery.id == later.id)
               .values(next_attempt_at=datetime.now(UTC) + timedelta(hours=1)))  # fmt: skip
    sent: list[tuple[int, int]] = []
    assert delivery.relay(lambda i, n: sent.append((i, n))) == 1 and sent == [(row.id, 1)]
    assert delivery.relay(lambda i, n: sent.append((i, n))) == 0  # published, not again
    db.execute(update(Delivery).where(Delivery.id == row.id)
               .values(published_at=datetime.now(UTC) - timedelta(seconds=60)))  # fmt: skip
    assert delivery.reconcile(reconcile_after_s=30) == 1  # the broker lost it: published again
    assert delivery.relay(lambda i, n: sent.append((i, n))) == 1 and sent[-1] == (row.id, 2)

    def down(i: int, n: int) -> None:
        raise ConnectionError("broker down")

    db.execute(update(Delivery).where(Delivery.id == row.id).values(published_at=None))
    assert delivery.relay(down) == 0 and state(db, row).published_at is None  # kept for the next tick


def test_reply_parsing() -> None:
    ok = httpx.Response(200, json=stored())
    assert read_reply(ok, SOP).acknowledged
    assert not read_reply(ok, SOP + ".9").acknowledged  # another instance listed
    assert read_reply(httpx.Response(503), SOP).retryable
    assert read_reply(httpx.Response(429), SOP).retryable
    assert not read_reply(httpx.Response(409, json=refused()), SOP).retryable
    assert read_reply(httpx.Response(200, content=b"not json"), SOP).retryable
    assert read_reply(httpx.Response(202, json=[stored()]), SOP).acknowledged  # a list of one data set


def test_delivery_kinds_are_unique_per_series_revision(db: Session, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:9/dicom-web")
    row = auto_delivery(db, settings)
    assert row.kind == DeliveryKind.AUTO_SEG
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), db.begin_nested():
        delivery.enqueue_auto_seg(db, settings, series_id=row.series_id, revision=0, seg_path="y", seg_sop_uid=SOP)
