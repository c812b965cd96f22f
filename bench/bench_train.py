"""Training throughput: audio samples per second through forward, backward
and the Adam update, at the ambient model's size (batch 16 and 128, windows
of 1024) and for a dim-256 model. Writes bench/RESULTS_train.md.

  python bench/bench_train.py [--windows 2] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MODELS, machine, timed  # noqa: E402

from csrnn_jax import model as model_lib  # noqa: E402
from csrnn_jax import trainer  # noqa: E402


def bench(cfg, batch, seq_len, n_windows):
  graphdef, params = model_lib.build(cfg, 0)
  tx = trainer.make_optimizer(ml_collections.ConfigDict(dict(
      lr_schedule="constant", learning_rate=1e-3, clip="value",
      clip_value=1.0)))
  opt_state = tx.init(params)
  step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (batch, cfg.lookback + n_windows * seq_len))
  windows = np.stack([x[:, i * seq_len:i * seq_len + cfg.lookback + seq_len]
                      for i in range(n_windows)]).astype(np.int32)
  cond = np.eye(cfg.cond_dim, dtype=np.float32)[np.arange(batch) % 4]
  mask = np.ones(batch, np.float32)
  compiled, compile_s = timed(
      lambda: step.lower(params, opt_state, windows, cond, mask).compile())
  (params, opt_state, _), _ = timed(compiled, params, opt_state, windows,
                                    cond, mask)  # warm-up run
  _, run_s = timed(compiled, params, opt_state, windows, cond, mask)
  return compile_s, batch * seq_len * n_windows / run_s, run_s / n_windows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--windows", type=int, default=2)
  parser.add_argument("--quick", action="store_true",
                      help="skip the batch-128 ambient row (slow on a CPU)")
  args = parser.parse_args()
  cases = [("ambient (dim 1024)", 16), ("ambient (dim 1024)", 128),
           ("dim 256", 32), ("dim 256", 128)]
  if args.quick:
    cases.remove(("ambient (dim 1024)", 128))
  rows = []
  for name, batch in cases:
    compile_s, sps, per_window = bench(MODELS[name], batch, 1024, args.windows)
    rows.append(f"| {name} | {batch} | {sps:,.0f} | {per_window * 1000:,.0f} "
                f"| {compile_s:.1f} |")
    print(rows[-1], flush=True)
  text = "\n".join([
      "# Training throughput", "",
      f"Machine: {machine()}", "",
      f"Command: `python bench/bench_train.py --windows {args.windows}"
      + (" --quick" if args.quick else "") + "`", "",
      "One jitted lax.scan over the windows of a chunk batch (one Adam step "
      "per window of 1024 samples), tap-table sample input, weight norm on.",
      "", "| model | batch | samples/s | ms per window | compile s |",
      "|---|---|---|---|---|", *rows, ""])
  with open(os.path.join(os.path.dirname(__file__), "RESULTS_train.md"),
            "w") as f:
    f.write(text)


if __name__ == "__main__":
  main()
