#!/usr/bin/env bash
# The one-shot GPU check: every backend against its reference on the card,
# the ambient train step at batch 128 and generation at batch 1 and 128 per
# backend, compile times; writes bench/RESULTS_gpu.md (card, driver,
# versions). Under 8 minutes: each part runs in its own process under its
# own timeout and keeps what it finished; the report says what did not.
#
#   bash bench/device_check.sh            # on the GPU machine, offline
#   bash bench/device_check.sh --small    # a tiny model: smoke test (CPU)
#
# Needs Python with jax (and its CUDA plugin), flax, optax and orbax. The
# project runs from this checkout (PYTHONPATH, nothing installed); any other
# package it imports that is missing is installed from bench/wheels/ into a
# temporary folder (--no-index: no network).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SMALL=${1:-}
OUT=bench/RESULTS_gpu.md
[ "$SMALL" = "--small" ] && OUT=${OUT_SMALL:-/tmp/RESULTS_gpu_small.md}
WORK=$(mktemp -d)
RESULTS=$WORK/results.json
LOG=$WORK/problems.log
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

imports() {
  "$PY" -c "import csrnn_jax.trainer, csrnn_jax.sampling" 2>&1 | tail -1
}
missing_wheels() {  # the wheels whose module this Python lacks
  "$PY" -c '
import glob, importlib.util, os
for path in sorted(glob.glob("bench/wheels/*.whl")):
  if importlib.util.find_spec(os.path.basename(path).split("-")[0]) is None:
    print(path)'
}
if [ -n "$(imports)" ]; then
  echo "installing what is missing from bench/wheels: $(imports)"
  # shellcheck disable=SC2046  # one argument per wheel
  "$PY" -m pip install --quiet --no-index --no-deps --target "$WORK/site" \
    $(missing_wheels)
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
  if [ -n "$(imports)" ]; then
    echo "still cannot import the project: $(imports)" >&2
    exit 2
  fi
fi

part() {  # part NAME SECONDS
  echo "== $1 (at most $2 s)"
  start=$(date +%s)
  timeout --kill-after=5 "$2" "$PY" bench/device_check.py "$1" \
    --results "$RESULTS" $SMALL
  status=$?
  echo "   $1: exit $status after $(( $(date +%s) - start )) s"
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "$1: stopped by its $2 s timeout; rows it had not measured read" \
      "'not measured'" >> "$LOG"
  elif [ "$status" != 0 ]; then
    echo "$1: exit status $status (its error is in the script's output)" \
      >> "$LOG"
  fi
  return "$status"
}

part info 30 || { echo "no usable device; nothing measured" >&2; exit 2; }
part parity 120
part train 165
part generate 115
"$PY" bench/device_check.py report --results "$RESULTS" --log "$LOG" \
  --out "$OUT"
echo "wrote $OUT (rows: $RESULTS)"
