"""The DICOM C-STORE receiver's domain: who may associate, storing one data set, and its DIMSE status.

The receiver (app/dimse/server.py) is as thin as an HTTP router: it hands each C-STORE's encoded data set
to ``store_dataset``, which writes it as a Part 10 file and calls the same ``ingest_files`` as STOW-RS and
peer push, so the durability, duplicate, conflict and identity rules and the failure reasons are the
same. The status goes back only after ``ingest_files`` returned, i.e. after the file and its directory
were fsynced and the row committed: a success is never acknowledged before the instance is durable.

The file meta is rebuilt from the C-STORE request alone (no Source AE title, a fixed implementation
UID and name, never a version), so the same data set sent again, by any sender, makes the same bytes
and is a duplicate, not a conflict.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from app.core.config import Settings
from app.core.db import session_scope
from app.dicom.parse import ParseLimits
from app.services import series as series_service
from app.services.failures import FailureReason
from app.services.ingest import Outcome, StorageUnavailable, ingest_files
from app.services.storage import InstanceStore

log = logging.getLogger(__name__)

IMPLEMENTATION_CLASS_UID = "2.25.146001425548135858702032015145812348213"  # fixed: the file bytes must not move
IMPLEMENTATION_VERSION_NAME = "GATEKEEPER"

SUCCESS = 0x0000
# The failure reasons are DIMSE status codes already (PS3.4 B.2.3 and PS3.7 C); this table is the one
# mapping, spelled out so that README's table and the code cannot drift apart.
STATUS_FOR_REASON: dict[FailureReason, int] = {
    FailureReason.CANNOT_UNDERSTAND: 0xC000,  # Error: cannot understand (not parseable)
    FailureReason.DATASET_MISMATCH: 0xA900,  # Error: data set does not match SOP class
    FailureReason.SOP_CLASS_NOT_SUPPORTED: 0x0122,  # Refused: SOP class not supported (not CT Image Storage)
    FailureReason.TRANSFER_SYNTAX: 0xC122,  # Error (Cxxx): transfer syntax not supported
    FailureReason.OUT_OF_RESOURCES: 0xA700,  # Refused: out of resources (too large)
    FailureReason.DUPLICATE_CONFLICT: 0x0111,  # Failure: duplicate SOP instance (other bytes)
    FailureReason.PATIENT_CONFLICT: 0xA778,  # dcm4chee-arc's DIMSE code for a conflicting PatientID
    FailureReason.SERIES_CONFLICT: 0xC40A,  # the series' study, Modality or frame of reference differs
    FailureReason.STUDY_MISMATCH: 0xC409,  # (STOW only: DIMSE has no study in a URL)
    FailureReason.PROCESSING_FAILURE: 0x0110,  # Failure: processing failure
    FailureReason.NO_CLAIMED_CASE: 0xC40B,  # (STOW only: a radiologist's contour SEG for a case it does not hold)
}
UNAVAILABLE = 0xA700  # the database or the disk is down: nothing stored, the sender should retry


class AllowListError(ValueError):
    """GATEKEEPER_DIMSE_ALLOWED_PEERS or GATEKEEPER_DIMSE_AE_TITLE is malformed (the message says where)."""


@dataclass(frozen=True)
class PeerRule:
    """One allow-list entry: a calling AE title, from a network (None: from any host)."""

    ae_title: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None


@dataclass(frozen=True)
class StoreResult:
    status: int
    comment: str  # ErrorComment (0000,0902): the reason in words, never a value of the data set
    series_uid: str | None = None
    stored: bool = False
    duplicate: bool = False


def check_ae_title(title: str, what: str) -> str:
    """An AE title: 1-16 characters of printable ASCII without a backslash, not only spaces (PS3.5 AE)."""
    stripped = title.strip()
    if not stripped or len(title) > 16 or "\\" in title or not all(32 <= ord(c) < 127 for c in title):
        raise AllowListError(f"{what}: {title[:20]!r} is not an AE title (1-16 printable ASCII, no backslash)")
    return stripped


def _networks(host: str, entry: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    if host == "*":
        return None
    try:
        return (ipaddress.ip_network(host, strict=False),)
    except ValueError:
        pass
    try:  # a host name: resolved once, when the receiver starts
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        raise AllowListError(
            f"allowed peer {entry!r}: host {host!r} is not an address, a network or a known name"
        ) from None
    return tuple(sorted({ipaddress.ip_network(str(info[4][0])) for info in infos}, key=str))


def parse_allowed_peers(text: str) -> list[PeerRule]:
    """``AE@host`` entries, comma-separated; host is an address, a CIDR network, a host name or ``*``."""
    rules = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        title, at, host = entry.rpartition("@")
        if not at or not host.strip():
            raise AllowListError(f"allowed peer {entry!r}: expected AE@host (host an address, a network or *)")
        rules.append(PeerRule(check_ae_title(title, f"allowed peer {entry!r}"), _networks(host.strip(), entry)))
    return rules


def peer_allowed(rules: Iterable[PeerRule], *, ae_title: str, address: str) -> bool:
    """Whether a calling AE title, from this address, is on the allow-list."""
    title = ae_title.strip()
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for rule in rules:
        if rule.ae_title == title and (rule.networks is None or any(ip in net for net in rule.networks)):
            return True
    return False


def status_of(outcome: Outcome) -> StoreResult:
    if outcome.ok:
        comment = "already stored" if outcome.duplicate else ""
        return StoreResult(SUCCESS, comment, outcome.series_uid, outcome.stored, outcome.duplicate)
    assert outcome.reason is not None
    return StoreResult(STATUS_FOR_REASON[outcome.reason], outcome.message[:64], outcome.series_uid)


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buf.getvalue()


def store_dataset(
    *, store: InstanceStore, settings: Settings, sop_class_uid: str, sop_instance_uid: str,
    transfer_syntax_uid: str, dataset: bytes | memoryview, actor: str,
) -> StoreResult:  # fmt: skip
    """Store one C-STORE data set durably (or refuse it); the DIMSE status to answer with."""
    try:
        header = _file_meta(sop_class_uid.strip("\x00 "), sop_instance_uid.strip("\x00 "), transfer_syntax_uid)
    except Exception as exc:  # noqa: BLE001 - hostile UIDs in the command set
        return StoreResult(0xC000, f"cannot encode the file meta: {type(exc).__name__}")
    limits = ParseLimits(settings.max_pixel_bytes, settings.max_sequence_depth)
    with store.owner() as owner:  # the orphan sweep keeps off the file until its commit is over
        writer = owner.new_temp(settings.max_instance_bytes)
        try:
            writer.write(header)
            writer.write(dataset)
        except OverflowError:
            writer.abort()
            return StoreResult(0xA700, "instance exceeds the size limit")
        except BaseException:
            writer.abort()
            raise
        received = writer.finish(False)  # ingest fsyncs it if it is new
        try:
            [outcome] = ingest_files(store=store, files=[received], expected_study=None, actor=actor, limits=limits)
        except StorageUnavailable as exc:
            return StoreResult(UNAVAILABLE, f"{exc}; retry later")
    return status_of(outcome)


def complete_series(*, series_uids: Iterable[str], actor: str) -> int:
    """Complete each series an association stored into (GATEKEEPER_DIMSE_COMPLETE_ON_RELEASE); how many."""
    done = 0
    for uid in sorted(set(series_uids)):
        try:
            with session_scope() as session:
                series_service.complete_now(session=session, series_uid=uid, actor=actor, trigger="dimse_release")
            done += 1
        except (series_service.SeriesNotFound, series_service.SeriesNotReceiving):
            continue  # already queued or finished (all duplicates), or refused everywhere
    return done
