"""Failure reasons returned in STOW-RS FailureReason (0008,1197) and to peer pushes.

Codes follow DICOM PS3.18 Annex I / PS3.4 status codes; the study mismatch code
follows dcm4chee's usage (no code is standardised for it).
"""

from __future__ import annotations

from enum import IntEnum


class FailureReason(IntEnum):
    PROCESSING_FAILURE = 0x0110  # storage or database error on our side
    DUPLICATE_CONFLICT = 0x0111  # same SOP Instance UID already stored with other bytes
    SOP_CLASS_NOT_SUPPORTED = 0x0122  # not CT Image Storage
    OUT_OF_RESOURCES = 0xA700  # too large
    DATASET_MISMATCH = 0xA900  # required attributes missing or inconsistent with the SOP class
    CANNOT_UNDERSTAND = 0xC000  # not DICOM, truncated, unparseable
    TRANSFER_SYNTAX = 0xC122  # transfer syntax not supported (deflate is refused)
    STUDY_MISMATCH = 0xC409  # StudyInstanceUID differs from the one in the request URL

    @property
    def is_conflict(self) -> bool:
        return self in (FailureReason.DUPLICATE_CONFLICT, FailureReason.STUDY_MISMATCH)


class InvalidInstance(Exception):
    """One instance refused; the message is precise and carries no PHI."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
