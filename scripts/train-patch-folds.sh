#!/usr/bin/env bash
# Rebuild the research weights of reports/scorer (issue #13) and the committed default files, from ../shared/data.
# The fold models are trained on CC BY-NC-ND cases: they stay in runs/patch (git-ignored), never in git.
# Two trainings run side by side at one thread each (the 2-core machine's best throughput); a rerun resumes
# each run from its last checkpoint.
#   scripts/train-patch-folds.sh            everything: about 2 h on 2 cores; then
#                                           .venv/bin/gatekeeper evaluate-patch-scorer   (reports/scorer)
#   SET=inpaint scripts/train-patch-folds.sh  the inpainting GAN for both folds, its unconditioned ablation for
#                                           fold A, the autoencoder for both (about 55 min); then
#     .venv/bin/python -m workers.evaluation.patch_report --runs runs/patch \
#         --detectors inpaint inpaint-uncond ae --out reports/scorer-inpaint
set -euo pipefail
cd "$(dirname "$0")/.."
T=".venv/bin/python -m workers.training.patch_training --threads 1"
A="ircadb-17 ircadb-01 totalseg-s0009 totalseg-example"   # fold A holds out ircadb-07
B="ircadb-07 ircadb-01 totalseg-s0009 totalseg-example"   # fold B holds out ircadb-17
export OMP_NUM_THREADS=1
inpaint_and_ablation() {
  $T --run-dir runs/patch/A-inpaint --detector inpaint --train $A
  $T --run-dir runs/patch/A-inpaint-uncond --detector inpaint --unconditioned --train $A
}
inpaint_and_autoencoders() {
  $T --run-dir runs/patch/B-inpaint --detector inpaint --train $B
  $T --run-dir runs/patch/A-ae --detector autoencoder --train $A
  $T --run-dir runs/patch/B-ae --detector autoencoder --train $B
}
if [[ "${SET:-all}" == "inpaint" ]]; then
  inpaint_and_ablation &
  inpaint_and_autoencoders &
  wait
  exit 0
fi
(
  $T --run-dir runs/patch/A-fanogan --train $A
  $T --run-dir runs/patch/ship-fanogan --train totalseg-s0009
  $T --run-dir runs/patch/B-fanogan --train $B
  inpaint_and_ablation
) &
(
  $T --run-dir runs/patch/A-fanogan-uncond --unconditioned --train $A
  inpaint_and_autoencoders
) &
wait
# the committed files (licence-clean: trained on CC BY 4.0, calibrated on Apache-2.0)
.venv/bin/python -m workers.training.patch_calibration runs/patch/ship-fanogan/scorer.pt --patients totalseg-example \
    --out models/weights/patch-fanogan.pt
.venv/bin/python -m workers.training.patch_calibration deviation --patients totalseg-example --out models/weights/deviation.pt
