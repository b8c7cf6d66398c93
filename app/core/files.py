"""Atomic writes of .npz files that several processes may write at once.

A fixed temporary name (``.name.tmp``) is shared by every writer of the same target: two leave-one-out folds
preparing the same training case at the same moment wrote one temporary file, the first rename took it and
the second failed (``FileNotFoundError``, 2026-12-04). Each writer gets its own temporary file in the target's
folder (a random name, created exclusively with the usual permissions, unlike ``mkstemp``'s 0600), then renames
it over the target: readers see the old file or a whole new one, and concurrent writers of equal content simply
replace each other.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> None:
    """Write ``arrays`` to ``path`` (.npz) through a temporary file of this writer's own; the folder is made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("xb") as fp:
            (np.savez_compressed if compressed else np.savez)(fp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
