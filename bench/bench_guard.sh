#!/usr/bin/env bash
# The crash guard's generation time at two commits: the same sample.py
# command on a trained run, from a worktree of BEFORE and from this
# checkout, one after the other, with the load average before each; then
# whether the two wrote the same audio (the guard's rows are seeded, so a
# change of speed only must write identical files). Prints one table row.
#
#   bash bench/bench_guard.sh RUN BEFORE [sample.py flags ...]
#   bash bench/bench_guard.sh runs/demo daaf6de --num 4 --seconds 20 \
#       --guard-rewinds 32 --guard-backoff 0.5
#
# Take it on an idle machine: generation uses every core.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$(realpath "$1"); BEFORE=$2; shift 2
FLAGS=("$@")
WORK=$(mktemp -d)
git worktree add -q --detach "$WORK/before" "$BEFORE"
trap 'git worktree remove --force "$WORK/before"; rm -rf "$WORK"' EXIT
PY=$PWD/.venv/bin/python

timed() {  # SIDE DIR: seconds and load before, audio in $WORK/out_SIDE
  local load start
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s.%N)
  (cd "$2" && PYTHONPATH=$2 "$PY" sample.py --workdir "$RUN" \
     --out "$WORK/out_$1" "${FLAGS[@]}" > "$WORK/$1.log" 2>&1)
  printf '%.0f s (load %s)' "$(echo "$(date +%s.%N) - $start" | bc)" "$load"
}
before=$(timed before "$WORK/before")
after=$(timed after "$PWD")
same=identical
for f in "$WORK"/out_before/*.wav; do
  cmp -s "$f" "$WORK/out_after/$(basename "$f")" || same=DIFFERENT
done
printf '| %s | %s | %s | %s | %s audio |\n' "${FLAGS[*]}" "$BEFORE" "$before" \
  "$after" "$same"
