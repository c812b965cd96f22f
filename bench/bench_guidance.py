"""What guidance and the gated min-p cost in generation: samples/s per
stream of the recipe's model (configs/cpu.py: frame sizes (8, 8, 32), dim
256, 8-bit), plain sampling against the guided program (2B rows in one scan)
and the recipe's sampling (guidance 1.5, min-p 0.1 above 3 levels).

  python bench/bench_guidance.py [--batch 1,6] [--seconds 2] [--repeats 3]

Random weights; each setting compiles once (a warm-up call), then the median
of ``--repeats`` calls. Writes bench/RESULTS_guidance.md. Run it on an idle
machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from csrnn_jax import model as model_lib
from csrnn_jax import sampling
from run import machine  # bench/run.py, beside this file

SETTINGS = {
    "plain": (1.0, sampling.SamplingOptions()),
    "guidance 1.5": (1.5, sampling.SamplingOptions(guide="logits")),
    "guidance 1.5, min-p 0.1 above 3": (1.5, sampling.SamplingOptions(
        min_p=0.1, truncate_above=3, guide="logits")),
}


def samples_per_second(gen, batch: int, n: int, guidance, options,
                       repeats: int) -> float:
  cond = np.eye(gen.cfg.cond_dim, dtype=np.float32)[
      np.arange(batch) % gen.cfg.cond_dim]
  seeds = np.arange(batch)
  gen.generate(cond, seeds, n, options=options, guidance=guidance)  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    gen.generate(cond, seeds, n, options=options, guidance=guidance)
    times.append(time.perf_counter() - start)
  return n / statistics.median(times)


def parse_args(doc: str, repeats: int) -> argparse.Namespace:
  """--batch, --seconds and --repeats, for this script and its siblings."""
  parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  parser.add_argument("--batch", default="1,6")
  parser.add_argument("--seconds", type=float, default=2.0)
  parser.add_argument("--repeats", type=int, default=repeats)
  return parser.parse_args()


def recipe_generator() -> sampling.Generator:
  """The recipe's model (configs/cpu.py's sizes, 3 classes), random weights."""
  cfg = model_lib.ModelConfig(frame_sizes=(8, 8, 32), dim=256, cond_dim=3,
                              preemphasis=0.85)
  return sampling.Generator(*model_lib.build(cfg, 0))


def main():
  args = parse_args(__doc__, repeats=3)
  gen = recipe_generator()
  n = int(args.seconds * 16000)
  load = os.getloadavg()
  rows = []
  for batch in (int(b) for b in args.batch.split(",")):
    plain = None
    for name, (guidance, options) in SETTINGS.items():
      rate = samples_per_second(gen, batch, n, guidance, options,
                                args.repeats)
      plain = plain or rate
      rows.append(f"| {batch} | {name} | {rate:,.0f} | {rate / plain:.2f} |")
      print(rows[-1], flush=True)
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "RESULTS_guidance.md")
  with open(out, "w") as f:
    f.write(f"""# Generation with guidance

Machine: {machine()}.

Command: `python bench/bench_guidance.py --batch {args.batch} --seconds \
{args.seconds:g} --repeats {args.repeats}` ({time.strftime('%Y-%m-%d %H:%M')}).
Load average (1, 5, 15 min) at the start {load[0]:.2f}, {load[1]:.2f}, \
{load[2]:.2f}; at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}.

The recipe's model (configs/cpu.py), random weights, {n} samples a call,
median of {args.repeats} calls after a compiling one. Samples/s per stream
(x batch for the aggregate).

| batch | sampling | samples/s per stream | vs plain |
|---|---|---|---|
""" + "\n".join(rows) + "\n")
  print("wrote", out)


if __name__ == "__main__":
  main()
