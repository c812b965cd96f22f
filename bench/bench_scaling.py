"""Training throughput against the number of data-parallel devices.

One chunk batch (``--windows`` TBPTT windows in one jitted scan) of random
audio, timed after compiling, for: no mesh (the plain single-device program)
and a ``('data',)`` mesh of 1, 2, 4 ... devices. ``--scaling strong`` keeps
the global batch fixed (the work is the same, so on fake CPU devices any
difference is the cost of sharding); ``weak`` keeps the rows per device fixed
(the global batch grows with the devices: the speed-up a user sees on real
accelerators). On a CPU-only machine the devices are fake
(``jax_num_cpu_devices``) and share the same cores: this measures overhead,
not speed.

  PYTHONPATH=. python bench/bench_scaling.py            # 1, 2, 4 CPU devices
  PYTHONPATH=. python bench/bench_scaling.py --scaling weak --batch 4
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from csrnn_jax import configlib
from csrnn_jax import model as model_lib
from csrnn_jax import sharding
from csrnn_jax import trainer
from run import machine  # bench/run.py, beside this file


def compiled_chunk_batch(cfg, batch_size, n_windows, seq_len, mesh):
  """(compile s, run) where run() trains on one chunk batch and returns its
  wall time (random audio; the state is carried from call to call)."""
  train_cfg = configlib.TrainConfig()
  graphdef, params = model_lib.build(cfg, 0)
  tx = trainer.make_optimizer(train_cfg)
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  windows_NxBxW = rng.integers(0, cfg.q_levels,
                               (n_windows, batch_size, cfg.lookback + seq_len),
                               dtype=np.int32)
  cond_BxC = np.eye(cfg.cond_dim, dtype=np.float32)[
      np.arange(batch_size) % cfg.cond_dim]
  mask_B = np.ones(batch_size, np.float32)
  args = jax.device_put((windows_NxBxW, cond_BxC, mask_B)) + (
      jax.random.key(0),)
  if mesh is not None:
    params, opt_state = sharding.replicate((params, opt_state), mesh)
    args = (sharding.shard_batch_rows(windows_NxBxW, mesh, 1),
            *sharding.shard_batch_rows((cond_BxC, mask_B), mesh),
            jax.random.key(0))
  step = trainer.make_chunk_step(graphdef, tx, cfg.lookback, mesh=mesh)
  start = time.perf_counter()
  step = step.lower(params, opt_state, *args).compile()
  compile_s = time.perf_counter() - start
  state = [params, opt_state]

  def run() -> float:
    start = time.perf_counter()
    state[0], state[1], metrics = step(*state, *args)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  run()  # warm-up
  return compile_s, run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--devices", default="1,2,4",
                      help="device counts to run on (fake CPU devices are "
                      "made up to the largest)")
  parser.add_argument("--scaling", choices=("strong", "weak"),
                      default="strong")
  parser.add_argument("--batch", type=int, default=16,
                      help="global batch (strong) or rows per device (weak)")
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--seq-len", type=int, default=512)
  parser.add_argument("--windows", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  counts = [int(n) for n in args.devices.split(",")]
  jax.config.update("jax_num_cpu_devices", max(counts))
  cfg = model_lib.ModelConfig(frame_sizes=(8, 8, 32), dim=args.dim,
                              cond_dim=4)
  print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
  print(f"Model: frame sizes {cfg.frame_sizes}, dim {cfg.dim}; "
        f"{args.windows} windows of {args.seq_len} samples per chunk batch; "
        f"{args.scaling} scaling, batch {args.batch}\n")
  setups = []
  for n in [None] + counts:
    rows = args.batch * (n or 1) if args.scaling == "weak" else args.batch
    mesh = None if n is None else sharding.make_mesh(jax.devices()[:n])
    setups.append((n, rows, *compiled_chunk_batch(
        cfg, rows, args.windows, args.seq_len, mesh)))
  # Round-robin, so that other load on the machine hits every setup alike.
  seconds = [[] for _ in setups]
  for _ in range(args.repeats):
    for times, (*_, run) in zip(seconds, setups):
      times.append(run())
  # The fastest call is the least disturbed by other jobs: rates use it.
  print("| devices | global batch | compile s | s per chunk batch (fastest, "
        "median) | samples/s (fastest) | vs no mesh |")
  print("| --- | --- | --- | --- | --- | --- |")
  base = None
  for times, (n, rows, compile_s, _) in zip(seconds, setups):
    rate = rows * args.windows * args.seq_len / min(times)
    base = base or rate
    print(f"| {'no mesh' if n is None else n} | {rows} | {compile_s:.1f} | "
          f"{min(times):.3f}, {statistics.median(times):.3f} | {rate:,.0f} | "
          f"{rate / base:.2f}x |")
  print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
