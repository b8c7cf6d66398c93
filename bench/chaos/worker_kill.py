"""Worker kill: SIGKILL the worker's prefork child at random moments while series are being scored.

Every series must end AUTO, MANUAL or FAILED (none lost, none stuck), with one decision per (series,
scorer version), and no series scored more than GATEKEEPER_MAX_ATTEMPTS (3) times. A scoring run is
counted when it starts: the worker logs "series S revision R attempt N" right after a claim that is
under the cap. The claim counter (series.attempts) can reach 4: the 4th claim starts no run, it only
records the give-up (FAILED and a manual case).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.client import stow
from bench.chaos.common import FINAL, children, register_model, statuses, wait_final
from testkit.dicom_factory import ct_dataset, make_series, to_bytes
from testkit.servers import Stack
from testkit.tiny_models import train_tiny_scorer, train_tiny_segmenter, with_series_threshold

SHORT = {"series": 8, "kills": 5, "slices": 12, "segmenter": False}
LONG = {"series": 50, "kills": 20, "slices": 24, "segmenter": True}
MAX_ATTEMPTS = 3
RUN_LINE = re.compile(r"workers\.serving\.score: series (\d+) revision (\d+) attempt (\d+)\s*$")


def _air_series(n: int, size: int) -> tuple[str, list[bytes]]:
    """A series of air only (-1024 HU): the tiny scorer finds it far less normal than the ramp series."""
    spec, _ = make_series(1, rows=size, cols=size)
    blobs = []
    for i in range(n):
        ds = ct_dataset(spec, i)
        ds.PixelData = np.zeros((size, size), np.int16).tobytes()
        blobs.append(to_bytes(ds))
    return spec.series_uid, blobs


def _series_score(checkpoint: Path, blobs: list[bytes]) -> float:
    from app.dicom.volume import load_series_volume
    from workers.inference.scorer import load_scorer, score_volume

    with tempfile.TemporaryDirectory() as d:
        paths = [Path(d) / f"{i}.dcm" for i in range(len(blobs))]
        for path, blob in zip(paths, blobs, strict=True):
            path.write_bytes(blob)
        volume = load_series_volume(paths)
    model, metadata = load_scorer(checkpoint)
    g = volume.geometry
    return score_volume(model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, metadata, fast=True).series_score


def _train(workdir: Path, segmenter: bool) -> tuple[Path, Path | None]:
    scorer = train_tiny_scorer(workdir / "scorer")
    return scorer, train_tiny_segmenter(workdir / "segmenter") if segmenter else None


def _promote_models(stack: Stack, workdir: Path, trained: tuple[Path, Path | None], slices: int) -> float:
    """The tiny scorer (and segmenter); with a segmenter, a threshold between a ramp and an air series, so
    both AUTO (segmented) and MANUAL (anomalous) paths run under the kills. The threshold used."""
    scorer, segmenter = trained
    threshold = 1e9  # everything in distribution: AUTO, or MANUAL "no_segmenter" without a segmenter
    if segmenter is not None:
        normal = _series_score(scorer, make_series(slices, rows=128, cols=128)[1])
        odd = _series_score(scorer, _air_series(slices, 128)[1])
        assert odd > normal, f"the tiny scorer does not separate air ({odd:.3f}) from the ramp ({normal:.3f})"
        threshold = (normal + odd) / 2
        register_model(stack, "segmenter", segmenter)
    register_model(stack, "scorer", with_series_threshold(scorer, threshold, workdir / "scorer.pt"))
    return threshold


def _push(stack: Stack, slices: int, anomalous: bool) -> str:
    with stack.client("pacs") as c:
        if anomalous:
            uid, blobs = _air_series(slices, 128)
        else:
            spec, blobs = make_series(slices, rows=128, cols=128)
            uid = spec.series_uid
        assert stow(c, blobs).status_code == 200
        assert c.post(f"/series/{uid}/complete").status_code == 200
    return uid


def _kill_during_scoring(stack: Stack, uids: list[str], target: int, rng: random.Random, more) -> dict:  # type: ignore[no-untyped-def]
    """Watch for scoring runs (a series in 'scoring' under a new attempt number) and SIGKILL the worker's
    child during some of them, until ``target`` kills landed while a run was in progress. The first series
    seen is killed in every run, so the attempt cap is met for real; the other kills are spread at random.
    If every series finished first, ``more()`` pushes another one (appended to uids)."""
    assert stack.service.worker is not None
    seen: set[tuple[int, int]] = set()
    kills = lapsed = hammered_kills = 0
    hammered = last_child = None
    deadline = time.monotonic() + 120 + 20 * target

    def hammered_done() -> bool:  # its redeliveries queue behind the others: its last run may come late
        status = stack.scalar("SELECT status FROM series WHERE id = :i", i=hammered) if hammered else None
        return hammered_kills >= MAX_ATTEMPTS or status in FINAL

    while kills < target or not hammered_done():
        assert time.monotonic() < deadline, f"only {kills} of {target} kills landed in time"
        fresh = [r for r in stack.rows("SELECT id, attempts FROM series WHERE status = 'scoring'") if r not in seen]
        unfinished = sum(s not in FINAL for s in statuses(stack, uids).values())
        if not fresh:
            if not unfinished:
                uids.append(more())
            time.sleep(0.01)
            continue
        run = fresh[0]
        seen.add(run)  # type: ignore[arg-type]
        pids = children(stack.service.worker.pid)
        cold, last_child = pids != last_child, pids  # a fresh child loads torch and the models first: slower
        hammered = hammered or run[0]
        if run[0] == hammered:
            time.sleep(0.02)  # at once: its run must not finish first
        # spread the other kills over the whole batch: more often when few series are left
        elif kills >= target or rng.random() > min(0.9, 1.5 * (target - kills) / max(1, unfinished)):
            continue
        else:
            time.sleep(rng.uniform(0.05, 2.0) if cold else rng.uniform(0.01, 0.12))
        if run not in set(stack.rows("SELECT id, attempts FROM series WHERE status = 'scoring'")):
            lapsed += 1  # that run finished first
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kills += bool(pids)
        hammered_kills += bool(pids) and run[0] == hammered
    return {"kills": kills, "kills_lapsed": lapsed, "hammered": (hammered, hammered_kills)}


def _runs_started(log: Path) -> tuple[Counter[tuple[int, int]], int]:
    """Scoring runs per (series id, revision), and the deliveries that found nothing to do ("skipped":
    a message sent again by the reconciler, or redelivered, for a series already claimed or finished)."""
    runs: Counter[tuple[int, int]] = Counter()
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        m = RUN_LINE.search(line)
        if m:
            runs[(int(m[1]), int(m[2]))] += 1
    return runs, text.count("'skipped'")


def run(make_stack, workdir: Path, *, series: int, kills: int, slices: int, segmenter: bool, seed: int = 3) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    with ThreadPoolExecutor(1) as pool:  # train while the stack starts
        trained = pool.submit(_train, workdir, segmenter)
        stack: Stack = make_stack(GATEKEEPER_MODELS_DIR=str(workdir / "registry"), GATEKEEPER_RECONCILE_AFTER_S="2")
        trained_models = trained.result()
    try:
        threshold = _promote_models(stack, workdir, trained_models, slices)
        # with a segmenter, a third of the series look anomalous (MANUAL) and the rest are segmented (AUTO)
        uids = [_push(stack, slices, segmenter and i % 3 == 2) for i in range(series)]
        figures = _kill_during_scoring(stack, uids, kills, random.Random(seed), lambda: _push(stack, slices, False))
        settle_s = wait_final(stack, uids, timeout_s=120 + 5 * series)
        final = statuses(stack, uids)
        runs, skipped = _runs_started(stack.service.log_dir / "worker.log")
        ids = dict(stack.rows("SELECT id, series_uid FROM series WHERE series_uid = ANY(:u)", u=uids))
        attempts = dict(stack.rows("SELECT id, attempts FROM series WHERE series_uid = ANY(:u)", u=uids))
        counts = dict(stack.rows("SELECT series_uid, instance_count FROM series WHERE series_uid = ANY(:u)", u=uids))
        duplicate_scores = stack.rows(
            "SELECT series_id, revision, scorer_version_id FROM series_decisions GROUP BY 1, 2, 3 HAVING count(*) > 1"
        )
        decided = dict(stack.rows("SELECT series_id, count(*) FROM series_decisions GROUP BY 1"))
        segmented = dict(stack.rows("SELECT series_id, count(*) FROM segmentations GROUP BY 1"))
        failed_why = Counter(r[0] for r in stack.rows("SELECT last_error FROM series WHERE status = 'failed'"))
        retried_why = Counter(r[0] for r in stack.rows("SELECT detail->>'reason' FROM audit_events "
                                                        "WHERE action = 'series.retry'"))  # fmt: skip
    finally:
        stack.service.stop()

    per_series = [n for (sid, _rev), n in runs.items() if sid in ids] or [0]
    hammered, hammered_kills = figures.pop("hammered")
    if hammered_kills >= MAX_ATTEMPTS:  # every run it had was killed: it must give up, not run a 4th time
        assert final[ids[hammered]] == "failed", f"a series killed in all its runs ended {final[ids[hammered]]}"
        assert runs[(hammered, 0)] == MAX_ATTEMPTS and attempts[hammered] == MAX_ATTEMPTS + 1
    lost = [u for u in uids if final.get(u) not in FINAL or counts.get(u) != slices]
    assert not lost, f"{len(lost)} series lost or stuck: {[final.get(u) for u in lost]}"
    assert figures["kills"] >= kills, f"only {figures['kills']} of {kills} kills landed during a scoring run"
    assert max(per_series) <= MAX_ATTEMPTS, f"a series was scored {max(per_series)} times (cap {MAX_ATTEMPTS})"
    assert max(attempts.values()) <= MAX_ATTEMPTS + 1, "a claim past the give-up claim"
    assert not duplicate_scores, f"more than one score for {duplicate_scores}"
    by_status = Counter(final.values())
    for sid, uid in ids.items():
        if final[uid] in ("auto", "manual"):
            assert decided.get(sid) == 1, f"a {final[uid]} series has {decided.get(sid, 0)} decisions"
        if final[uid] == "auto":
            assert segmented.get(sid) == 1, "an AUTO series without exactly one segmentation"
    return {
        "series": len(uids),
        "slices_per_series": slices,
        "threshold": round(threshold, 4),
        **figures,
        "runs": sum(runs.values()),
        "reruns": sum(runs.values()) - len(runs),  # fewer than kills when a kill lands as a run ends
        "deliveries_skipped": skipped,
        "claims": sum(attempts.values()),
        "series_retried": sum(n > 1 for n in per_series),
        "max_runs_per_series": max(per_series),
        "max_claims_per_series": max(attempts.values()),
        "capped_series": {
            "kills": hammered_kills,
            "runs": runs[(hammered, 0)],
            "claims": attempts[hammered],
            "status": final[ids[hammered]],
        },
        "auto": by_status["auto"],
        "manual": by_status["manual"],
        "failed": by_status["failed"],
        "failed_because": dict(failed_why),
        "retries_after_an_error": dict(retried_why),  # not kills: exceptions inside a run (each uses an attempt)
        "duplicate_scores": len(duplicate_scores),
        "files_tried": len(uids) * slices,
        "lost": len(lost),
        "settle_s": round(settle_s, 1),
        "seconds": round(time.monotonic() - t0, 1),
    }
