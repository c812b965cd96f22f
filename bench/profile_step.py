"""Where the training step's time goes: one chunk batch of the ambient model
(or another size) under the JAX profiler, its XLA operations grouped by the
model's named scopes (tier<k>/project|gru|upsample, mlp_input, mlp_head, nll,
optimizer), forward against backward, and by kind (GEMM, gather/scatter,
copy/transpose, other). Prints a markdown report (bench/PROFILE.md holds the
recorded ones).

  python bench/profile_step.py --batch 16 [--dim 1024] [--compute-dtype bfloat16]
      [--frame-sizes 16,16,64] [--q-levels 256]

Operation times come from the profiler's trace of XLA's CPU thunks. XLA runs
independent operations concurrently on the cores, so shares are of the summed
operation time, which exceeds the wall time by the overlap.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np

from csrnn_jax import configlib
from csrnn_jax import model as model_lib
from csrnn_jax import trainer

SEQ_LEN = 1024
N_WINDOWS = 2
# Operations that only contain others (their time is their children's).
CONTAINERS = ("while", "conditional", "call", "ThunkExecutor", "$")


def compiled_step(cfg, batch):
  graphdef, params = model_lib.build(cfg, 0)
  tx = trainer.make_optimizer(configlib.TrainConfig())  # Adam 1e-3, clip 1
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  args = (rng.integers(0, cfg.q_levels,
                       (N_WINDOWS, batch, cfg.lookback + SEQ_LEN), np.int32),
          np.eye(cfg.cond_dim, dtype=np.float32)[np.arange(batch)
                                                 % cfg.cond_dim],
          np.ones(batch, np.float32), jax.random.key(0))
  step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
  compiled = step.lower(params, opt_state, *args).compile()
  return compiled, params, opt_state, args


def op_metadata(hlo_text: str) -> dict:
  """Instruction name -> its op_name (the JAX name stack)."""
  meta = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"",
                       hlo_text, re.M):
    meta[m.group(1)] = m.group(2)
  return meta


def category(op_name: str) -> str:
  path = re.sub(r"transpose\(|jvp\(|\)", "", op_name)
  tier = re.search(r"(tier\d+)", path)
  for scope in ("project", "gru", "upsample"):
    if tier and f"{tier.group(1)}/{scope}" in path:
      part = scope
      if scope == "gru":
        part = "gru recurrence" if "gru/while" in path else "gru batched"
      return f"{tier.group(1)} {part}"
  for scope in ("mlp_input", "mlp_head", "nll", "optimizer"):
    if scope in path:
      if scope == "mlp_input" and "ae,feb->fab" in path:
        return "mlp_input tap tables (Emb W_j)"
      return scope
  return "other"


def kind(name: str, op_name: str) -> str:
  if name.startswith(("ynn_fusion", "dot")) or "dot_general" in op_name:
    return "GEMM"
  if "gather" in name or "scatter" in name:
    return "gather/scatter"
  if "copy" in name or "transpose" in name:
    return "copy/transpose"
  return "other"


def profile(cfg, batch: int) -> dict:
  compiled, params, opt_state, args = compiled_step(cfg, batch)
  params, opt_state, _ = jax.block_until_ready(
      compiled(params, opt_state, *args))
  walls = []
  for _ in range(2):
    start = time.perf_counter()
    params, opt_state, _ = jax.block_until_ready(
        compiled(params, opt_state, *args))
    walls.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    jax.block_until_ready(compiled(params, opt_state, *args))
    jax.profiler.stop_trace()
    path, = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                      recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  meta = op_metadata(compiled.as_text())
  by_cat = collections.defaultdict(lambda: [0.0, 0.0])
  by_kind = collections.Counter()
  by_op = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or name.startswith(CONTAINERS) or name not in meta:
      continue
    ms = e.get("dur", 0) / 1e3 / N_WINDOWS
    op_name = meta[name]
    by_cat[category(op_name)]["transpose(" in op_name] += ms
    by_kind[kind(name, op_name)] += ms
    by_op[(name, op_name.split("closed_call/", 1)[-1])] += ms
  return {"wall_ms": 1e3 * min(walls) / N_WINDOWS, "by_category": by_cat,
          "by_kind": by_kind, "top": by_op.most_common(12),
          "samples_per_sec": batch * SEQ_LEN * N_WINDOWS / min(walls)}


def report(result: dict, title: str) -> str:
  total = sum(f + b for f, b in result["by_category"].values())
  lines = [f"### {title}", "",
           f"Wall time per window {result['wall_ms']:.0f} ms "
           f"({result['samples_per_sec']:,.0f} samples/s); summed operation "
           f"time {total:.0f} ms per window; load average "
           f"{os.getloadavg()[0]:.2f}.", "",
           "| part | forward ms | backward ms | share |", "|---|---|---|---|"]
  rows = sorted(result["by_category"].items(), key=lambda kv: -sum(kv[1]))
  for cat, (fwd, bwd) in rows:
    lines.append(f"| {cat} | {fwd:.0f} | {bwd:.0f} | "
                 f"{100 * (fwd + bwd) / total:.1f} % |")
  lines += ["", "| kind | ms | share |", "|---|---|---|"]
  for k, ms in result["by_kind"].most_common():
    lines.append(f"| {k} | {ms:.0f} | {100 * ms / total:.1f} % |")
  lines += ["", "Largest operations (ms per window):", ""]
  for (name, op_name), ms in result["top"]:
    lines.append(f"- {ms:.0f} ms `{name}` ({op_name})")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--compute-dtype", default="float32")
  parser.add_argument("--frame-sizes", default="16,16,64")
  parser.add_argument("--q-levels", type=int, default=256)
  args = parser.parse_args()
  frame_sizes = tuple(int(f) for f in args.frame_sizes.split(","))
  cfg = model_lib.ModelConfig(frame_sizes=frame_sizes, dim=args.dim,
                              cond_dim=4, q_levels=args.q_levels)
  if args.compute_dtype != "float32":
    cfg = model_lib.ModelConfig(**{**cfg.__dict__,
                                   "compute_dtype": args.compute_dtype})
  print(report(profile(cfg, args.batch),
               f"dim {args.dim}, {frame_sizes}, Q {args.q_levels}, batch "
               f"{args.batch}, {args.compute_dtype}"))


if __name__ == "__main__":
  main()
