"""Every status the service stores, and the transitions allowed between series states.

Each enum is the one place its values are written: the columns hold these strings. Every series
status change goes through a compare-and-set UPDATE (``app.db.series``), so two processes racing on
one series cannot both move it.
"""

from __future__ import annotations

from enum import StrEnum

from app.core.errors import Conflict


class SeriesStatus(StrEnum):
    RECEIVING = "receiving"  # instances arriving; not yet stable
    QUEUED = "queued"  # complete; a scoring job is in the outbox or the broker
    SCORING = "scoring"  # a worker holds it (fenced by the attempt number)
    AUTO = "auto"  # in distribution: segmented by the model, SEG stored
    MANUAL = "manual"  # anomalous (or no working scorer): in the manual contouring queue
    FAILED = "failed"  # unreadable volume or over the attempt cap; also queued for manual work
    DERIVED = "derived"  # a series this service produced (DICOM SEG); never scored


FINISHED = frozenset({SeriesStatus.AUTO, SeriesStatus.MANUAL, SeriesStatus.FAILED})

TRANSITIONS: dict[SeriesStatus, frozenset[SeriesStatus]] = {
    SeriesStatus.RECEIVING: frozenset({SeriesStatus.QUEUED}),
    SeriesStatus.QUEUED: frozenset({SeriesStatus.SCORING, SeriesStatus.FAILED, SeriesStatus.RECEIVING}),
    SeriesStatus.SCORING: frozenset(
        {
            SeriesStatus.AUTO,
            SeriesStatus.MANUAL,
            SeriesStatus.QUEUED,
            SeriesStatus.FAILED,
            SeriesStatus.RECEIVING,
        }
    ),
    SeriesStatus.AUTO: frozenset({SeriesStatus.RECEIVING}),
    SeriesStatus.MANUAL: frozenset({SeriesStatus.RECEIVING}),
    SeriesStatus.FAILED: frozenset({SeriesStatus.RECEIVING}),
    SeriesStatus.DERIVED: frozenset(),
}


class Route(StrEnum):
    """Where a decision sends a series."""

    AUTO = "auto"  # the segmenter's mask is trusted: SEG back to the PACS
    MANUAL = "manual"  # a radiologist contours it


class DecisionReason(StrEnum):
    """Why a series went where it went (SeriesDecision.reason, Case.reason)."""

    IN_DISTRIBUTION = "in_distribution"  # scored at or below the calibrated series threshold
    ANOMALOUS = "anomalous"  # scored above it
    NO_SCORER = "no_scorer"  # no promoted scorer when the series was claimed
    SCORER_UNAVAILABLE = "scorer_unavailable"  # the pinned scorer's file is missing, corrupt or fails to load
    SCORER_UNCALIBRATED = "scorer_uncalibrated"  # the scorer has no series threshold
    SCORER_UNCALIBRATED_FOR_SEGMENTER = "scorer_uncalibrated_for_segmenter"  # threshold set in another liver
    SEGMENTER_UNAVAILABLE = "segmenter_unavailable"
    NO_SEGMENTER = "no_segmenter"  # accepted, but no segmenter was pinned to segment it
    NO_LIVER_FOUND = "no_liver_found"  # a liver-restricted scorer found no liver to look at
    SEGMENTATION_RISK = "segmentation_risk"  # in distribution, but the fused risk says the segmenter fails here
    LIVER_BEYOND_MASK = "liver_beyond_mask"  # liver-like tissue past or beside an end of the mask (models.liver_ends)
    FAILED = "failed"  # the pipeline could not handle the series (FAILED): still a radiologist's case
    # The gate cannot judge the volume (app.dicom.volume.geometry_doubt), decided before any score:
    SLICE_GAP = "slice_gap"  # a slice is missing: no regular grid
    DUPLICATE_POSITIONS = "duplicate_positions"  # two images at one position along the normal
    MIXED_ORIENTATION = "mixed_orientation"  # no clear primary stack
    # The gate cannot judge the input (models.input_checks): the volume before any model, the liver after segmenting
    NOT_CT_HU = "not_ct_hu"  # the voxel histogram lacks the air, fat or soft-tissue populations of CT in HU
    NO_LIVER_EXPECTED = "no_liver_expected"  # liver found where the coverage holds none (a chest or pelvis series)
    TOO_LITTLE_LIVER = "too_little_liver"  # far less liver found than the coverage holds
    LIVER_CUT_BY_FOV = "liver_cut_by_fov"  # the field of view cuts through the liver (in-plane or at an end)


class CaseStatus(StrEnum):
    """A radiologist's case: open -> claimed (leased) -> submitted | rejected; superseded by a new revision."""

    OPEN = "open"
    CLAIMED = "claimed"  # a reader holds it until lease_until
    SUBMITTED = "submitted"  # a contour is stored
    REJECTED = "rejected"  # closed without a contour, with a reason (e.g. "normal: ...")
    SUPERSEDED = "superseded"  # closed: a late instance re-opened the series; the new revision has its own case


class ModelStatus(StrEnum):
    """A model version: exactly one promoted per kind."""

    CANDIDATE = "candidate"  # registered, never promoted
    PROMOTED = "promoted"
    RETIRED = "retired"  # replaced by a later promotion
    ROLLED_BACK = "rolled_back"  # demoted by a rollback to the version before it


class TrainingJobStatus(StrEnum):
    """queued -> running -> succeeded | failed; queued or running -> cancelled (an ML engineer's call: a
    queued job is never started, a running one stops at its next step check and registers nothing)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryKind(StrEnum):
    """What a delivery sends to the PACS: always a DICOM SEG."""

    AUTO_SEG = "auto_seg"  # the auto-segmentation's SEG, stored when the series went auto
    CONTOUR_SEG = "contour_seg"  # a radiologist's accepted contour, written as a SEG by the delivery task


class DeliveryStatus(StrEnum):
    """A result on its way to the PACS: pending -> sending -> delivered, or back to pending (retry after a
    backoff) until the schedule is spent: failed. An admin may send a failed one again (pending)."""

    PENDING = "pending"  # waiting for its next attempt (next_attempt_at); the relay publishes it when due
    SENDING = "sending"  # a worker holds it until lease_until (fenced by the attempt number)
    DELIVERED = "delivered"  # the destination acknowledged the instance (in ReferencedSOPSequence)
    FAILED = "failed"  # refused for good (a 4xx) or the retry schedule ran out


class InvalidTransition(Conflict):
    pass


def check_transition(source: SeriesStatus, target: SeriesStatus) -> None:
    if target not in TRANSITIONS[source]:
        raise InvalidTransition(f"series cannot move from {source} to {target}")
