"""The PACS a result goes back to, by DICOM C-STORE (pynetdicom as the SCU): one association, one instance.

The DIMSE counterpart of ``app/services/destination.py``, with the same outcome type, so the outbox
(``app/services/delivery.py``) schedules, retries and fails both alike. A delivery counts only on a C-STORE
response of Success (0x0000), a Warning (0xB000, 0xB006, 0xB007: stored, PS3.4 B.2.3), or 0x0111 (the
destination already holds this SOP Instance UID: a previous attempt whose response was lost; the UID is
this service's own, made for this SEG). Worth another attempt: no connection, no answer in time, an
association rejected as transient or aborted, and 0xA7xx (out of resources). A refusal the same request
would meet again fails at once: an association rejected as permanent (an unknown calling or called AE
title), the SEG's SOP class or transfer syntax not accepted, any other failure status.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ

from app.core.config import Settings
from app.services.destination import DestinationNotConfigured, SendResult

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
STORED_WITH_WARNING = frozenset({0xB000, 0xB006, 0xB007})
ALREADY_STORED = 0x0111
REJECTED_PERMANENT = 0x01


def dimse_destination(settings: Settings) -> str:
    """``dicom://AE@host:port``, as the delivery rows and the admin API name the destination."""
    return f"dicom://{settings.seg_destination_ae_title}@{settings.seg_destination_dimse_host}:" \
        f"{settings.seg_destination_dimse_port}"  # fmt: skip


def read_status(status: int) -> SendResult:
    """What a C-STORE response's Status means for the delivery (``http_status`` stays None: not HTTP)."""
    code = f"0x{status:04X}"
    if status == 0x0000:
        return SendResult(True, False, None, "stored (C-STORE 0x0000)")
    if status in STORED_WITH_WARNING:
        return SendResult(True, False, None, f"stored with warning (C-STORE {code})")
    if status == ALREADY_STORED:
        return SendResult(True, False, None, "already stored at the destination (C-STORE 0x0111)")
    if status & 0xFF00 == 0xA700:
        return SendResult(False, True, None, f"destination out of resources (C-STORE {code})")
    return SendResult(False, False, None, f"destination refused the SEG (C-STORE {code})")


def _note_rejection(event: evt.Event, rejections: list[int]) -> None:
    if isinstance(event.pdu, A_ASSOCIATE_RJ) and event.pdu.result is not None:
        rejections.append(int(event.pdu.result))


def send_seg_dimse(settings: Settings, blob: bytes, sop_uid: str) -> SendResult:
    """C-STORE one SEG to ``GATEKEEPER_SEG_DESTINATION_AE_TITLE`` at ``…_DIMSE_HOST:…_DIMSE_PORT``, calling
    as ``GATEKEEPER_DIMSE_AE_TITLE``."""
    host, port = settings.seg_destination_dimse_host, settings.seg_destination_dimse_port
    if not host or port is None:
        raise DestinationNotConfigured("GATEKEEPER_SEG_DESTINATION_DIMSE_HOST and _PORT are not set")
    dataset = pydicom.dcmread(io.BytesIO(blob))
    if str(dataset.SOPInstanceUID) != sop_uid:
        raise ValueError("the stored SEG's SOP Instance UID differs from the delivery's")
    syntax = dataset.file_meta.TransferSyntaxUID
    ae = AE(ae_title=settings.dimse_ae_title)
    timeout = settings.delivery_timeout_s
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    # The file's own transfer syntax; an uncompressed one may also go in the other uncompressed syntax.
    ae.add_requested_context(dataset.SOPClassUID, [syntax, *(s for s in UNCOMPRESSED if s != syntax)]
                             if syntax in UNCOMPRESSED else [syntax])  # fmt: skip
    # The A-ASSOCIATE-RJ as its PDU arrives: pynetdicom 3.0 reports a rejection followed at once by the
    # peer's close (Orthanc's, dcmtk's) as an abort about one time in six, and a permanent refusal would
    # then be retried as if the destination were down (tests/unit/test_dimse_rejection.py).
    rejections: list[int] = []
    assoc = ae.associate(host, port, ae_title=settings.seg_destination_ae_title,
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda e: _note_rejection(e, rejections))])  # fmt: skip
    try:
        if assoc.is_rejected or rejections:
            primitive = assoc.acceptor.primitive
            result = rejections[0] if rejections else primitive.result if primitive is not None else None
            permanent = result == REJECTED_PERMANENT
            return SendResult(False, not permanent, None,
                              f"association rejected ({'permanent' if permanent else 'transient'})")  # fmt: skip
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                return SendResult(False, False, None, "destination accepts neither the SEG's SOP class nor its "
                                                      "transfer syntax")  # fmt: skip
            return SendResult(False, True, None, "no association (connection refused, timed out or aborted)")
        response = assoc.send_c_store(dataset)
        if "Status" not in response:
            return SendResult(False, True, None, "no C-STORE response (timed out or aborted)")
        return read_status(int(response.Status))
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
