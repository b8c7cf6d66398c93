#!/usr/bin/env bash
# Leave-one-patient-out segmenter folds (workers/training/segmenter_folds.py), two at a time, one thread each
# (two one-thread runs beat one two-thread run on 2 cores). Resumes where each fold stopped; logs in
# runs/segmenter-lopo/<patient>.log. The steps are those of reports/gate (2026-12-02): 2,000 for ircadb-01
# and ircadb-07 (those two ran their first 800 steps under a 3,000-step schedule, then resumed under 2,000),
# 1,500 for ircadb-17 and totalseg-s0009. About 10-15 min per 1,000 steps on a quiet core.
# Then: .venv/bin/gatekeeper evaluate-failure-gate   (reports/gate)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/segmenter-lopo}
mkdir -p "$RUNS"
chain() {
  for spec in "$@"; do
    p=${spec%:*}
    OMP_NUM_THREADS=1 .venv/bin/python -m workers.training.segmenter_folds --runs "$RUNS" --heldout "$p" \
      --steps "${spec#*:}" > "$RUNS/$p.log" 2>&1
  done
}
chain ircadb-01:2000 ircadb-17:1500 &
chain ircadb-07:2000 totalseg-s0009:1500 &
wait
