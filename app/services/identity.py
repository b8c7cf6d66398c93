"""Identity rules: which attributes must agree within a study and within a series (README, "Identity rules").

An instance that breaks one is refused (a failure item and an audit event) and never joins the stored study
or series: a series that held slices of two patients would be scored, segmented and reported as one.

- Within a study: PatientID (after padding is removed; empty only matches empty) and, where both sides
  name one, IssuerOfPatientID. These are what the PACS keys a patient on (dcm4chee-arc does the same).
  Name, birth date and sex are not compared: a PACS corrects them after the fact, and a correction must
  not strand the rest of a study; they are not what identifies the patient.
- Within a series: StudyInstanceUID (a series belongs to one study, so to its patient too), Modality and,
  where both sides have one, FrameOfReferenceUID (one patient coordinate system per series; the mask and
  the SEG are written in it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.dicom.parse import InstanceHeader
from app.services.failures import FailureReason


@dataclass(frozen=True)
class StudyIdentity:
    patient_id: str | None
    issuer: str | None
    row_id: int | None = None  # the stored study, when there is one


@dataclass(frozen=True)
class SeriesIdentity:
    study_uid: str
    modality: str | None
    frame_of_reference_uid: str | None
    row_id: int | None = None


@dataclass(frozen=True)
class Conflict:
    reason: FailureReason
    attribute: str
    scope: str  # "study" or "series"
    row_id: int | None  # the stored row it conflicts with; None for an earlier instance of the same batch

    @property
    def message(self) -> str:  # at most 64 characters (ErrorComment is LO); no value, no UID
        return f"{self.attribute} differs from that of its {self.scope}; not mixed"


def study_of(header: InstanceHeader) -> StudyIdentity:
    return StudyIdentity(header.patient_id, header.issuer_of_patient_id)


def series_of(header: InstanceHeader) -> SeriesIdentity:
    return SeriesIdentity(header.study_uid, header.modality, header.frame_of_reference_uid)


def _both_and_differ(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a != b


def study_conflict(known: StudyIdentity, new: StudyIdentity) -> str | None:
    """The first attribute of the study rule that differs, or None."""
    if known.patient_id != new.patient_id:
        return "PatientID"
    if _both_and_differ(known.issuer, new.issuer):
        return "IssuerOfPatientID"
    return None


def series_conflict(known: SeriesIdentity, new: SeriesIdentity) -> str | None:
    """The first attribute of the series rule that differs, or None."""
    if known.study_uid != new.study_uid:
        return "StudyInstanceUID"
    if known.modality != new.modality:
        return "Modality"
    if _both_and_differ(known.frame_of_reference_uid, new.frame_of_reference_uid):
        return "FrameOfReferenceUID"
    return None


def check(
    header: InstanceHeader, studies: dict[str, StudyIdentity], series: dict[str, SeriesIdentity]
) -> Conflict | None:
    """Check one instance against what is known (stored rows, then earlier instances of the batch).

    An instance that passes becomes what later instances of the batch must agree with, so the first
    instance of a new series or study in a request decides it, as the first stored one would.
    """
    new_series, known_series = series_of(header), series.get(header.series_uid)
    if known_series is not None and (attr := series_conflict(known_series, new_series)):
        return Conflict(FailureReason.SERIES_CONFLICT, attr, "series", known_series.row_id)
    new_study, known_study = study_of(header), studies.get(header.study_uid)
    if known_study is not None and (attr := study_conflict(known_study, new_study)):
        return Conflict(FailureReason.PATIENT_CONFLICT, attr, "study", known_study.row_id)
    series[header.series_uid] = _merge_series(known_series, new_series)
    studies[header.study_uid] = _merge_study(known_study, new_study)
    return None


def _merge_study(known: StudyIdentity | None, new: StudyIdentity) -> StudyIdentity:
    # An attribute compared only when both sides have one is fixed by the first instance that has one.
    if known is None:
        return new
    return known if known.issuer is not None else replace(known, issuer=new.issuer)


def _merge_series(known: SeriesIdentity | None, new: SeriesIdentity) -> SeriesIdentity:
    if known is None:
        return new
    if known.frame_of_reference_uid is not None:
        return known
    return replace(known, frame_of_reference_uid=new.frame_of_reference_uid)
