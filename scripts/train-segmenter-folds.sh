#!/usr/bin/env bash
# Leave-one-patient-out segmenter folds (workers/training/segmenter_folds.py), two at a time, one thread each
# (two one-thread runs beat one two-thread run on 2 cores). Resumes where each fold stopped; logs in
# runs/segmenter-lopo/<patient>.log. 8,000 steps per fold, bf16 autocast where the CPU has it natively
# (Intel AMX: 8.8 steps/s per core, about 15 min per fold; AVX512-BF16 EPYC, two folds side by side: 4.2 steps/s
# each, 32 min per fold, all four in 64 min (2026-12-02); fp32 on an AVX-512 EPYC: about 3.4 steps/s, 40 min).
# Then: .venv/bin/gatekeeper evaluate-failure-gate   (reports/gate)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/segmenter-lopo}
STEPS=${STEPS:-8000}
SEED=${SEED:-0}  # another seed (with another RUNS) trains a second ensemble member of every fold
LUNG=()
if [[ -n "${LUNG_P:-}" ]]; then LUNG=(--lung-p "$LUNG_P"); fi  # the dome's lung ring (AugmentConfig.lung_p)
mkdir -p "$RUNS"
chain() {
  for p in "$@"; do
    OMP_NUM_THREADS=1 .venv/bin/python -m workers.training.segmenter_folds --runs "$RUNS" --heldout "$p" \
      --steps "$STEPS" --seed "$SEED" "${LUNG[@]}" >> "$RUNS/$p.log" 2>&1
  done
}
chain ircadb-17 ircadb-07 &
chain ircadb-01 totalseg-s0009 &
wait
