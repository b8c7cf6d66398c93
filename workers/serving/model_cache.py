"""Load registered model versions in a worker, verified by sha256 and cached by version.

Workers pick up a newly promoted version without a restart: the pipeline asks
for the version pinned on the series, and a version not yet cached is loaded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.db.tables import ModelVersion
from app.services.registry import verify_file

_CACHE: OrderedDict[tuple[int, str], tuple[Any, dict[str, Any]]] = OrderedDict()
_LOCK = threading.Lock()
MAX_CACHED = 4


def _load_scorer(path: Path) -> tuple[Any, dict[str, Any]]:
    """Load, then build the fast path at once (with the ``compiled`` engine, the compile runs here, at
    load, before the first series), kept with the cached model (one per version)."""
    from app.core.config import get_settings
    from workers.inference.engine import fast_scorer
    from workers.inference.scorer import load_scorer

    model, metadata = load_scorer(path)
    engine = get_settings().scorer_engine
    if engine != "fp32" and metadata.get("kind") != "patch-scorer":  # patch scorers run eager (bench_scorer)
        fast_scorer(model, engine)
    return model, metadata


def _load_segmenter(path: Path) -> tuple[Any, dict[str, Any]]:
    """Load; with the ``compiled`` engine, compile the network here, before its first series."""
    from app.core.config import get_settings
    from workers.inference.segmenter import load_segmenter
    from workers.inference.segmenter_compile import compile_if_worth

    model, metadata = load_segmenter(path)
    compile_if_worth(model, get_settings().segmenter_engine)
    return model, metadata


def _loader(kind: str) -> Callable[[Path], tuple[Any, dict[str, Any]]]:
    return _load_scorer if kind == "scorer" else _load_segmenter


def load_version(models_dir: Path, row: ModelVersion) -> tuple[Any, dict[str, Any]]:
    """(model, metadata); raises RegistryError if the file is missing or corrupt."""
    key = (row.id, row.sha256)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    verify_file(models_dir, row)
    loaded = _loader(row.kind)(models_dir / row.path)
    with _LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
    return loaded
