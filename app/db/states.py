"""Series states and the transitions allowed between them.

Every status change goes through a compare-and-set UPDATE (``app.db.series``),
so two processes racing on one series cannot both move it.
"""

from __future__ import annotations

from enum import StrEnum


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


class InvalidTransition(ValueError):
    pass


def check_transition(source: SeriesStatus, target: SeriesStatus) -> None:
    if target not in TRANSITIONS[source]:
        raise InvalidTransition(f"series cannot move from {source} to {target}")
