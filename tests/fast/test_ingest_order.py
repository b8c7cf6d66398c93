"""A row never exists without its file: the file is in objects/ before its row commits (in process, real
PostgreSQL, the real ingest function).

Killing processes at random cannot hit the window between a commit and a rename; these tests look at the
order itself: a hook at the commit, and a rename that fails.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, UOWTransaction

from app.core import db as core_db
from app.db.tables import Instance
from app.dicom.parse import ParseLimits
from app.services.ingest import StorageUnavailable, ingest_files
from app.services.storage import InstanceStore, ReceivedFile
from testkit.dicom_factory import make_series, uid_of


def _received(store: InstanceStore, blob: bytes, n: int) -> ReceivedFile:
    """A part as a request leaves it: a temporary file with its digest."""
    path = store.tmp_dir / f"order-{n}.part"
    path.write_bytes(blob)
    return ReceivedFile(path=path, sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))


def _ingest(store: InstanceStore, blobs: list[bytes]) -> None:
    files = [_received(store, blob, n) for n, blob in enumerate(blobs)]
    ingest_files(store=store, files=files, expected_study=None, actor="test", limits=ParseLimits())


def _where(store: InstanceStore, row: Instance) -> str:
    """Where the row's file is at this moment: 'objects' (in place, the same bytes) or what is wrong."""
    if not row.storage_path:
        return "no path yet"
    path = store.absolute(row.storage_path)
    if not path.is_relative_to(store.objects_dir):
        return f"outside objects/: {row.storage_path}"
    if not path.is_file():
        return "not there"
    return "objects" if hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256 else "other bytes"


def test_each_file_is_in_objects_when_its_row_commits(db: Session, tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "storage", fsync=False)
    _, blobs = make_series(3)
    factory = core_db._session_factory()
    flushed: list[Instance] = []
    seen: list[str] = []  # per instance row, at each commit after it was flushed

    def on_flush(session: Session, _: UOWTransaction) -> None:
        flushed.extend(o for o in session.new if isinstance(o, Instance))

    def on_commit(session: Session) -> None:
        # Right after the commit, before ingest gets control back: nothing can have moved a file since.
        seen.extend(_where(store, row) for row in flushed)

    event.listen(factory, "after_flush", on_flush)
    event.listen(factory, "after_commit", on_commit)
    try:
        _ingest(store, blobs)
    finally:
        event.remove(factory, "after_flush", on_flush)
        event.remove(factory, "after_commit", on_commit)
    assert len(flushed) == 3, "the hook did not see the instance rows"
    assert seen and set(seen) == {"objects"}, seen
    assert db.scalar(select(func.count()).select_from(Instance).where(Instance.sop_instance_uid.in_(
        [uid_of(b) for b in blobs]))) == 3  # fmt: skip


def test_a_rename_that_fails_leaves_no_row_and_no_file(
    db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = InstanceStore(tmp_path / "storage", fsync=False)
    _, blobs = make_series(3)
    rename, into_objects = os.replace, []

    def second_rename_into_objects_fails(src: str | Path, dst: str | Path) -> None:
        # os.replace itself, wherever ingest calls it from; renames back to tmp/ (the undo) still work
        if Path(dst).is_relative_to(store.objects_dir):
            into_objects.append(dst)
            if len(into_objects) == 2:
                raise OSError(28, "No space left on device")
        rename(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_into_objects_fails)
    with pytest.raises(StorageUnavailable):
        _ingest(store, blobs)
    assert len(into_objects) == 2, "the rename into objects/ was never tried"
    uids = [uid_of(b) for b in blobs]
    assert db.scalar(select(func.count()).select_from(Instance).where(Instance.sop_instance_uid.in_(uids))) == 0
    assert list(store.objects_dir.rglob("*.dcm")) == []  # nothing acknowledged, nothing left behind
    assert list(store.tmp_dir.iterdir()) == []  # the request's temporary files are gone too
