"""Durable instance files: write to a temporary file, fsync, rename, fsync the directory.

Each stored file gets its own name (sha256 plus a random suffix), so two
requests racing with the same bytes never share a file and a failed commit can
delete its own file without touching anyone else's.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterable
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


class TempWriter:
    """Stream one part to disk while hashing it; never holds the part in memory."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
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
        return ReceivedFile(path=self.path, sha256=self._hash.hexdigest(), size=self.size)

    def abort(self) -> None:
        self._fp.close()
        self.path.unlink(missing_ok=True)


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
        return TempWriter(self.tmp_dir / f"{uuid.uuid4().hex}.part", max_bytes)

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
        relative = f"{folder.relative_to(self.root).as_posix()}/{received.sha256}-{uuid.uuid4().hex[:8]}.dcm"
        os.replace(received.path, self.root / relative)
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

    def sweep(self, referenced: set[str], min_age_s: float) -> list[str]:
        """Delete temporary files and unreferenced objects older than min_age_s."""
        cutoff = time.time() - min_age_s
        removed: list[str] = []
        for path in list(self.tmp_dir.iterdir()) + list(self.objects_dir.rglob("*.dcm")):
            relative = path.relative_to(self.root).as_posix()
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old and relative not in referenced:
                path.unlink(missing_ok=True)
                removed.append(relative)
        return removed


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
