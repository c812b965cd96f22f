"""``python sample.py --workdir RUN`` (console script ``csrnn-sample``):
generate wav files from a run's checkpoint.

  python sample.py --workdir runs/ambient --cond happy,sad --num 2
  python sample.py --workdir runs/ambient --cond-vector 0,0,1,1  # a mix
  python sample.py --workdir runs/ambient --cond space --seconds 600 \
      --temperature 0.95 --top-p 0.99 --prime intro.wav

Every output is named ``<condition>_seed<seed>_t<temperature>.wav`` with a
JSON sidecar (checkpoint step, config hash, condition, temperature, seed,
log-likelihood, wall time); ``spectrograms.png`` shows the batch.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys


from csrnn_jax import audio
from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import crash_guard
from csrnn_jax import outputs
from csrnn_jax import sampling


def _floats(text: str) -> list[float]:
  try:
    return [float(v) for v in text.split(",")]
  except ValueError:
    raise SystemExit(f"error: {text!r} is not a comma-separated list of "
                     "numbers") from None


def build_rows(config, cond_names, cond_vectors, num, seed, temperatures):
  """One Row per output: each condition (name or vector) times ``num``."""
  class_names = list(config.data.class_names)
  cond_dim = config.model.cond_dim
  conds = []
  for name in cond_names:
    if name not in class_names:
      raise ValueError(
          f"class {name!r} is not one of this run's classes: "
          f"{', '.join(class_names) or '(none: the model is unconditional)'}")
    one_hot = [0.0] * cond_dim
    one_hot[class_names.index(name)] = 1.0
    conds.append((name, tuple(one_hot)))
  for vector in cond_vectors:
    if len(vector) != cond_dim:
      names = list(config.data.cond_names) or class_names
      raise ValueError(
          f"--cond-vector has {len(vector)} values; this run's condition "
          f"vectors have {cond_dim}" + (f" ({', '.join(names)})" if names
                                        else ""))
    conds.append(("mix-" + "-".join(f"{v:g}" for v in vector), tuple(vector)))
  if not conds:
    conds = ([(n, tuple(float(i == j) for j in range(cond_dim)))
              for i, n in enumerate(class_names)] if cond_dim else
             [("uncond", ())])
  n_out = len(conds) * num
  if len(temperatures) not in (1, n_out):
    raise ValueError(f"--temperature has {len(temperatures)} values; give one"
                     f" or one per output ({n_out})")
  temps = temperatures * n_out if len(temperatures) == 1 else temperatures
  rows = []
  for i, (name, vector) in enumerate(c for c in conds for _ in range(num)):
    rows.append(outputs.Row(name, vector, seed + i, temps[i]))
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="csrnn-sample",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a run directory")
  p.add_argument("--step", default="latest", help="N, 'latest' or 'best'")
  p.add_argument("--cond", default="", help="class names, comma-separated")
  p.add_argument("--cond-vector", action="append", default=[],
                 help="a condition vector such as 0,0,1,1 (repeatable)")
  p.add_argument("--num", type=int, default=1, help="outputs per condition")
  p.add_argument("--seconds", type=float, default=4.0)
  p.add_argument("--temperature", default="1.0",
                 help="one value, or one per output, comma-separated")
  p.add_argument("--top-k", type=int, default=0)
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--prime", help="a wav (any audio) whose end is continued")
  p.add_argument("--start", choices=sampling.STARTS, default="h0",
                 help="hidden state at the start: learned h0 or zeros")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the first output; the others count up")
  p.add_argument("--crash-guard", action="store_true",
                 help="rewind a row to its last good 0.25 s and resample it "
                 "when the crash detector fires (csrnn_jax.crash_guard)")
  p.add_argument("--segment-seconds", type=float, default=4.0,
                 help="generate long audio in pieces of this length")
  p.add_argument("--out", help="output folder (default RUN/samples/step<N>)")
  args = p.parse_args(argv)
  try:
    step = int(args.step) if args.step.isdigit() else args.step
    config, mcfg, graphdef, params, step = checkpoint_lib.load_run(
        args.workdir, step)
    rows = build_rows(config, [c for c in args.cond.split(",") if c],
                      [_floats(v) for v in args.cond_vector], args.num,
                      args.seed, _floats(args.temperature))
    options = sampling.SamplingOptions(args.top_k, args.top_p)
    sample_rate = config.data.sample_rate
    prime = None
    if args.prime:
      prime = audio.encode(audio.load_audio(args.prime, sample_rate),
                           mcfg.q_levels, mcfg.quantization, mcfg.preemphasis)
    out = args.out or os.path.join(args.workdir, "samples", f"step{step}")
    metadata = {"workdir": os.path.abspath(args.workdir),
                "checkpoint_step": step,
                "config_sha256": hashlib.sha256(
                    configlib.to_json(config).encode()).hexdigest(),
                "prime": args.prime}
    paths = outputs.generate_to_files(
        sampling.Generator(graphdef, params), rows, args.seconds,
        sample_rate, out, options, prime, args.start, args.segment_seconds,
        metadata, guard=(crash_guard.CrashGuard(sample_rate)
                         if args.crash_guard else None))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path in paths:
    print(path)
  print(os.path.join(out, "spectrograms.png"))
  return 0
