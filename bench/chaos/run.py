"""``python -m bench.chaos``: the fault scenarios of issue #4 at the issue's scale, one after another.

    .venv/bin/python -m bench.chaos                         # every scenario, LONG sizes (make chaos)
    .venv/bin/python -m bench.chaos -s worker_kill -s fuzz_parse  # some of them (their results are merged)
    .venv/bin/python -m bench.chaos --short                 # the CI sizes, to try the harness quickly

Needs the local PostgreSQL and Redis binaries (``bash scripts/start-services.sh``). Prints a table and
writes every figure to bench/chaos/results.json (merged per scenario, so scenarios may be run one by one).
A scenario whose invariant breaks is reported FAILED with the reason and the command exits 1; its
processes' logs are kept under the work folder it prints.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from testkit.servers import ROOT, StackFactory

SCENARIOS = ["worker_kill", "broker_restart", "api_kill", "db_restart", "duplicate_storm", "malformed", "fuzz_parse"]
RESULTS = Path(__file__).resolve().parent / "results.json"
COLUMNS = ["runs", "kills", "restarts", "files_tried", "lost"]


def run_one(name: str, short: bool, keep: bool) -> dict:
    module = importlib.import_module(f"bench.chaos.{name}")
    sizes = module.SHORT if short else module.LONG
    workdir = Path(tempfile.mkdtemp(prefix=f"gk-chaos-{name}-"))
    factory = StackFactory(lambda prefix: tempfile.mkdtemp(prefix=f"{prefix}-", dir=workdir))
    t0 = time.monotonic()
    result: dict = {"sizes": sizes}
    try:
        result["figures"] = module.run(factory, workdir, **sizes)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - a broken invariant is this scenario's result, the others still run
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
    finally:
        crashes = factory.close()
    if crashes:  # an unhandled exception in the API is a bug even when every client saw a status code
        result.update(ok=False, error=result.get("error", "") + f" unhandled exceptions in the API: {crashes}")
    result["wall_s"] = round(time.monotonic() - t0, 1)
    if result["ok"] and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["workdir"] = str(workdir)
    return result


def _machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version(),
            "commit": commit.stdout.strip()}  # fmt: skip


def table(results: dict[str, dict]) -> str:
    head = ["scenario", "ok", *COLUMNS, "wall s"]
    lines = [" | ".join([f"{head[0]:<15}", *(f"{h:>11}" for h in head[1:])])]
    for name, r in results.items():
        f = r.get("figures", {})
        cells = ["ok" if r["ok"] else "FAILED", *(f.get(c, "-") for c in COLUMNS), r["wall_s"]]
        lines.append(" | ".join([f"{name:<15}", *(f"{c!s:>11}" for c in cells)]))
    lines.append("runs: scoring runs, requests or parser executions; files_tried: instances or files sent")
    for name, r in results.items():
        if not r["ok"]:
            lines.append(f"{name}: {r['error']} (logs in {r.get('workdir')})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("-s", "--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--short", action="store_true", help="the CI sizes instead of the issue's")
    parser.add_argument("--keep", action="store_true", help="keep every work folder (logs), not only failed ones")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as make test: the workers share 2 cores with the load
    done: dict[str, dict] = {}
    for name in args.scenario or SCENARIOS:
        print(f"== {name} ...", flush=True)
        done[name] = run_one(name, args.short, args.keep)
        print(json.dumps(done[name].get("figures") or done[name].get("error")), flush=True)
    print(table(done))
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    scale = "short" if args.short else "long"
    stamp = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "scale": scale, "machine": _machine()}
    merged = {**previous.get("scenarios", {}), **{k: {**v, **stamp} for k, v in done.items()}}
    args.out.write_text(json.dumps({"scenarios": merged}, indent=2) + "\n")
    print(f"figures written to {args.out}")
    return 0 if all(r["ok"] for r in done.values()) else 1
