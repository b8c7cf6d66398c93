"""Time from series completion to a recorded decision (goal: median <= 2 s), and to the end of routing.

    .venv/bin/python bench/bench_decision.py --series 7

The real stack: API (uvicorn) + one Celery worker (prefork, 1 child) on PostgreSQL
and Redis, a scorer and a segmenter of the production sizes registered and
promoted (randomly initialised: weights do not change the time; their
calibration is forced so every series goes to auto-segmentation, the longer
path). Each series is the real ``ircadb-01`` (129 slices; the 20-slice sample
without the data directory) under fresh UIDs, pushed by STOW-RS, then completed
by ``POST /series/{uid}/complete``. Measured from the database's own clocks:
``series.completed_at`` -> ``series_decisions.created_at`` (decision) and ->
``segmentations.created_at`` (SEG and NIfTI written). Series are sent one after
another, each after the previous one finished, so the worker is warm but idle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import torch
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.client import read_files, stow  # noqa: E402
from bench.bench_ingest import drop_database, fresh_uids, start_service  # noqa: E402
from testkit.servers import register_model  # noqa: E402

DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))
SAMPLE = ROOT / "samples" / "totalseg-example"


def production_sized_models(tmp: Path, region: str) -> tuple[Path, Path]:
    """Untrained checkpoints in the exact format and size the worker loads.

    ``region`` "view": the 64 px body-view f-AnoGAN (width 16) scoring its whole view; "liver": the liver-view
    autoencoder of reports/scorer-liver (128 px, width 16, top 1 %) scoring inside the segmenter's liver, so
    the worker segments before it decides."""
    from app.services.storage import file_sha256
    from models.scorer import ScorerConfig
    from models.transforms import liver_view
    from workers.inference.liver_roi import ROI_KEY, LiverRoi
    from workers.training.scorer_data import CaseSpec, ScorerDataConfig
    from workers.training.scorer_training import ScorerTrainConfig, train_scorer
    from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig
    from workers.training.segmenter_training import SegmenterTrainConfig, train_segmenter

    masked = MaskedCase("sample", "ct-dicom", "masks/liver-on-ct-dicom.nii.gz")
    seg_data = SegmenterDataConfig(data_dir=str(SAMPLE), cache_dir=str(tmp / "seg-cache"), train=(masked,),
                                   heldout=masked)  # fmt: skip
    seg_config = SegmenterTrainConfig(data=seg_data, steps=1, batch_size=2)  # one step: the format, not a model
    segmenter = train_segmenter(seg_config, tmp / "segmenter", resume=False)
    case = CaseSpec("sample", "ct-dicom")
    data = ScorerDataConfig(data_dir=str(SAMPLE), cache_dir=str(tmp / "cache"), train=(case,), heldout=(case,))
    config = ScorerTrainConfig(model=ScorerConfig(base_width=16), data=data, gan_steps=0, encoder_steps=0)
    if region == "liver":
        model = ScorerConfig(image_size=128, base_width=16, conditional=False, top_k_fraction=0.01)
        config = ScorerTrainConfig(model=model, data=replace(data, preprocess=liver_view()), detector="autoencoder",
                                   gan_steps=0, encoder_steps=0)  # fmt: skip
    scorer = train_scorer(config, tmp / "scorer", resume=False)
    ckpt = torch.load(scorer, weights_only=False)
    ckpt["metadata"]["calibration"]["series_threshold"] = 1e9  # every series takes the auto path
    if region == "liver":
        ckpt["metadata"][ROI_KEY] = LiverRoi(3.0, file_sha256(segmenter)).as_json()
    torch.save(ckpt, scorer)
    return scorer, segmenter


def fused_models(tmp: Path, segmenter: Path) -> tuple[Path, Path]:
    """Every signal on: the shipped deviation scorer (forced to accept) inside ``segmenter``'s liver, and that
    segmenter carrying a failure-risk model (all features, coefficients 0, so every series takes the auto
    path) that makes the worker run the test-time-augmented quality passes and the fusion on each series."""
    from app.cli.demo_models import SHIPPED_SCORER
    from app.services.storage import file_sha256
    from models.risk import FEATURES, FailureRisk
    from workers.inference.checkpoint import read_checkpoint, save_checkpoint
    from workers.inference.quality import passes_record  # a risk fitted today: the worker's current passes

    scorer = read_checkpoint(SHIPPED_SCORER)
    scorer["metadata"]["calibration"]["series_threshold"] = 1e9
    save_checkpoint(scorer_path := tmp / "deviation-accepts.pt", scorer["state"], scorer["metadata"])
    n = len(FEATURES)  # the anomaly feature is fused, so the risk model names the scorer it was fit with
    fitted_on = {"scorer_sha256": file_sha256(scorer_path), "quality_passes": passes_record()}
    risk = FailureRisk(features=FEATURES, mean=(0.0,) * n, scale=(1.0,) * n, coef=(0.0,) * n, intercept=-10.0,
                       threshold=0.5, alpha=0.01, fitted_on=fitted_on)  # fmt: skip
    ckpt = read_checkpoint(segmenter)
    ckpt["metadata"]["failure_risk"] = risk.as_json()
    save_checkpoint(seg_path := tmp / "segmenter-with-risk.pt", ckpt["state"], ckpt["metadata"])
    return scorer_path, seg_path


def measure(engine, client: httpx.Client, blobs: list[bytes]) -> tuple[float, float | None, str]:  # type: ignore[no-untyped-def]
    """(completion -> decision s, completion -> SEG stored s or None, the decision's reason). A series that goes to
    a radiologist has no SEG: since session 17 the shipped segmenter's ircadb-01 mask stops short of the dome, and
    the worker sends it to a radiologist (liver_beyond_mask) after every signal ran, so the decision's time is the
    same path's; only the SEG is not written."""
    blobs = fresh_uids(blobs)
    reply = stow(client, blobs, chunked=True).json()
    url = reply["00081199"]["Value"][0]["00081190"]["Value"][0]
    series_uid = url.split("/series/")[1].split("/")[0]
    assert client.post(f"/series/{series_uid}/complete").status_code == 200
    query = text(
        "SELECT extract(epoch FROM d.created_at - s.completed_at), extract(epoch FROM g.created_at - s.completed_at), "
        "d.decision, d.reason FROM series s JOIN series_decisions d ON d.series_id = s.id "
        "LEFT JOIN segmentations g ON g.series_id = s.id WHERE s.series_uid = :u"
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(query, {"u": series_uid}).first()
        if row is not None and (row[1] is not None or row[2] != "auto"):
            return float(row[0]), None if row[1] is None else float(row[1]), str(row[3])
        time.sleep(0.05)
    raise TimeoutError("series was not routed within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=7)
    parser.add_argument(
        "--region",
        choices=("view", "liver", "fused"),
        default="view",
        help="liver: a liver-restricted scorer (the worker segments, then scores); fused: every signal of the "
        "gate (the shipped deviation scorer, the segmenter's quality passes and the fused risk); needs --segmenter",
    )
    parser.add_argument("--segmenter", type=Path, help="a trained segmenter checkpoint (fused: finds a real liver)")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=0.0,
        help="idle wait after the warm-up series (the background torch.compile of big models)",
    )
    args = parser.parse_args()
    folder = DATA_DIR / "ct" / "ircadb-01" / "ct-dicom"
    blobs = read_files(folder if folder.is_dir() else SAMPLE / "ct-dicom")
    with tempfile.TemporaryDirectory(prefix="gk-bench-decision-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["GATEKEEPER_MODELS_DIR"] = str(tmp / "registry")
        os.environ["GATEKEEPER_DISPATCH_INTERVAL_S"] = "0.1"
        if args.region == "fused":
            if args.segmenter is None:
                parser.error("--region fused needs --segmenter (a trained one: an untrained one finds no liver)")
            scorer, segmenter = fused_models(tmp, args.segmenter)
        else:
            scorer, segmenter = production_sized_models(tmp, args.region)
        service, url, token = start_service(tmp, fsync=True)
        try:
            register_model(service.env, "scorer", scorer)
            register_model(service.env, "segmenter", segmenter)
            service.start_worker()
            engine = create_engine(url)
            with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
                measure(engine, c, blobs)  # warm-up: the worker loads both models once
                time.sleep(args.settle_s)
                runs = [measure(engine, c, blobs) for _ in range(args.series)]
            engine.dispose()
        finally:
            service.stop()
            drop_database(url)
            worker_log = tmp / "service-logs" / "worker.log"
            if worker_log.exists():  # the worker's own per-stage timings, for the reader
                print("".join(line for line in worker_log.read_text().splitlines(True) if "decided" in line))
    decision = [r[0] for r in runs]
    routed = [r[1] for r in runs if r[1] is not None]
    reasons = sorted({r[2] for r in runs})
    seg = f"{statistics.median(routed):.2f} s" if routed else "none written"
    print(f"| {args.region} | {len(blobs)} slices | {args.series} series | completion -> decision median "
          f"{statistics.median(decision):.2f} s "
          f"(min {min(decision):.2f}, max {max(decision):.2f}) | completion -> SEG stored median {seg} "
          f"| reasons {', '.join(reasons)} | load avg {os.getloadavg()[0]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
