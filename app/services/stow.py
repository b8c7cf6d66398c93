"""The STOW-RS reply (DICOM PS3.18 10.5.3): status code and application/dicom+json body."""

from __future__ import annotations

from typing import Any

from app.services.failures import FailureReason
from app.services.ingest import Outcome


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def stow_status(outcomes: list[Outcome]) -> int:
    """200 all stored; 202 some; 409 none and a conflict among the failures; 400 none."""
    stored = sum(o.ok for o in outcomes)
    if outcomes and stored == len(outcomes):
        return 200
    if stored:
        return 202
    if any(o.reason is not None and o.reason.is_conflict for o in outcomes):
        return 409
    return 400


def stow_body(outcomes: list[Outcome], base_url: str) -> dict[str, Any]:
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for o in outcomes:
        item: dict[str, Any] = {"00081150": _ui(o.sop_class_uid), "00081155": _ui(o.sop_instance_uid)}
        if o.ok:
            assert o.study_uid and o.series_uid and o.sop_instance_uid
            item["00081190"] = {
                "vr": "UR",
                "Value": [instance_url(base_url, o.study_uid, o.series_uid, o.sop_instance_uid)],
            }
            referenced.append(item)
        else:
            assert o.reason is not None
            item["00081197"] = {"vr": "US", "Value": [int(o.reason)]}
            # ErrorComment (0000,0902), as in a DIMSE response: the precise reason in words.
            item["00000902"] = {"vr": "LO", "Value": [o.message[:64]]}
            failed.append(item)
    body: dict[str, Any] = {}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    return body


def part_refused(content_type: str) -> Outcome:
    return Outcome(
        sop_class_uid=None,
        sop_instance_uid=None,
        reason=FailureReason.CANNOT_UNDERSTAND,
        message=f"part media type {content_type[:40] or '(none)'} is not application/dicom",
    )
