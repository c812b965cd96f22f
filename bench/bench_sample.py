"""Generation speed: samples per second (per stream and aggregate) and
compile time at batch 1, 16 and 128, for the ambient model and a dim-256
model, beside a PyTorch eager generator run the way the reference runs (a
Python loop per sample, torch.no_grad, 2 threads), in the same process.
Writes bench/RESULTS_sample.md.

  python bench/bench_sample.py [--samples 2048] [--torch-samples 256]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from common import MODELS, machine  # noqa: E402

from csrnn_jax import model as model_lib  # noqa: E402
from csrnn_jax import sampling  # noqa: E402


def bench_jax(cfg, batch, n_samples):
  graphdef, params = model_lib.build(cfg, 0)
  gen = sampling.Generator(graphdef, params)
  cond = np.eye(cfg.cond_dim, dtype=np.float32)[np.arange(batch) % 4]
  start = time.perf_counter()
  gen.generate(cond, np.arange(batch), n_samples)  # compile + run
  first = time.perf_counter() - start
  start = time.perf_counter()
  gen.generate(cond, np.arange(batch) + 1000, n_samples)
  run = time.perf_counter() - start
  return first - run, n_samples / run


def bench_torch(cfg, batch, n_samples):
  import torch
  import torch_reference as ref
  torch.set_num_threads(2)
  fs = cfg.frame_sizes
  ratios = [fs[1]] + [fs[k] // fs[k - 1] for k in range(2, len(fs))]
  net = ref.SampleRNN(ratios, cfg.n_rnn, cfg.dim, True, cfg.q_levels, True,
                      cfg.cond_dim)
  cond = torch.eye(cfg.cond_dim)[torch.arange(batch) % 4]
  start = time.perf_counter()
  ref.generate_samples(ref.Predictor(net), batch, n_samples, cond)
  return n_samples / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--samples", type=int, default=2048)
  parser.add_argument("--torch-samples", type=int, default=256)
  parser.add_argument("--batches", default="1,16,128")
  args = parser.parse_args()
  rows = []
  for name, cfg in MODELS.items():
    for batch in (int(b) for b in args.batches.split(",")):
      compile_s, per_stream = bench_jax(cfg, batch, args.samples)
      try:
        torch_per_stream = bench_torch(cfg, batch, args.torch_samples)
        torch_text = (f"{torch_per_stream:,.0f} | "
                      f"{per_stream / torch_per_stream:.1f}x")
      except ImportError:
        torch_text = "(torch not installed) | -"
      rows.append(f"| {name} | {batch} | {per_stream:,.0f} | "
                  f"{per_stream * batch:,.0f} | {compile_s:.1f} | "
                  f"{torch_text} |")
      print(rows[-1], flush=True)
  text = "\n".join([
      "# Generation speed", "",
      f"Machine: {machine()}", "",
      f"Command: `python bench/bench_sample.py --samples {args.samples} "
      f"--torch-samples {args.torch_samples} --batches {args.batches}`", "",
      "JAX: `sampling.Generator.generate`, one compiled program (nested "
      "lax.scan), timed on a second call with new seeds; compile s = first "
      "call minus second. PyTorch: `tests/torch_reference.py` stepped one "
      "sample at a time in Python as the reference generator does "
      "(torch.no_grad, 2 threads). Random weights (speed does not depend "
      "on them).", "",
      "| model | batch | JAX samples/s per stream | JAX aggregate | "
      "compile s | PyTorch samples/s per stream | JAX / PyTorch |",
      "|---|---|---|---|---|---|---|", *rows, ""])
  with open(os.path.join(HERE, "RESULTS_sample.md"), "w") as f:
    f.write(text)


if __name__ == "__main__":
  main()
