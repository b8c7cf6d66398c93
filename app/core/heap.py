"""The API's heap and the cyclic garbage collector: keep full collections short.

An API process holds about 140,000 objects once FastAPI, SQLAlchemy, pydicom, highdicom and Celery's client are
imported. A full (generation 2) collection walks all of them with the GIL held; on this 2-core machine one took
132 ms, and every request waited behind it (the ``/healthz`` stalls of issue #15 during large pushes, which
allocate enough to trigger one). What was imported and built at start-up lives as long as the process, so it is
moved out of the collector's reach (``gc.freeze``, as the CPython documentation suggests for servers); what a
request allocates after that is still collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from later collections; how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
