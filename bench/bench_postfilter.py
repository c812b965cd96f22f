"""What the output post-filter (``sample.py --denoise``) costs: samples/s
per stream of the filter alone, fed in the crash guard's 0.25-s pieces as
sample.py feeds it, beside the recipe's generation (configs/cpu.py's model,
its sampling: guidance 1.5, min-p 0.1 above 3 levels) at the same batch.

  python bench/bench_postfilter.py [--batch 1,6] [--seconds 2] [--repeats 5]

Random weights and noise for audio (the filter's work does not depend on
what it filters). Medians of ``--repeats`` calls, generation after a
compiling call. Writes bench/RESULTS_postfilter.md. Run it on an idle
machine.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from bench_guidance import (  # beside this file
    SETTINGS, parse_args, recipe_generator, samples_per_second)
from csrnn_jax import postfilter
from run import machine  # bench/run.py, beside this file

SAMPLE_RATE = 16000
PIECE_SECONDS = 0.25  # the crash guard's segment


def filter_samples_per_second(batch: int, n: int, repeats: int) -> float:
  x_BxT = np.random.default_rng(0).normal(0, 0.1, (batch, n))
  piece = int(PIECE_SECONDS * SAMPLE_RATE)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f = postfilter.PostFilter(batch, SAMPLE_RATE, 3.0, preemphasis=0.85)
    for a in range(0, n, piece):
      f.push(x_BxT[:, a:a + piece])
    f.flush()
    times.append(time.perf_counter() - start)
  return n / statistics.median(times)


def main():
  args = parse_args(__doc__, repeats=5)
  gen = recipe_generator()
  n = int(args.seconds * SAMPLE_RATE)
  guidance, options = SETTINGS["guidance 1.5, min-p 0.1 above 3"]
  load = os.getloadavg()
  rows = []
  for batch in (int(b) for b in args.batch.split(",")):
    generated = samples_per_second(gen, batch, n, guidance, options,
                                   args.repeats)
    filtered = filter_samples_per_second(batch, n, args.repeats)
    # Both run one after the other: the time per sample adds up.
    both = 1 / (1 / generated + 1 / filtered)
    rows.append(f"| {batch} | {generated:,.0f} | {filtered:,.0f} | "
                f"{both:,.0f} | {both / generated:.3f} |")
    print(rows[-1], flush=True)
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "RESULTS_postfilter.md")
  with open(out, "w") as f:
    f.write(f"""# The output post-filter (`--denoise`)

Machine: {machine()}.

Command: `python bench/bench_postfilter.py --batch {args.batch} --seconds \
{args.seconds:g} --repeats {args.repeats}` ({time.strftime('%Y-%m-%d %H:%M')}).
Load average (1, 5, 15 min) at the start {load[0]:.2f}, {load[1]:.2f}, \
{load[2]:.2f}; at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}.

{n} samples per stream, medians of {args.repeats} calls. Generation: the
recipe's model and sampling (guidance 1.5, min-p 0.1 above 3), random
weights. The filter: strength 3, pre-emphasis 0.85, fed {PIECE_SECONDS:g}-s
pieces. Samples/s per stream.

| batch | generation | post-filter alone | both | vs generation |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n")
  print("wrote", out)


if __name__ == "__main__":
  main()
