"""Store received instances exactly once.

Order of work for one batch (one STOW request, or one peer push):
parse every file -> look up SOP Instance UIDs -> move new files to their final
place after fsyncing them (in parallel) and fsync their directories -> insert rows in one
transaction -> acknowledge. A file whose row did not commit is deleted; a row
never exists without its file. The same bytes sent again are a success with no
new row, and so is the same data set under another file meta (the same instance by STOW-RS and by
C-STORE); another data set under a stored SOP Instance UID is refused and audited, and
so is an instance that breaks the identity rules (app/services/identity.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.db import ingest as ingest_sql
from app.db.tables import Instance
from app.dicom.parse import InstanceHeader, ParseLimits, parse_instance
from app.services import audit, identity, labeling
from app.services.failures import FailureReason, InvalidInstance
from app.services.storage import InstanceStore, ReceivedFile, dataset_sha256

log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """The database or the disk cannot take writes now; the client should retry (503)."""


class _IdentityRace(Exception):
    """Another process stored a study or series that conflicts with ours between our check and our insert."""


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


def _same_data_set(session: Session, store: InstanceStore, item: _Accepted, first: dict[str, Path]) -> bool:
    """Whether a file whose bytes differ from the stored copy's holds the same data set: only the file meta
    differs (the sender's implementation UID or AE title: the same instance by STOW-RS and by C-STORE,
    whose receiver rebuilds the meta). Read only for such a mismatch, which is rare."""
    uid = item.header.sop_instance_uid
    known = first.get(uid)
    if known is None:
        relative = ingest_sql.stored_path(session, uid)
        if relative is None:
            return False
        known = store.absolute(relative)
    try:
        return dataset_sha256(known) == dataset_sha256(item.received.path)
    except Exception:  # noqa: BLE001 - either unreadable as Part 10: not the same data set
        return False


def _classify(session: Session, store: InstanceStore, accepted: list[_Accepted], actor: str) -> list[_Accepted]:
    """Mark duplicates and conflicts; return the items that need a new row."""
    digests = ingest_sql.stored_digests(session, [a.header.sop_instance_uid for a in accepted])
    first: dict[str, Path] = {}  # the batch's own first copy of a new UID
    new: list[_Accepted] = []
    for item in accepted:
        uid, sha = item.header.sop_instance_uid, item.received.sha256
        known = digests.get(uid)
        if known is None:
            digests[uid] = sha  # a second copy in the same batch is a duplicate of the first
            first[uid] = item.received.path
            new.append(item)
        elif known == sha or _same_data_set(session, store, item, first):
            item.outcome.duplicate = True
        else:
            item.outcome.reason = FailureReason.DUPLICATE_CONFLICT
            item.outcome.message = "SOP Instance UID already stored with different content; not overwritten"
            audit.record(
                session, actor=actor, action="instance.conflict", entity_type="instance",
                entity_id=None, stored_sha256=known, refused_sha256=sha,
            )  # fmt: skip
    return _check_identities(session, new, actor)


def _known_identities(
    session: Session, headers: list[InstanceHeader]
) -> tuple[dict[str, identity.StudyIdentity], dict[str, identity.SeriesIdentity]]:
    studies = ingest_sql.study_identities(session, sorted({h.study_uid for h in headers}))
    series = ingest_sql.series_identities(session, sorted({h.series_uid for h in headers}))
    return (
        {uid: identity.StudyIdentity(r.patient_id, r.issuer_of_patient_id, r.id) for uid, r in studies.items()},
        {uid: identity.SeriesIdentity(r.study_uid, r.modality, r.frame_of_reference_uid, r.id)
         for uid, r in series.items()},
    )  # fmt: skip


def _check_identities(session: Session, items: list[_Accepted], actor: str) -> list[_Accepted]:
    """Refuse (and audit) each instance that breaks an identity rule; return the others."""
    studies, series = _known_identities(session, [item.header for item in items])
    kept: list[_Accepted] = []
    for item in items:
        conflict = identity.check(item.header, studies, series)
        if conflict is None:
            kept.append(item)
            continue
        item.outcome.reason, item.outcome.message = conflict.reason, conflict.message
        # No PHI and no UID in the detail: the attribute's name, the row ids and the refused file's digest.
        audit.record(
            session, actor=actor, action="instance.identity_conflict", entity_type=conflict.scope,
            entity_id=conflict.row_id, attribute=conflict.attribute, refused_sha256=item.received.sha256,
        )  # fmt: skip
    return kept


def _recheck(session: Session, header: InstanceHeader) -> None:
    """After the upserts: the rows we join must still agree (another process may have created them)."""
    studies, series = _known_identities(session, [header])
    known_study, known_series = studies[header.study_uid], series[header.series_uid]
    if identity.study_conflict(known_study, identity.study_of(header)) or identity.series_conflict(
        known_series, identity.series_of(header)
    ):
        raise _IdentityRace


def _insert_rows(session: Session, new: list[_Accepted], actor: str) -> None:
    now = datetime.now(UTC)
    by_series: dict[str, list[_Accepted]] = defaultdict(list)
    for item in new:
        by_series[item.header.series_uid].append(item)
    for series_uid, items in by_series.items():
        h = items[0].header
        study_id = ingest_sql.ensure_study(
            session, study_uid=h.study_uid,
            values={"patient_id": h.patient_id, "issuer_of_patient_id": h.issuer_of_patient_id,
                    "study_date": h.study_date, "accession_number": h.accession_number,
                    "attributes": h.study_attributes},
        )  # fmt: skip
        series_id = ingest_sql.ensure_series(
            session, series_uid=series_uid, study_id=study_id,
            values={"modality": h.modality, "frame_of_reference_uid": h.frame_of_reference_uid,
                    "attributes": h.series_attributes},
        )  # fmt: skip
        _recheck(session, h)
        previous, revision = ingest_sql.record_arrivals(session, series_id=series_id, count=len(items), now=now)
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
        new = _classify(session, store, accepted, actor)
        # Only new files need to reach the disk; duplicates and refusals are deleted.
        store.sync_files(item.received.path for item in new)
        try:
            # Inside the try: a rename that fails half-way through the batch puts the earlier ones back.
            for item in new:
                item.relative = store.promote(item.received, group=item.header.series_uid)
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
    except (IntegrityError, DataError, _IdentityRace):
        # Another process stored one of these SOP UIDs (or created the study or
        # series) between our lookup and our insert: go again one by one, so the
        # race resolves into duplicates or conflicts per instance (the lookup of
        # the retry sees the other's rows and refuses a conflicting one). A value the
        # database refuses (DataError) fails its own instance, never the batch.
        for item in accepted:
            item.outcome.duplicate = item.outcome.stored = False
            try:
                _commit_guarded(store, [item], actor)
            except DataError:
                log.warning("the database refused a value of one instance")  # never the statement's parameters
                item.outcome.reason = FailureReason.PROCESSING_FAILURE
                item.outcome.message = "the database refused a value of this instance"


def _commit_guarded(store: InstanceStore, accepted: list[_Accepted], actor: str) -> None:
    try:
        _commit(store, accepted, actor)
    except (IntegrityError, DataError, _IdentityRace):
        raise
    except OperationalError as exc:
        log.warning("database unavailable during ingest: %s", type(exc).__name__)
        raise StorageUnavailable("database unavailable") from exc
    except OSError as exc:
        log.error("storage error during ingest: %s", type(exc).__name__)
        raise StorageUnavailable("storage unavailable") from exc
