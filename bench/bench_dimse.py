"""C-STORE throughput: our receiver (``gatekeeper dimse``) against Orthanc's own C-STORE receiver.

The same sender (dcmtk's storescu, one association), the same series (ircadb-01, 129 slices, read from
../shared/data), each receiver fresh for each run (an empty database and storage for ours, an empty
Orthanc), runs alternated. Both make each instance durable before they answer (ours: fsync of file and
folder, then the commit; Orthanc: ``SyncStorageArea``). Only storescu's wall time is measured.

    .venv/bin/python bench/bench_dimse.py [--runs 3] [--database postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.processes import create_database, drop_database, migrate  # noqa: E402
from testkit.dimse import start_orthanc, start_receiver, storescu  # noqa: E402
from testkit.servers import PG_ADMIN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data")) / "ct" / "ircadb-01" / "ct-dicom"


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    return f"{model or platform.processor()} ({os.cpu_count()} logical CPUs)"


def _push(port: int, files: list[Path]) -> float:
    start = time.perf_counter()
    done = storescu(port, files)
    elapsed = time.perf_counter() - start
    ok = done.stderr.count("Received Store Response (Success)")
    if done.returncode != 0 or ok != len(files):
        raise RuntimeError(f"storescu: rc {done.returncode}, {ok}/{len(files)} successes: {done.stderr[-1500:]}")
    return elapsed


def run_ours(files: list[Path], root: Path, database: str) -> float:
    url = f"sqlite:///{root}/gk.sqlite" if database == "sqlite" else create_database(PG_ADMIN, "gk_bench_dimse")
    try:
        migrate(url)
        env = {"GATEKEEPER_DATABASE_URL": url, "GATEKEEPER_STORAGE_DIR": str(root / "storage"),
               "GATEKEEPER_FSYNC": "true", "GATEKEEPER_LOG_LEVEL": "WARNING"}  # fmt: skip
        receiver = start_receiver(env, root / "logs", "STORESCU@127.0.0.1")
        try:
            return _push(receiver.port, files)
        finally:
            receiver.stop()
    finally:
        if database != "sqlite":
            drop_database(PG_ADMIN, url)


def run_orthanc(files: list[Path], root: Path) -> float:
    server = start_orthanc(root / "orthanc", modalities={}, allow_store_from_anyone=True)
    try:
        return _push(server.dicom_port, files)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    files = sorted(p for p in DATA.iterdir() if p.is_file())
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    times: dict[str, list[float]] = {"gatekeeper": [], "orthanc": []}
    for run in range(args.runs):
        for name in ("gatekeeper", "orthanc") if run % 2 == 0 else ("orthanc", "gatekeeper"):
            with tempfile.TemporaryDirectory(prefix="gk-bench-dimse-") as tmp:
                t = run_ours(files, Path(tmp), args.database) if name == "gatekeeper" else run_orthanc(files, Path(tmp))
            times[name].append(t)
            print(f"run {run + 1} {name:10s} {len(files) / t:7.1f} instances/s {megabytes / t:6.1f} MB/s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    summary = {
        "cpu": _cpu(), "database": args.database, "instances": len(files), "megabytes": round(megabytes, 1),
        "runs": args.runs,
        **{f"{k}_instances_per_s": round(len(files) / t, 1) for k, t in med.items()},
        **{f"{k}_mb_per_s": round(megabytes / t, 1) for k, t in med.items()},
        "ratio_gatekeeper_over_orthanc": round(med["orthanc"] / med["gatekeeper"], 2),
    }  # fmt: skip
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
