"""Series states and the transitions allowed between them.

Every status change goes through ``app.db.series.transition`` as a compare-and-set
UPDATE, so two processes racing on one series cannot both move it.
"""

from __future__ import annotations

from enum import StrEnum


class SeriesStatus(StrEnum):
    RECEIVING = "receiving"  # instances arriving; not yet stable
    QUEUED = "queued"  # complete; a scoring job is in the outbox or the broker
    SCORING = "scoring"  # a worker holds it (fenced by the attempt number)
    SCORED = "scored"  # volume loaded and scored; geometry recorded
    FAILED = "failed"  # gave up after the attempt cap or on an unreadable volume


ACTIVE = {SeriesStatus.QUEUED, SeriesStatus.SCORING}
FINISHED = {SeriesStatus.SCORED, SeriesStatus.FAILED}

TRANSITIONS: dict[SeriesStatus, frozenset[SeriesStatus]] = {
    SeriesStatus.RECEIVING: frozenset({SeriesStatus.QUEUED}),
    SeriesStatus.QUEUED: frozenset({SeriesStatus.SCORING, SeriesStatus.FAILED, SeriesStatus.RECEIVING}),
    SeriesStatus.SCORING: frozenset(
        {SeriesStatus.SCORED, SeriesStatus.QUEUED, SeriesStatus.FAILED, SeriesStatus.RECEIVING}
    ),
    SeriesStatus.SCORED: frozenset({SeriesStatus.RECEIVING}),
    SeriesStatus.FAILED: frozenset({SeriesStatus.RECEIVING}),
}


class InvalidTransition(ValueError):
    pass


def check_transition(source: SeriesStatus, target: SeriesStatus) -> None:
    if target not in TRANSITIONS[source]:
        raise InvalidTransition(f"series cannot move from {source} to {target}")


def sources_of(target: SeriesStatus) -> set[SeriesStatus]:
    """Every state from which ``target`` may be reached."""
    return {s for s, targets in TRANSITIONS.items() if target in targets}
