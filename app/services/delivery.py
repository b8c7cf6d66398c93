"""Results back to the PACS, nothing lost: the deliveries outbox, its relay and one delivery attempt.

A delivery row is written in the transaction that accepts a result (``routing.record_auto`` for the
auto-segmentation's SEG, ``labeling.submit_contour`` for a radiologist's contour), so a crash before the
commit loses both and one after it loses neither. The dispatcher's relay publishes due rows to the
``delivery`` queue (the id only); a worker claims the row (compare-and-set, attempt + 1, a lease), sends the
SEG by STOW-RS or by C-STORE (``app/services/destination_dimse.py``) and marks it delivered only once the
destination listed it as stored (STOW-RS) or answered a success status (C-STORE). A failure that may pass
waits ``min(base * 2**(n-1), max)`` seconds and goes back to the relay, at most
``GATEKEEPER_DELIVERY_MAX_ATTEMPTS`` times; a refusal (401, 409, a FailureReason) fails at once. A worker that
dies mid-send leaves a lease that runs out; the reconciler then hands the row back to the relay.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pydicom
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import session_scope
from app.core.errors import Conflict, NotFound
from app.db import deliveries, reads
from app.db.deliveries import DeliveryAttempt
from app.db.states import DeliveryKind, DeliveryStatus
from app.db.tables import Case, Delivery, Series
from app.services import audit
from app.services.derived import add_derived_instance, write_object
from app.services.destination import SendResult, send_seg
from app.services.destination_dimse import dimse_destination, send_seg_dimse
from app.services.storage import InstanceStore

log = logging.getLogger(__name__)
ACTOR = "delivery"
TRANSIENT = (OSError, MemoryError, OperationalError, InterfaceError)
DeliveryPublisher = Callable[[int, int], None]  # (delivery id, publish count)


class DeliveryNotFound(NotFound):
    pass


class DeliveryNotFailed(Conflict):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def backoff_s(settings: Settings, attempt: int) -> float:
    """The wait after the ``attempt``-th failed attempt of a schedule (1-based): doubling, capped."""
    return float(min(settings.delivery_backoff_s * 2 ** max(attempt - 1, 0), settings.delivery_backoff_max_s))


def lease_s(settings: Settings) -> float:
    """How long one attempt holds its row: writing a contour's SEG, then one STOW request (connect, send, read)."""
    return 4 * settings.delivery_timeout_s + 60


def destination_configured(settings: Settings) -> bool:
    return bool(settings.seg_destination_url or settings.seg_destination_dimse_host)


def destination_of(settings: Settings) -> str:
    """The DICOMweb base URL, or ``dicom://AE@host:port`` for a C-STORE destination."""
    if settings.seg_destination_dimse_host:
        return dimse_destination(settings)
    return settings.seg_destination_url.rstrip("/")


def enqueue_auto_seg(
    session: Session, settings: Settings, *, series_id: int, revision: int, seg_path: str, seg_sop_uid: str
) -> Delivery | None:
    """In the caller's transaction: the auto-segmentation's stored SEG, to the configured PACS (if any)."""
    if not destination_configured(settings):
        return None
    return deliveries.add(session, kind=DeliveryKind.AUTO_SEG, series_id=series_id, revision=revision,
                          destination=destination_of(settings), now=_now(), seg_path=seg_path,
                          seg_sop_uid=seg_sop_uid)  # fmt: skip


def enqueue_contour_seg(
    session: Session, settings: Settings, *, series_id: int, revision: int, case_id: int
) -> Delivery | None:
    """In the caller's transaction: an accepted contour, written as a SEG by the delivery's first attempt."""
    if not destination_configured(settings):
        return None
    return deliveries.add(session, kind=DeliveryKind.CONTOUR_SEG, series_id=series_id, revision=revision,
                          destination=destination_of(settings), now=_now(), case_id=case_id)  # fmt: skip


def relay(publish: DeliveryPublisher) -> int:
    """Publish the due pending rows; a broker error leaves them for the next tick."""
    sent = 0
    with session_scope() as session:
        for row in deliveries.due(session, now=_now()):
            try:
                publish(row.id, row.publish_count + 1)
            except Exception as exc:  # noqa: BLE001 - broker down: keep the row, try next tick
                log.warning("broker publish of a delivery failed (%s); kept in the outbox", type(exc).__name__)
                break
            row.published_at = _now()
            row.publish_count += 1
            sent += 1
    return sent


def reconcile(*, reconcile_after_s: float) -> int:
    """Publish again what the broker lost and what a dead worker held."""
    now = _now()
    with session_scope() as session:
        ids = deliveries.reset_stale(session, now=now, published_before=now - timedelta(seconds=reconcile_after_s))
        for delivery_id in ids:
            audit.record(session, actor="dispatcher", action="delivery.resent", entity_type="delivery",
                         entity_id=delivery_id)  # fmt: skip
    return len(ids)


def deliver(settings: Settings, *, delivery_id: int) -> str:
    """One attempt: claim, write the SEG of a contour if not yet written, send, record; safe to run twice."""
    with session_scope() as session:
        a = deliveries.claim(session, delivery_id=delivery_id, now=_now(), lease_s=lease_s(settings))
    if a is None:
        return "skipped"  # delivered, failed, or held by a live attempt
    store = InstanceStore(settings.storage_dir, fsync=settings.fsync)
    try:
        seg_path, sop_uid = (a.seg_path, a.seg_sop_uid) if a.seg_path else _write_contour_seg(settings, store, a)
        if seg_path is None or sop_uid is None:
            return "fenced"
        send = send_seg_dimse if settings.seg_destination_dimse_host else send_seg  # C-STORE, or STOW-RS
        result = send(settings, (settings.storage_dir / seg_path).read_bytes(), sop_uid)
    except TRANSIENT as exc:  # the disk, the database, memory: worth another attempt
        result = SendResult(False, True, None, f"error before sending: {type(exc).__name__}")
    except Exception as exc:  # noqa: BLE001 - the same SEG fails the same way again (no PHI: the type only)
        result = SendResult(False, False, None, f"error before sending: {type(exc).__name__}")
    return _record(settings, a, result)


def _record(settings: Settings, a: DeliveryAttempt, result: SendResult) -> str:
    now = _now()
    common = {"last_http_status": result.http_status, "lease_until": None}
    if result.acknowledged:
        values, outcome = {"status": DeliveryStatus.DELIVERED, "delivered_at": now, "last_error": None}, "delivered"
    elif result.retryable and a.in_schedule < settings.delivery_max_attempts:
        wait = backoff_s(settings, a.in_schedule)
        values = {"status": DeliveryStatus.PENDING, "next_attempt_at": now + timedelta(seconds=wait),
                  "published_at": None, "last_error": result.detail}  # fmt: skip
        outcome = "retry"
    else:
        spent = " (retry schedule spent)" if result.retryable else ""
        values, outcome = {"status": DeliveryStatus.FAILED, "last_error": result.detail + spent}, "failed"
    with session_scope() as session:
        if not deliveries.update_held(session, a, **common, **values):
            return "fenced"
        audit.record(session, actor=ACTOR, action=f"delivery.{outcome}", entity_type="delivery", entity_id=a.id,
                     kind=a.kind, series_id=a.series_id, revision=a.revision, attempt=a.number,
                     http_status=result.http_status, detail=result.detail)  # fmt: skip
    log.info("delivery %d attempt %d: %s (%s)", a.id, a.number, outcome, result.detail)
    return outcome


def _write_contour_seg(settings: Settings, store: InstanceStore, a: DeliveryAttempt) -> tuple[str | None, str | None]:
    """The contour as a DICOM SEG over its series' primary stack, stored as a derived instance (served by
    QIDO/WADO like the auto-segmentation's) in the same transaction that names it on the delivery row."""
    from app.dicom.seg import read_nifti_mask, write_seg
    from app.dicom.volume import order_and_check

    with session_scope() as session:
        case, series = session.get(Case, a.case_id), session.get(Series, a.series_id)
        if case is None or series is None or not case.contour_path:
            raise ValueError("the delivery's case has no stored contour")
        contour, study_id, paths = case.contour_path, series.study_id, reads.instance_paths(session, series.id)
    headers = [pydicom.dcmread(settings.storage_dir / p, stop_before_pixels=True) for p in paths]
    kept, geometry = order_and_check(headers)
    mask = read_nifti_mask(settings.storage_dir / contour, geometry, label="contour")
    seg = write_seg(mask, [headers[i] for i in kept], algorithm_name="gatekeeper-contour", algorithm_version="1",
                    model_sha256="", manual=True)  # fmt: skip
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    relative, sha, size = write_object(store, buf.getvalue())
    sop_uid = str(seg.SOPInstanceUID)
    with session_scope() as session:
        if not deliveries.update_held(session, a, seg_path=relative, seg_sop_uid=sop_uid):
            store.remove(relative)  # fenced off: another attempt holds the row and writes its own
            return None, None
        add_derived_instance(session, study_id=study_id, series_uid=str(seg.SeriesInstanceUID), sop_uid=sop_uid,
                             sop_class_uid=str(seg.SOPClassUID), modality="SEG", relative=relative, sha256=sha,
                             size=size, transfer_syntax_uid=str(seg.file_meta.TransferSyntaxUID))  # fmt: skip
    return relative, sop_uid


@dataclass
class DeliveryView:
    id: int
    kind: str
    status: str
    series_uid: str
    revision: int
    case_id: int | None
    destination: str
    attempts: int
    next_attempt_at: datetime | None
    last_http_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _view(session: Session, row: Delivery) -> DeliveryView:
    series = session.get(Series, row.series_id)
    assert series is not None
    waiting = row.status == DeliveryStatus.PENDING
    return DeliveryView(row.id, row.kind, row.status, series.series_uid, row.revision, row.case_id, row.destination,
                        row.attempts, row.next_attempt_at if waiting else None, row.last_http_status, row.last_error,
                        row.created_at, row.delivered_at)  # fmt: skip


def list_deliveries(
    *, session: Session, status: DeliveryStatus | None, limit: int, offset: int
) -> tuple[list[DeliveryView], dict[str, int]]:
    rows = deliveries.listing(session, status=status, limit=limit, offset=offset)
    return [_view(session, r) for r in rows], deliveries.counts(session)


def get_delivery(*, session: Session, delivery_id: int) -> DeliveryView:
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise DeliveryNotFound(f"no delivery {delivery_id}")
    return _view(session, row)


def send_again(*, session: Session, delivery_id: int, actor: str) -> DeliveryView:
    """A failed delivery back into the outbox with a fresh schedule."""
    if not deliveries.send_again(session, delivery_id=delivery_id, now=_now()):
        row = session.get(Delivery, delivery_id)
        if row is None:
            raise DeliveryNotFound(f"no delivery {delivery_id}")
        raise DeliveryNotFailed(f"delivery {delivery_id} is {row.status}; only a failed delivery is sent again")
    audit.record(session, actor=actor, action="delivery.send_again", entity_type="delivery", entity_id=delivery_id)
    session.expire_all()
    return get_delivery(session=session, delivery_id=delivery_id)
