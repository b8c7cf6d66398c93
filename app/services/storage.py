"""Durable instance files: write to a temporary file, fsync, rename, fsync the directory.

Each stored file gets its own name (sha256 plus its owner's random id), so two
requests racing with the same bytes never share a file and a failed commit can
delete its own file without touching anyone else's.

Ownership: a request that receives files is an ``UploadOwner``; it holds an
exclusive flock on ``tmp/<id>.owner`` from before its first temporary file until
its commit is over, and every file it writes carries its id (``tmp/<id>-<n>.part``,
then ``objects/.../<sha256>-<id>.dcm``). The orphan sweep deletes nothing of an
owner whose lock is held, in any process; a crashed process's locks die with it,
so its files become orphans the sweep may take.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_SYNC_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ReceivedFile:
    """A part written to the temporary area, with its digest."""

    path: Path
    sha256: str
    size: int
    owner: str = ""  # the UploadOwner's id; "" for a file written outside one (protected by its age only)


class TempWriter:
    """Stream one part to disk while hashing it; never holds the part in memory."""

    def __init__(self, path: Path, max_bytes: int, owner: str = "") -> None:
        self.path = path
        self.owner = owner
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._fp = path.open("wb")

    def write(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise OverflowError("part exceeds the instance size limit")
        self._hash.update(chunk)
        self._fp.write(chunk)

    def finish(self, fsync: bool) -> ReceivedFile:
        self._fp.flush()
        if fsync:
            os.fsync(self._fp.fileno())
        self._fp.close()
        return ReceivedFile(path=self.path, sha256=self._hash.hexdigest(), size=self.size, owner=self.owner)

    def abort(self) -> None:
        self._fp.close()
        self.path.unlink(missing_ok=True)


class UploadOwner:
    """One request's claim on its temporary files and on its objects until their commit (see the module doc)."""

    def __init__(self, tmp_dir: Path) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.tmp_dir = tmp_dir
        self._lock_path = tmp_dir / f"{self.id}.owner"
        self._fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # blocks only while a sweep is looking at this new file
        self._count = itertools.count()

    def new_temp(self, max_bytes: int) -> TempWriter:
        return TempWriter(self.tmp_dir / f"{self.id}-{next(self._count)}.part", max_bytes, owner=self.id)

    def release(self) -> None:
        """After the commit (or its failure): the files are referenced by rows or removed by the request."""
        self._lock_path.unlink(missing_ok=True)
        os.close(self._fd)

    def __enter__(self) -> UploadOwner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _held_by_someone(path: Path) -> bool:
    """Whether another open file description holds the flock on path (a live UploadOwner)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our lock at once


def _owner_of(path: Path) -> str:
    if path.suffix == ".owner":
        return path.stem
    if path.suffix == ".part":
        return path.stem.split("-", 1)[0]
    return path.stem.rsplit("-", 1)[-1]  # objects: <sha256>-<owner id>.dcm


class InstanceStore:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.tmp_dir = root / "tmp"
        self.objects_dir = root / "objects"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._new_dirs: dict[Path, set[Path]] = {}
        self.objects_dir.mkdir(parents=True, exist_ok=True)

    def new_temp(self, max_bytes: int) -> TempWriter:
        """A temporary file outside any UploadOwner (a file this service writes itself)."""
        return TempWriter(self.tmp_dir / f"{uuid.uuid4().hex}.part", max_bytes)

    def owner(self) -> UploadOwner:
        """Claim the files of one upload until its commit is over (``with store.owner() as owner:``)."""
        return UploadOwner(self.tmp_dir)

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def promote(self, received: ReceivedFile, group: str = "") -> str:
        """Move a fsynced temporary file to its final place; return the relative path.

        Files of one group (a series) share a folder, so one directory fsync
        covers a whole batch; the group name is hashed (no UID on disk).
        """
        key = hashlib.sha256(group.encode()).hexdigest() if group else received.sha256
        folder = self.objects_dir / key[:2] / key[2:18]
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            with self._lock:  # its parents gained entries too: sync them until that is done once
                self._new_dirs[folder] = {folder.parent, folder.parent.parent}
        suffix = received.owner or uuid.uuid4().hex[:8]
        relative = f"{folder.relative_to(self.root).as_posix()}/{received.sha256}-{suffix}.dcm"
        os.replace(received.path, self.root / relative)
        # A rename keeps the old mtime: make a file written outside an owner look as young as it is.
        os.utime(self.root / relative)
        return relative

    def sync_files(self, paths: Iterable[Path]) -> None:
        """fsync files in parallel: the disk takes concurrent flushes far faster than one after another."""
        if self.fsync:
            list(_SYNC_POOL.map(_fsync_path, list(paths)))

    def demote(self, relative: str, received: ReceivedFile) -> None:
        """Undo ``promote`` when the row did not commit."""
        os.replace(self.root / relative, received.path)

    def sync_dirs(self, relatives: Iterable[str]) -> None:
        """fsync each directory that gained an entry, so the renames survive a power cut."""
        if not self.fsync:
            return
        own = {(self.root / r).parent for r in relatives}
        with self._lock:
            created = {f: self._new_dirs[f] for f in own if f in self._new_dirs}
        folders = own.union(*created.values())
        list(_SYNC_POOL.map(_fsync_path, folders))
        with self._lock:  # durable now: later batches need not sync the parents again
            for f in created:
                self._new_dirs.pop(f, None)

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def sweep(self, referenced: set[str], min_age_s: float, recheck: Callable[[list[str]], set[str]]) -> list[str]:
        """Delete temporary files and unreferenced objects older than min_age_s that no live owner holds.

        ``referenced`` is a snapshot of the stored paths; ``recheck(paths)`` returns those among paths a row
        references now. It runs after the owners were found dead: an owner commits before it lets go of its
        lock, so a row it committed is visible then, and a file it still holds is never a candidate.
        """
        cutoff = time.time() - min_age_s
        files = list(self.tmp_dir.iterdir()) + list(self.objects_dir.rglob("*.dcm"))
        live = {p.stem for p in self.tmp_dir.glob("*.owner") if _held_by_someone(p)}
        candidates: dict[str, Path] = {}
        for path in files:
            relative = path.relative_to(self.root).as_posix()
            if relative in referenced or _owner_of(path) in live:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    candidates[relative] = path
            except FileNotFoundError:
                continue
        removed: list[str] = []
        names = sorted(candidates)
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            now_referenced = recheck(batch)
            for relative in batch:
                if relative not in now_referenced:
                    candidates[relative].unlink(missing_ok=True)
                    removed.append(relative)
        return removed


def dataset_sha256(path: Path) -> str:
    """sha256 of a Part 10 file's data set: the bytes after its preamble and file meta group (0002), which
    name the sender (implementation UID, source AE title) rather than the instance."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    digest = hashlib.sha256()
    with path.open("rb") as fp:
        read_preamble(fp, False)
        _read_file_meta_info(fp)
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
