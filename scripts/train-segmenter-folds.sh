#!/usr/bin/env bash
# Leave-one-patient-out segmenter folds (workers/training/segmenter_folds.py), two at a time, one thread each
# (two one-thread runs beat one two-thread run on 2 cores). Resumes where each fold stopped.
# About 15-20 min per fold on 2 cores; logs in runs/segmenter-lopo/<patient>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/segmenter-lopo}
STEPS=${STEPS:-3000}
mkdir -p "$RUNS"
chain() {
  for p in "$@"; do
    OMP_NUM_THREADS=1 .venv/bin/python -m workers.training.segmenter_folds --runs "$RUNS" --heldout "$p" \
      --steps "$STEPS" > "$RUNS/$p.log" 2>&1
  done
}
chain ircadb-01 ircadb-17 &
chain ircadb-07 totalseg-s0009 &
wait
