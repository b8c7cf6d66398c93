"""STOW-RS ingest benchmark: the service against Orthanc, same machine, same run, same client.

    .venv/bin/python bench/bench_ingest.py            # 5 alternating runs per configuration
    .venv/bin/python bench/bench_ingest.py --runs 7 --batches 16,1 --json /tmp/ingest.json
    .venv/bin/python bench/bench_ingest.py --profile /tmp/prof   # + py-spy on the API process

What is measured: one client (httpx, ``app.client.stow``, chunked transfer) sends the
real 129-slice series ``ircadb-01`` by STOW-RS, one request per ``batch`` instances,
requests one after another; the time from the first request to the last reply,
each reply checked (200, every instance in ReferencedSOPSequence). Before each
run (untimed) the series gets fresh Study/Series/SOP Instance UIDs, rewritten
with pydicom in memory, so every run stores new instances, never duplicates.
Runs alternate service, Orthanc, service, Orthanc...

The service: API process (uvicorn, dispatcher thread on, no Celery worker, so
nothing scores during the runs) on a fresh PostgreSQL database and Redis, fsync on
(the default). Orthanc: the Debian package with its DICOMweb plugin (its STOW-RS
root set to /dicomweb/ so the same client path serves both), SyncStorageArea on,
its storage on the same disk as the service's. Both keep their data in a
temporary folder that is deleted at the end; the real data never enters the repo.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import processes  # noqa: E402
from app.client import read_files, stow  # noqa: E402
from app.processes import Service, create_database, free_port, migrate, stop_group  # noqa: E402

DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))
PG_ADMIN = os.environ.get("GATEKEEPER_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GATEKEEPER_BENCH_REDIS", "redis://127.0.0.1:6379/6")
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


# --------------------------------------------------------------------------- data


def series_dir(case: str) -> Path:
    for folder in (DATA_DIR / "ct" / case / "ct-dicom", DATA_DIR / case / "ct-dicom"):
        if folder.is_dir():
            return folder
    sys.exit(f"real CT data {case} not found under {DATA_DIR} (set GATEKEEPER_DATA_DIR)")


def fresh_uids(blobs: list[bytes]) -> list[bytes]:
    """The same instances under a new study, series and SOP Instance UIDs (pixels untouched)."""
    study, series = generate_uid(), generate_uid()
    out = []
    for blob in blobs:
        ds = pydicom.dcmread(io.BytesIO(blob))
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------- the two servers


def start_service(tmp: Path, fsync: bool) -> tuple[Service, str, str]:
    url = create_database(PG_ADMIN, "gk_bench")
    migrate(url)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "GATEKEEPER_DATABASE_URL": url,
        "GATEKEEPER_BROKER_URL": REDIS_URL,
        "GATEKEEPER_STORAGE_DIR": str(tmp / "service-storage"),
        "GATEKEEPER_FSYNC": "true" if fsync else "false",
        "GATEKEEPER_LOG_LEVEL": "WARNING",
    }
    cmd = [str(ROOT / ".venv" / "bin" / "gatekeeper"), "token", "create", "--role", "pacs", "--name", "bench"]
    made = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60)
    token = made.stdout.strip().splitlines()[-1]
    service = Service(env=env, log_dir=tmp / "service-logs")
    service.start_api()
    return service, url, token


def drop_database(url: str) -> None:
    processes.drop_database(PG_ADMIN, url)


def start_orthanc(tmp: Path, sync: bool) -> tuple[subprocess.Popen, str]:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-orthanc.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"Orthanc is not installed and could not be installed: {done.stderr.strip()[-300:]}")
    plugin = next((p for p in PLUGIN_CANDIDATES if Path(p).exists()), None)
    if plugin is None:
        sys.exit(f"DICOMweb plugin not found in {PLUGIN_CANDIDATES}")
    port = free_port()
    config = {
        "Name": "gk-bench",
        "StorageDirectory": str(tmp / "orthanc-storage"),
        "IndexDirectory": str(tmp / "orthanc-storage"),
        "Plugins": [plugin],
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SyncStorageArea": sync,  # fdatasync each stored file (default true since Orthanc 1.7.4)
        "SaveJobs": False,
        "DicomWeb": {"Enable": True, "Root": "/dicomweb/", "EnableWado": False},
    }
    (tmp / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = (tmp / "orthanc.log").open("ab")
    proc = subprocess.Popen([shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(tmp / "orthanc.json")], cwd=tmp,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"Orthanc exited with {proc.returncode}; see {tmp / 'orthanc.log'}")
        try:
            if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("Orthanc did not start")


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    target: str
    batch: int
    rep: int
    instances: int
    bytes: int
    seconds: float

    @property
    def ips(self) -> float:
        return self.instances / self.seconds

    @property
    def mbps(self) -> float:
        return self.bytes / 1e6 / self.seconds


def send(client: httpx.Client, blobs: list[bytes], batch: int) -> float:
    """Send the series in batches; return the elapsed seconds. Every reply must list every instance."""
    t0 = time.perf_counter()
    for i in range(0, len(blobs), batch):
        part = blobs[i : i + batch]
        reply = stow(client, part, chunked=True)
        if reply.status_code != 200:
            raise RuntimeError(f"{client.base_url}: HTTP {reply.status_code} {reply.text[:300]}")
        body = reply.json()
        stored = body.get("00081199", {}).get("Value", [])
        failed = body.get("00081198", {}).get("Value", [])  # Orthanc sends an empty one
        if len(stored) != len(part) or failed:
            raise RuntimeError(f"{client.base_url}: {len(stored)} of {len(part)} instances stored")
    return time.perf_counter() - t0


def one_run(client: httpx.Client, target: str, blobs: list[bytes], batch: int, rep: int) -> Run:
    fresh = fresh_uids(blobs)  # untimed
    gc.collect()
    seconds = send(client, fresh, batch)
    return Run(target, batch, rep, len(fresh), sum(map(len, fresh)), seconds)


# --------------------------------------------------------------------------- py-spy


def profile_service(
    client: httpx.Client, pid: int, blobs: list[bytes], batch: int, runs: int, out: Path
) -> tuple[Path, int]:
    """Record the API process (all threads, idle included) with py-spy during `runs` extra runs.

    Returns the raw (collapsed stacks) file and the number of instances sent while recording.
    """
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"service-batch{batch}.txt"
    prepared = [fresh_uids(blobs) for _ in range(runs)]  # before recording: the window holds only requests
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw), "--idle",
                             "--threads", "--rate", str(PROFILE_RATE), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(1.0)  # py-spy attaches (this second shows as idle samples only)
    seconds = sum(send(client, fresh, batch) for fresh in prepared)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    n = sum(map(len, prepared))
    print(f"profiled {n} instances in {seconds:.2f} s: {seconds / n * 1000:.2f} ms per instance (wall)")
    return raw, n


PROFILE_RATE = 200  # samples per second and thread
IDLE_LEAVES = ("Condition.wait (threading.py", "WorkerThread.run (anyio")


def summarize_profile(raw: Path, n_instances: int, top: int = 14) -> str:
    """Per thread: where its wall time went, in milliseconds per instance (idle included, so waits show).

    With uvloop the event loop's own work and its idle wait both appear as ``Runner.run``.
    """
    per_thread: Counter[str] = Counter()
    leaf: dict[str, Counter[str]] = {}
    incl: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(":", 1)[-1].strip().rstrip("0123456789 ")
        count = int(n)
        per_thread[thread] += count
        leaf.setdefault(thread, Counter())[frames[-1]] += count
        for f in {f.rsplit(":", 1)[0] + ")" for f in frames[1:] if "(app/" in f}:
            incl.setdefault(thread, Counter())[f] += count

    def ms(count: int) -> float:
        return count / PROFILE_RATE / n_instances * 1000

    lines = [f"{n_instances} instances; samples span {ms(max(per_thread.values())):.2f} ms per instance"]
    for thread, count in per_thread.most_common():
        lines.append(f"\n== thread {thread}: {ms(count):.2f} ms per instance")
        lines.append("   leaf frames (self time, waiting included):")
        lines += [f"     {ms(c):6.2f} ms  {f}" for f, c in leaf[thread].most_common(top)]
        if incl.get(thread):
            lines.append("   app functions (inclusive):")
            lines += [f"     {ms(c):6.2f} ms  {f}" for f, c in incl[thread].most_common(top + 6)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="ircadb-01")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per target and batch size")
    ap.add_argument("--batches", default="16,1", help="instances per request, comma-separated")
    ap.add_argument("--service-fsync", choices=("true", "false"), default="true")
    ap.add_argument("--orthanc-sync", choices=("true", "false"), default="true")
    ap.add_argument("--json", type=Path, help="write every run and the summary here")
    ap.add_argument("--profile", type=Path, help="after the timed runs, py-spy the API here (raw + summary)")
    ap.add_argument("--profile-runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, storage)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    blobs = read_files(series_dir(args.case))
    tmp = Path(tempfile.mkdtemp(prefix="gk-bench-"))
    service = orthanc = None
    db_url = None
    runs: list[Run] = []
    try:
        service, db_url, token = start_service(tmp, args.service_fsync == "true")
        orthanc, orthanc_url = start_orthanc(tmp, args.orthanc_sync == "true")
        headers = {"Authorization": f"Bearer {token}"}
        clients = {
            "service": httpx.Client(base_url=service.url, headers=headers, timeout=300),
            "orthanc": httpx.Client(base_url=orthanc_url, headers=headers, timeout=300),
        }
        print(f"{len(blobs)} instances, {sum(map(len, blobs)) / 1e6:.1f} MB; batches {batches};"
              f" {args.runs} runs each; service fsync={args.service_fsync},"
              f" Orthanc SyncStorageArea={args.orthanc_sync}", flush=True)  # fmt: skip
        for client in clients.values():  # warm-up: imports, connection pools, caches
            send(client, fresh_uids(blobs[:16]), 16)
        load_before = os.getloadavg()
        for rep in range(args.runs):
            for batch in batches:
                for target in ("service", "orthanc"):
                    run = one_run(clients[target], target, blobs, batch, rep)
                    runs.append(run)
                    print(f"  rep {rep} batch {batch:3d} {target:8s} {run.seconds:7.2f} s {run.ips:7.1f} inst/s"
                          f" {run.mbps:7.1f} MB/s", flush=True)  # fmt: skip
        load_after = os.getloadavg()
        summary = []
        print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
        print("medians (ratio: of the medians; paired: median of service/orthanc in the same repetition):")
        print(f"{'batch':>5} {'service inst/s':>15} {'MB/s':>7} {'orthanc inst/s':>15} {'MB/s':>7} {'ratio':>6}"
              f" {'paired':>7}")  # fmt: skip
        for batch in batches:
            med = {}
            for target in ("service", "orthanc"):
                rs = [r for r in runs if r.target == target and r.batch == batch]
                med[target] = (statistics.median(r.ips for r in rs), statistics.median(r.mbps for r in rs))
            ratio = med["service"][0] / med["orthanc"][0]
            by_rep = {(r.target, r.rep): r.ips for r in runs if r.batch == batch}
            paired = statistics.median(by_rep["service", k] / by_rep["orthanc", k] for k in range(args.runs))
            summary.append({"batch": batch, "service_ips": med["service"][0], "service_mbps": med["service"][1],
                            "orthanc_ips": med["orthanc"][0], "orthanc_mbps": med["orthanc"][1], "ratio": ratio,
                            "paired_ratio": paired})  # fmt: skip
            print(f"{batch:5d} {med['service'][0]:15.1f} {med['service'][1]:7.1f} {med['orthanc'][0]:15.1f}"
                  f" {med['orthanc'][1]:7.1f} {ratio:6.2f} {paired:7.2f}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "loadavg_before": load_before, "loadavg_after": load_after},
                "settings": {"service_fsync": args.service_fsync, "orthanc_sync": args.orthanc_sync,
                             "case": args.case, "instances": len(blobs), "bytes": sum(map(len, blobs))},
                "runs": [asdict(r) | {"ips": r.ips, "mbps": r.mbps} for r in runs], "summary": summary,
            }, indent=2))  # fmt: skip
        if args.profile:
            assert service.api is not None
            for batch in batches:
                raw, n = profile_service(clients["service"], service.api.pid, blobs, batch, args.profile_runs,
                                         args.profile)  # fmt: skip
                text = summarize_profile(raw, n)
                (args.profile / f"service-batch{batch}-top.txt").write_text(text)
                print(f"\npy-spy, service, batch {batch} ({raw}):\n{text}")
        for client in clients.values():
            client.close()
        return 0
    finally:
        if service is not None:
            service.stop()
        stop_group(orthanc)
        if db_url:
            drop_database(db_url)
        if args.keep:
            print(f"kept {tmp} (contains copies of the real data: delete it when done)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
