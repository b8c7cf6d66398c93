"""Store received instances exactly once.

Order of work for one batch (one STOW request, or one peer push):
parse every file -> look up SOP Instance UIDs -> move new files to their final
place after fsyncing them (in parallel) and fsync their directories -> insert rows in one
transaction -> acknowledge. A file whose row did not commit is deleted; a row
never exists without its file. The same bytes sent again are a success with no
new row; other bytes under a stored SOP Instance UID are refused and audited.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.db import ingest as q
from app.db.tables import Instance
from app.services import audit, labeling
from app.services.dicom_parse import InstanceHeader, ParseLimits, parse_instance
from app.services.failures import FailureReason, InvalidInstance
from app.services.storage import InstanceStore, ReceivedFile

log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """The database or the disk cannot take writes now; the client should retry (503)."""


@dataclass
class Outcome:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    stored: bool = False
    duplicate: bool = False
    reason: FailureReason | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class _Accepted:
    header: InstanceHeader
    received: ReceivedFile
    outcome: Outcome
    relative: str = ""


def _failure(header: InstanceHeader | None, reason: FailureReason, message: str) -> Outcome:
    return Outcome(
        sop_class_uid=header.sop_class_uid if header else None,
        sop_instance_uid=header.sop_instance_uid if header else None,
        reason=reason,
        message=message,
    )


def _parse_all(
    files: list[ReceivedFile], expected_study: str | None, limits: ParseLimits
) -> tuple[list[Outcome], list[_Accepted]]:
    outcomes: list[Outcome] = []
    accepted: list[_Accepted] = []
    for received in files:
        try:
            header = parse_instance(received.path, limits)
        except InvalidInstance as exc:
            outcomes.append(_failure(None, exc.reason, exc.message))
            continue
        if expected_study and header.study_uid != expected_study:
            outcomes.append(_failure(header, FailureReason.STUDY_MISMATCH, "StudyInstanceUID differs from the URL"))
            continue
        outcome = Outcome(header.sop_class_uid, header.sop_instance_uid, header.study_uid, header.series_uid)
        outcomes.append(outcome)
        accepted.append(_Accepted(header, received, outcome))
    return outcomes, accepted


def _classify(session: Session, accepted: list[_Accepted], actor: str) -> list[_Accepted]:
    """Mark duplicates and conflicts; return the items that need a new row."""
    digests = q.stored_digests(session, [a.header.sop_instance_uid for a in accepted])
    new: list[_Accepted] = []
    for item in accepted:
        uid, sha = item.header.sop_instance_uid, item.received.sha256
        known = digests.get(uid)
        if known is None:
            digests[uid] = sha  # a second copy in the same batch is a duplicate of the first
            new.append(item)
        elif known == sha:
            item.outcome.duplicate = True
        else:
            item.outcome.reason = FailureReason.DUPLICATE_CONFLICT
            item.outcome.message = "SOP Instance UID already stored with different content; not overwritten"
            audit.record(
                session, actor=actor, action="instance.conflict", entity_type="instance",
                entity_id=None, stored_sha256=known, refused_sha256=sha,
            )  # fmt: skip
    return new


def _insert_rows(session: Session, new: list[_Accepted], actor: str) -> None:
    now = datetime.now(UTC)
    by_series: dict[str, list[_Accepted]] = defaultdict(list)
    for item in new:
        by_series[item.header.series_uid].append(item)
    for series_uid, items in by_series.items():
        h = items[0].header
        study_id = q.ensure_study(
            session, study_uid=h.study_uid,
            values={"patient_id": h.patient_id, "study_date": h.study_date,
                    "accession_number": h.accession_number, "attributes": h.study_attributes},
        )  # fmt: skip
        series_id = q.ensure_series(
            session, series_uid=series_uid, study_id=study_id,
            values={"modality": h.modality, "attributes": h.series_attributes},
        )  # fmt: skip
        previous, revision = q.record_arrivals(session, series_id=series_id, count=len(items), now=now)
        for item in items:
            session.add(
                Instance(
                    series_id=series_id, sop_instance_uid=item.header.sop_instance_uid,
                    sop_class_uid=item.header.sop_class_uid, transfer_syntax_uid=item.header.transfer_syntax_uid,
                    instance_number=item.header.instance_number, sha256=item.received.sha256,
                    size_bytes=item.received.size, storage_path=item.relative, received_at=now,
                )
            )  # fmt: skip
            item.outcome.stored = True
        audit.record(session, actor=actor, action="instances.stored", entity_type="series",
                     entity_id=series_id, count=len(items), revision=revision)  # fmt: skip
        if previous != "receiving":
            labeling.supersede_cases(session=session, series_id=series_id, revision=revision, actor=actor)
            audit.record(session, actor=actor, action="series.reopened", entity_type="series",
                         entity_id=series_id, previous_status=previous, revision=revision)  # fmt: skip


def _commit(store: InstanceStore, accepted: list[_Accepted], actor: str) -> None:
    with session_scope() as session:
        new = _classify(session, accepted, actor)
        # Only new files need to reach the disk; duplicates and refusals are deleted.
        store.sync_files(item.received.path for item in new)
        for item in new:
            item.relative = store.promote(item.received, group=item.header.series_uid)
        try:
            store.sync_dirs(item.relative for item in new)
            _insert_rows(session, new, actor)
            session.commit()
        except BaseException:
            # Nothing was acknowledged: put the files back where the request's
            # clean-up (or a one-by-one retry) finds them.
            for item in new:
                if item.relative:
                    store.demote(item.relative, item.received)
                    item.relative = ""
                item.outcome.stored = False
            raise


def ingest_files(
    *, store: InstanceStore, files: list[ReceivedFile], expected_study: str | None, actor: str, limits: ParseLimits
) -> list[Outcome]:
    """Parse, deduplicate and durably store a batch; one Outcome per file, in order."""
    try:
        outcomes, accepted = _parse_all(files, expected_study, limits)
        if accepted:
            _commit_with_retry(store, accepted, actor)
        return outcomes
    finally:
        for received in files:
            received.path.unlink(missing_ok=True)  # temporary files never outlive the request


def _commit_with_retry(store: InstanceStore, accepted: list[_Accepted], actor: str) -> None:
    try:
        _commit_guarded(store, accepted, actor)
    except IntegrityError:
        # Another process stored one of these SOP UIDs (or created the study or
        # series) between our lookup and our insert: go again one by one, so
        # the race resolves into duplicates or conflicts per instance.
        for item in accepted:
            item.outcome.duplicate = item.outcome.stored = False
            _commit_guarded(store, [item], actor)


def _commit_guarded(store: InstanceStore, accepted: list[_Accepted], actor: str) -> None:
    try:
        _commit(store, accepted, actor)
    except IntegrityError:
        raise
    except OperationalError as exc:
        log.warning("database unavailable during ingest: %s", type(exc).__name__)
        raise StorageUnavailable("database unavailable") from exc
    except OSError as exc:
        log.error("storage error during ingest: %s", type(exc).__name__)
        raise StorageUnavailable("storage unavailable") from exc
