"""The performance budget in one command: training throughput, generation
throughput at batch 1/16/128, compile times and XLA memory, for the ambient
model and a dim-256 model, for (a) this package's fast paths, (b) its plain
JAX reference paths (GRU ``scan`` backend, embedding+conv sample input) and
(c) a PyTorch eager implementation of the same model run the way the original
code runs (``tests/torch_reference.py``: Python loop per sample for
generation, 2 threads). Writes bench/RESULTS.md.

  python bench/run.py                 # everything (about 20 min on 2 cores)
  python bench/run.py --quick         # smaller counts, no batch-128 training
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import sys
import time

import jax
import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from csrnn_jax import model as model_lib  # noqa: E402
from csrnn_jax import sampling  # noqa: E402
from csrnn_jax import trainer  # noqa: E402

MODELS = {
    "ambient": model_lib.ModelConfig(frame_sizes=(16, 16, 64), dim=1024,
                                     cond_dim=4),
    "dim256": model_lib.ModelConfig(frame_sizes=(16, 16, 64), dim=256,
                                    cond_dim=4),
}
SEQ_LEN = 1024


def machine() -> str:
  cpu = platform.processor() or "unknown CPU"
  if os.path.exists("/proc/cpuinfo"):
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  kinds = ", ".join(sorted({d.device_kind for d in jax.devices()}))
  return (f"{cpu}, {os.cpu_count()} cores, {len(jax.devices())} x {kinds}; "
          f"JAX {jax.__version__}, Python {platform.python_version()}")


def reference(cfg):
  return dataclasses.replace(cfg, gru_backend="scan", sample_input="conv")


def _block(tree):
  return jax.block_until_ready(tree)


def jax_train(cfg, batch, n_windows):
  """(samples/s, compile s, XLA bytes) of the jitted window scan."""
  graphdef, params = model_lib.build(cfg, 0)
  tx = trainer.make_optimizer(ml_collections.ConfigDict(dict(
      lr_schedule="constant", learning_rate=1e-3, clip="value",
      clip_value=1.0)))
  opt_state = tx.init(params)
  step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
  rng = np.random.default_rng(0)
  windows = rng.integers(0, 256, (n_windows, batch, cfg.lookback + SEQ_LEN),
                         dtype=np.int32)
  cond = np.eye(cfg.cond_dim, dtype=np.float32)[np.arange(batch) % 4]
  mask = np.ones(batch, np.float32)
  key = jax.random.key(0)
  start = time.perf_counter()
  compiled = step.lower(params, opt_state, windows, cond, mask, key).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  xla_bytes = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
               + mem.output_size_in_bytes) if mem else 0
  params, opt_state, _ = _block(compiled(params, opt_state, windows, cond,
                                         mask, key))
  start = time.perf_counter()
  _block(compiled(params, opt_state, windows, cond, mask, key))
  seconds = time.perf_counter() - start
  return batch * SEQ_LEN * n_windows / seconds, compile_s, xla_bytes


def torch_train(cfg, batch, n_windows):
  """samples/s of the reference training loop (forward, NLL, backward,
  element-wise clip, Adam) on windows of SEQ_LEN."""
  import torch
  import torch_reference as ref
  torch.set_num_threads(2)
  net = ref.SampleRNN(_ratios(cfg), cfg.n_rnn, cfg.dim, True, cfg.q_levels,
                      True, cfg.cond_dim)
  predictor = ref.Predictor(net)
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  cond = torch.eye(cfg.cond_dim)[torch.arange(batch) % 4]
  x = torch.randint(0, 256, (batch, cfg.lookback + SEQ_LEN * (n_windows + 1)))

  def window(i):
    seq = x[:, i * SEQ_LEN:i * SEQ_LEN + cfg.lookback + SEQ_LEN]
    logp = predictor(seq[:, :-1], reset=i == 0, cond_BxC=cond)
    loss = torch.nn.functional.nll_loss(
        logp.reshape(-1, cfg.q_levels), seq[:, cfg.lookback:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    for p in net.parameters():
      if p.grad is not None:  # h0 has none after the first window
        p.grad.data.clamp_(-1, 1)
    opt.step()

  window(0)  # warm-up
  start = time.perf_counter()
  for i in range(1, n_windows + 1):
    window(i)
  return batch * SEQ_LEN * n_windows / (time.perf_counter() - start)


def _ratios(cfg):
  fs = cfg.frame_sizes
  return [fs[1]] + [fs[k] // fs[k - 1] for k in range(2, len(fs))]


def jax_generate(cfg, batch, n_samples):
  """(samples/s per stream, compile s) of Generator.generate."""
  graphdef, params = model_lib.build(cfg, 0)
  gen = sampling.Generator(graphdef, params)
  cond = np.eye(cfg.cond_dim, dtype=np.float32)[np.arange(batch) % 4]
  start = time.perf_counter()
  gen.generate(cond, np.arange(batch), n_samples)
  first = time.perf_counter() - start
  start = time.perf_counter()
  gen.generate(cond, np.arange(batch) + 1000, n_samples)
  seconds = time.perf_counter() - start
  return n_samples / seconds, first - seconds


def torch_generate(cfg, batch, n_samples):
  import torch
  import torch_reference as ref
  torch.set_num_threads(2)
  net = ref.SampleRNN(_ratios(cfg), cfg.n_rnn, cfg.dim, True, cfg.q_levels,
                      True, cfg.cond_dim)
  cond = torch.eye(cfg.cond_dim)[torch.arange(batch) % 4]
  start = time.perf_counter()
  ref.generate_samples(ref.Predictor(net), batch, n_samples, cond)
  return n_samples / (time.perf_counter() - start)


def _torch_or_none(fn, *args):
  try:
    return fn(*args)
  except ImportError:
    return None


def _fmt(value, digits=0):
  return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a, b):
  return "-" if a is None or b is None else f"{a / b:.2f}x"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  load_start = os.getloadavg()[0]
  n_windows = 1 if args.quick else 2
  gen_samples = 512 if args.quick else 2048
  torch_samples = 64 if args.quick else 256
  # (model, batch, compare): the ambient model at batch 128 runs the fast
  # path only: the reference and PyTorch rows need over 16 GiB there and take
  # half an hour on 2 cores.
  train_cases = [("ambient", 16, True), ("ambient", 128, False),
                 ("dim256", 32, True), ("dim256", 128, True)]
  if args.quick:
    train_cases.remove(("ambient", 128, False))
  lines = ["# Benchmarks", "", f"Machine: {machine()}", "",
           f"Command: `python bench/run.py{' --quick' if args.quick else ''}`"
           f" ({time.strftime('%Y-%m-%d')})", "",
           "Fast = this package (tap tables, fused GRU); reference = the same "
           "package with the plain paths (embedding + conv sample input, "
           "`scan` GRU); PyTorch = `tests/torch_reference.py` run as the "
           "original code runs (eager, 2 threads). Random weights.", "",
           "## Training (samples/s through forward, backward and Adam; "
           f"windows of {SEQ_LEN})", "",
           "| model | batch | fast | reference | PyTorch | fast / PyTorch | "
           "fast / reference | compile s (fast) | XLA memory (fast) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, batch, compare in train_cases:
    cfg = MODELS[name]
    fast, compile_s, xla_bytes = jax_train(cfg, batch, n_windows)
    ref_sps = jax_train(reference(cfg), batch, n_windows)[0] if compare else None
    torch_sps = (_torch_or_none(torch_train, cfg, batch, n_windows)
                 if compare else None)
    lines.append(f"| {name} | {batch} | {_fmt(fast)} | {_fmt(ref_sps)} | "
                 f"{_fmt(torch_sps)} | {_ratio(fast, torch_sps)} | "
                 f"{_ratio(fast, ref_sps)} | {compile_s:.1f} | "
                 f"{xla_bytes / 2**20:,.0f} MiB |")
    print(lines[-1], flush=True)
  lines += ["", "## Generation (samples/s per stream; aggregate = x batch)",
            "", "| model | batch | fast | aggregate | reference | PyTorch | "
            "fast / PyTorch | compile s (fast) |",
            "|---|---|---|---|---|---|---|---|"]
  for name, cfg in MODELS.items():
    for batch in (1, 16, 128):
      fast, compile_s = jax_generate(cfg, batch, gen_samples)
      ref_sps = jax_generate(reference(cfg), batch, gen_samples // 4)[0]
      torch_sps = _torch_or_none(torch_generate, cfg, batch, torch_samples)
      lines.append(f"| {name} | {batch} | {_fmt(fast)} | "
                   f"{_fmt(fast * batch)} | {_fmt(ref_sps)} | "
                   f"{_fmt(torch_sps)} | {_ratio(fast, torch_sps)} | "
                   f"{compile_s:.1f} |")
      print(lines[-1], flush=True)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
  lines += ["", f"Peak resident memory of the whole run: {peak:,.0f} MiB. "
            f"Load average at the start {load_start:.1f}, at the end "
            f"{os.getloadavg()[0]:.1f} (above 0 means other work shared the "
            "cores; every row's JAX, reference and PyTorch numbers were "
            "measured back to back).", ""]
  with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
    f.write("\n".join(lines))


if __name__ == "__main__":
  main()
