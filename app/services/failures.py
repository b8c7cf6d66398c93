"""Failure reasons returned in STOW-RS FailureReason (0008,1197) and to peer pushes.

Codes follow DICOM PS3.18 Annex I / PS3.4 status codes. No code is standardised for
the study mismatch or the identity conflicts: the study mismatch and the patient
conflict follow dcm4chee-arc (0xC409, 0xA778 CONFLICTING_PID_NOT_ACCEPTED); the
series conflict, which dcm4chee has no code for, takes the next code after 0xC409, and a contour SEG whose
case the sender does not hold the one after that.
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
    PATIENT_CONFLICT = 0xA778  # PatientID (or its issuer) differs from that of the stored study
    SERIES_CONFLICT = 0xC40A  # StudyInstanceUID, Modality or FrameOfReferenceUID differs from the series'
    NO_CLAIMED_CASE = 0xC40B  # a contour SEG whose series' case the sender does not hold (claimed, live lease)

    @property
    def is_conflict(self) -> bool:
        return self in (
            FailureReason.DUPLICATE_CONFLICT,
            FailureReason.STUDY_MISMATCH,
            FailureReason.PATIENT_CONFLICT,
            FailureReason.SERIES_CONFLICT,
            FailureReason.NO_CLAIMED_CASE,
        )


class InvalidInstance(Exception):
    """One instance refused; the message is precise and carries no PHI."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
