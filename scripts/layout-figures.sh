#!/usr/bin/env bash
# The layout's figures at a commit (issue #11): layout_check's summary and the lines and files per folder.
#   bash scripts/layout-figures.sh [REV]     (default HEAD; run in the repository root, ../shared beside it)
set -euo pipefail
rev=${1:-HEAD}
check=$(realpath ../shared/tools/layout_check.py)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$rev" | tar -x -C "$tmp"
cd "$tmp"
python3 "$check" | tail -1 || true
for f in app app/api app/cli app/core app/db app/dicom app/services workers workers/pipelines workers/serving \
         workers/inference workers/training workers/evaluation models; do
  [ -d "$f" ] || continue
  n=$(find "$f" -maxdepth 1 -name '*.py' | wc -l)
  printf "%-20s %6d lines %3d files\n" "$f" "$(find "$f" -maxdepth 1 -name '*.py' -exec cat {} + | wc -l)" "$n"
done
