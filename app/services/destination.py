"""The PACS a result goes back to: one DICOMweb STOW-RS request, and what its reply means.

A delivery counts only when the destination acknowledged the instance: a 200 or 202 whose body lists its SOP
Instance UID in ReferencedSOPSequence (0008,1199) and not in FailedSOPSequence (0008,1198). What is worth
another attempt: no connection, a timeout, a 5xx, 408 and 429; any other status (401, 403, 400, 409, ...) or
a refusal in the reply is a refusal that the same request would meet again.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from app.client import stow
from app.core.config import Settings

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
RETRYABLE_STATUS = frozenset({408, 429})


class DestinationNotConfigured(RuntimeError):
    pass


@dataclass(frozen=True)
class SendResult:
    acknowledged: bool
    retryable: bool
    http_status: int | None
    detail: str  # no PHI: a status, an exception type, a DICOM failure reason


def auth_of(settings: Settings) -> httpx.Auth | None:
    if settings.seg_destination_username:
        return httpx.BasicAuth(settings.seg_destination_username, settings.seg_destination_password)
    return None


def headers_of(settings: Settings) -> dict[str, str]:
    if settings.seg_destination_token and not settings.seg_destination_username:
        return {"Authorization": f"Bearer {settings.seg_destination_token}"}
    return {}


def _values(item: object, tag: str) -> list:
    if not isinstance(item, dict) or not isinstance(item.get(tag), dict):
        return []
    values = item[tag].get("Value", [])
    return values if isinstance(values, list) else []


def read_reply(response: httpx.Response, sop_uid: str) -> SendResult:
    """What a STOW-RS reply says about ``sop_uid``."""
    code = response.status_code
    if code >= 500 or code in RETRYABLE_STATUS:
        return SendResult(False, True, code, f"destination answered {code}")
    if code not in (200, 202):
        return SendResult(False, False, code, f"destination refused the request with {code}")
    try:
        body = response.json()
    except ValueError:
        return SendResult(False, True, code, f"destination answered {code} without a DICOM JSON body")
    body = body[0] if isinstance(body, list) and body else body
    for item in _values(body, FAILED_SOP_SEQUENCE):
        if sop_uid in _values(item, REFERENCED_SOP_INSTANCE_UID):
            reasons = _values(item, FAILURE_REASON)
            reason = f"0x{int(reasons[0]):04X}" if reasons and isinstance(reasons[0], int) else "no reason given"
            return SendResult(False, False, code, f"destination refused the SEG: FailureReason {reason}")
    referenced = _values(body, REFERENCED_SOP_SEQUENCE)
    stored = [uid for item in referenced for uid in _values(item, REFERENCED_SOP_INSTANCE_UID)]
    if sop_uid not in stored:
        return SendResult(False, True, code, f"destination answered {code} without listing the SEG as stored")
    return SendResult(True, False, code, f"stored ({code})")


def send_seg(settings: Settings, blob: bytes, sop_uid: str) -> SendResult:
    """STOW-RS one SEG to ``GATEKEEPER_SEG_DESTINATION_URL`` (bearer or Basic auth)."""
    if not settings.seg_destination_url:
        raise DestinationNotConfigured("GATEKEEPER_SEG_DESTINATION_URL is not set")
    timeout = httpx.Timeout(settings.delivery_timeout_s)
    try:
        with httpx.Client(base_url=settings.seg_destination_url.rstrip("/"), headers=headers_of(settings),
                          auth=auth_of(settings), timeout=timeout) as client:  # fmt: skip
            response = stow(client, [blob], url="/studies", chunked=False)
    except httpx.HTTPError as exc:
        return SendResult(False, True, None, f"no reply: {type(exc).__name__}")
    return read_reply(response, sop_uid)
