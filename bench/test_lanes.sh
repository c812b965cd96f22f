#!/usr/bin/env bash
# How long the two test lanes take from a fresh clone: clones this
# checkout's HEAD into a temporary folder, installs (make install, plus the
# torch extra as .ci/run does), then times `make test-fast` RUNS times, each
# from an empty compilation cache, and `make test` once, with the load
# average beside each. Appends the table to bench/RESULTS_tests.md.
#
#   bash bench/test_lanes.sh        # RUNS=3; about 14 minutes on 2 cores
#
# Take it on an idle machine: each lane uses every core.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
OUT=$PWD/bench/RESULTS_tests.md
WORK=$(mktemp -d)
git clone -q . "$WORK/repo"
cd "$WORK/repo"
make install > "$WORK/install.log" 2>&1
.venv/bin/python -m pip install -q torch==2.13.0 >> "$WORK/install.log" 2>&1

timed() {  # LABEL TARGET: one row of the table, from an empty cache
  rm -rf .cache/jax-tests
  local load start end result
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s.%N)
  result=$(make "$2" 2>&1 | grep -E "passed|failed" | tail -1)
  end=$(date +%s.%N)
  printf '| %s | %.1f | %s | %s |\n' "$1" "$(echo "$end - $start" | bc)" \
    "$load" "$result"
}

{
  echo
  echo "## $(git log -1 --format='%h %cs') ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')."
  echo
  echo "| lane | wall s | load (1, 5, 15 min) at the start | pytest |"
  echo "|---|---|---|---|"
  for i in $(seq "$RUNS"); do
    timed "make test-fast ($i)" test-fast
    sleep 60  # let the load fall
  done
  timed "make test" test
} >> "$OUT"
rm -rf "$WORK"
tail -n "$((RUNS + 8))" "$OUT"
