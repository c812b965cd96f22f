"""The one-shot GPU check's parts (``bench/device_check.sh`` runs each in its
own process, under its own timeout, and then ``report``).

  info      the card, driver and versions
  parity    every backend against its reference, on the device
  train     the ambient train step at batch 128 per GRU backend (and TF32,
            bfloat16): compile time, time per window
  generate  ambient generation at batch 1 and 128 per sample-step backend:
            compile time, samples/s per stream
  report    bench/RESULTS_gpu.md from what the parts recorded; a part that
            did not run or did not finish reads "not measured"

Each part appends its rows to ``--results`` (JSON) as it measures them, so a
part cut short by its timeout keeps what it finished. ``--small`` runs every
part on a tiny model (a smoke test of the script, e.g. on a CPU).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin",
            "jax-cuda12-pjrt", "jax-cuda13-pjrt", "flax", "optax",
            "orbax-checkpoint", "numpy")
# Targets of an H100/H200-class card (the GPU path's issue).
TRAIN_TARGET_MS = 20.0  # ambient train step, batch 128
GENERATE_TARGETS = {1: 50_000, 128: 16_000}  # samples/s per stream
# (GRU backend, matmul precision, compute dtype), most wanted first: the
# timeout cuts the last ones.
TRAIN_CASES = [("fused", "highest", "float32"), ("pallas", "highest", "float32"),
               ("fused", "default", "float32"), ("pallas", "default", "float32"),
               ("fused", "highest", "bfloat16"), ("scan", "highest", "float32")]
GENERATE_BACKENDS = ("fused", "pallas", "scan")
SECTIONS = ("info", "parity", "train", "generate")


def _sizes(small: bool) -> dict:
  """The ambient model (configs/ambient.py) or, with --small, a tiny one."""
  if small:
    return dict(frame_sizes=(4, 4, 16), dim=32, batch=4, seq_len=64,
                windows=2, gen_batches=(1, 4), gen_samples=256)
  return dict(frame_sizes=(16, 16, 64), dim=1024, batch=128, seq_len=1024,
              windows=4, gen_batches=(1, 128), gen_samples=8192)


class Results:
  """The parts' rows in a JSON file: {section: [row, ...]}; saved after
  every row."""

  def __init__(self, path: str):
    self.path = path
    self.data = {}
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        self.data = json.load(f)

  def add(self, section: str, row: dict) -> None:
    self.data.setdefault(section, []).append(row)
    with open(self.path, "w", encoding="utf-8") as f:
      json.dump(self.data, f, indent=1)


def _model_config(sizes, **fields):
  from csrnn_jax import model as M
  return M.ModelConfig(frame_sizes=sizes["frame_sizes"], dim=sizes["dim"],
                       cond_dim=4, **fields)


def _version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def part_info(results: Results, small: bool) -> None:
  import jax
  devices = jax.devices()
  if devices[0].platform != "gpu" and not small:
    raise SystemExit(f"no GPU visible: jax.devices() = {devices}; install "
                     "jax with its CUDA plugin (docs/gpu.md)")
  try:
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
         "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
        check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError) as e:
    smi = f"nvidia-smi failed: {e}"
  results.add("info", {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "nvidia_smi": smi, "devices": [str(d) for d in devices],
      "device_kind": devices[0].device_kind, "python": platform.python_version(),
      "packages": {p: v for p in PACKAGES if (v := _version(p))},
      "small": small})


def _max_error(a, b, relative: bool = False) -> float:
  import jax
  worst = 0.0
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = float(np.abs(y).max()) if relative else 1.0
    worst = max(worst, float(np.abs(x - y).max()) / max(scale, 1e-30))
  return worst


def _layer_parity(cell: str, b: int, t: int, h: int):
  """(value error, gradient error relative to each gradient's scale) of a
  layer's fused and pallas backends against scan."""
  import jax
  import jax.numpy as jnp
  from csrnn_jax.kernels import gru, lstm
  gates, sequence = ((3, gru.gru_sequence) if cell == "gru"
                     else (4, lstm.lstm_sequence))
  k = jax.random.split(jax.random.key(0), 7)
  h0 = jax.random.normal(k[1], (b, h))
  args = (jax.random.normal(k[0], (b, t, h)),
          (h0, jax.random.normal(k[6], (b, h))) if cell == "lstm" else h0,
          jax.random.normal(k[2], (h, gates * h)) / np.sqrt(h),
          jax.random.normal(k[3], (h, gates * h)) / np.sqrt(h),
          0.1 * jax.random.normal(k[4], (gates * h,)),
          0.1 * jax.random.normal(k[5], (gates * h,)))

  def run(backend):
    def loss(*a):
      out = sequence(*a, backend=backend)
      return sum(jnp.sum(jnp.sin(jnp.arange(x.size).reshape(x.shape)) * x)
                 for x in jax.tree_util.tree_leaves(out)), out
    return jax.jit(jax.grad(loss, argnums=range(6), has_aux=True))(*args)

  grads_ref, out_ref = run("scan")
  for backend in ("fused", "pallas"):
    grads, out = run(backend)
    yield backend, _max_error(out, out_ref), _max_error(grads, grads_ref, True)


def part_parity(results: Results, small: bool) -> None:
  """Every backend against its reference on the device, at matmul precision
  "highest" (the tests' tolerances are argued for float32 products). A
  float32 sum of K terms in another order moves by up to about K 2^-24 of
  the terms' magnitudes: with K up to 3 x 1024 here, 1e-4 is the bar (the
  CPU tests, at K <= 40, hold 1e-5)."""
  import jax
  from csrnn_jax import model as M
  from csrnn_jax import sampling
  from csrnn_jax.kernels import sample_step
  tolerance = 1e-4
  layer_shapes = [(3, 5, 96)] + ([] if small else [(128, 64, 1024)])
  with jax.default_matmul_precision("highest"):
    for cell in ("gru", "lstm"):
      for b, t, h in layer_shapes:
        for backend, err, grad_err in _layer_parity(cell, b, t, h):
          results.add("parity", {
              "what": f"{cell} layer, B={b} T={t} H={h}", "backend": backend,
              "reference": "scan", "value_error": err,
              "grad_error": grad_err,
              "ok": err <= tolerance and grad_err <= tolerance})
    head_shapes = [(3, 96, 100)] + ([] if small else [(1, 1024, 256),
                                                     (128, 1024, 256)])
    for b, d, q in head_shapes:
      k = jax.random.split(jax.random.key(1), 6)
      args = (jax.random.normal(k[0], (b, d)), jax.random.normal(k[1], (b, d)),
              jax.random.normal(k[2], (d, d)) / np.sqrt(d),
              jax.random.normal(k[3], (d,)),
              jax.random.normal(k[4], (d, q)) / np.sqrt(d),
              jax.random.normal(k[5], (q,)))
      err = _max_error(jax.jit(sample_step.head_pallas)(*args),
                       jax.jit(sample_step.head_jnp)(*args))
      results.add("parity", {"what": f"sample head, B={b} dim={d} Q={q}",
                             "backend": "pallas", "reference": "jnp",
                             "value_error": err, "grad_error": None,
                             "ok": err <= tolerance})
  # Generation: the same seeds through each sample-step backend. On a GPU a
  # logit that moves by 1e-6 may flip a draw, after which the rows differ:
  # the share of equal samples is reported, not required.
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=96, cond_dim=4)
  graphdef, params = M.build(cfg)
  gen = sampling.Generator(graphdef, params)
  cond = np.eye(4, dtype=np.float32)[[0, 1, 2]]
  outs = {backend: gen.generate(
      cond, [1, 2, 3], 512, options=sampling.SamplingOptions(backend=backend))
          for backend in GENERATE_BACKENDS}
  for backend in ("fused", "pallas"):
    same = float(np.mean(outs[backend][0] == outs["scan"][0]))
    first = int(np.argmin(np.all(outs[backend][0] == outs["scan"][0], 0))
                if same < 1 else 512)
    err = float(np.abs(outs[backend][1][:, :first]
                       - outs["scan"][1][:, :first]).max()) if first else 0.0
    results.add("parity", {
        "what": "generation, dim 96, 3 rows x 512 samples",
        "backend": backend, "reference": "scan",
        "value_error": err, "grad_error": None, "ok": err <= tolerance,
        "note": f"{same:.1%} of samples equal; log-prob error over the "
                f"first {first} (before any draw differs)"})


def part_train(results: Results, small: bool) -> None:
  import jax
  import jax.numpy as jnp
  from csrnn_jax import configlib, model as M, trainer
  sizes = _sizes(small)
  train_cfg = configlib.TrainConfig()
  b, n = sizes["batch"], sizes["windows"]
  for backend, precision, dtype in TRAIN_CASES:
    cfg = _model_config(sizes, gru_backend=backend, matmul_precision=precision,
                        compute_dtype=dtype)
    graphdef, params = M.build(cfg)
    tx = trainer.make_optimizer(train_cfg)
    opt_state = tx.init(params)
    step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
    rng = np.random.default_rng(0)
    windows = jnp.asarray(rng.integers(
        0, cfg.q_levels, (n, b, sizes["seq_len"] + cfg.lookback)), jnp.int32)
    cond = jnp.asarray(np.eye(4, dtype=np.float32)[rng.integers(0, 4, b)])
    mask, key = jnp.ones((b,), jnp.float32), jax.random.key(0)
    start = time.perf_counter()
    params, opt_state, metrics = step(params, opt_state, windows, cond, mask,
                                      key)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    times = []
    for _ in range(3):
      start = time.perf_counter()
      params, opt_state, metrics = step(params, opt_state, windows, cond,
                                        mask, key)
      jax.block_until_ready(metrics)
      times.append((time.perf_counter() - start) / n)
    per_window = float(np.median(times))
    results.add("train", {
        "gru_backend": backend, "matmul_precision": precision,
        "compute_dtype": dtype, "batch": b, "dim": sizes["dim"],
        "ms_per_step": 1e3 * per_window,
        "samples_per_s": b * sizes["seq_len"] / per_window,
        "compile_s": first - per_window * n,
        "bits": float(np.asarray(metrics["bits"])[-1])})


def part_generate(results: Results, small: bool) -> None:
  from csrnn_jax import model as M, sampling
  sizes = _sizes(small)
  cfg = _model_config(sizes)
  graphdef, params = M.build(cfg)
  gen = sampling.Generator(graphdef, params)
  samples = sizes["gen_samples"]
  for batch in sizes["gen_batches"]:
    cond = np.eye(4, dtype=np.float32)[np.arange(batch) % 4]
    seeds = list(range(batch))
    for backend in GENERATE_BACKENDS:
      options = sampling.SamplingOptions(backend=backend)
      start = time.perf_counter()
      gen.generate(cond, seeds, samples, options=options)
      first = time.perf_counter() - start
      start = time.perf_counter()
      x, _ = gen.generate(cond, seeds, samples, options=options)
      np.asarray(x)
      run = time.perf_counter() - start
      results.add("generate", {
          "backend": backend, "batch": batch, "dim": sizes["dim"],
          "samples_per_s_per_stream": samples / run,
          "compile_s": first - run, "samples": samples})


def _fmt(value, digits=0) -> str:
  if value is None:
    return "-"
  return f"{value:,.{digits}f}"


def report(results: Results, out: str, log: str | None) -> None:
  """RESULTS_gpu.md from the recorded rows; "not measured" where none."""
  d = results.data
  info = (d.get("info") or [{}])[-1]
  small = info.get("small", False)
  lines = ["# GPU results", ""]
  if not info:
    lines += ["Not measured: no GPU has run `bench/device_check.sh` yet. The "
              "rows below are what it measures; `docs/gpu.md` has the "
              "expected launch counts worked out on paper.", ""]
  else:
    lines += [
        f"Card: {info.get('nvidia_smi')} ({info.get('device_kind')}). "
        f"Date: {info.get('date')}. Python {info.get('python')}; "
        + ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items())
        + ".", "",
        "Command: `bash bench/device_check.sh`"
        + (" --small (a tiny model: a smoke test, not the ambient numbers)"
           if small else "") + ".", ""]
  lines += ["## Every backend against its reference (matmul precision "
            "highest)", "",
            "| what | backend | reference | max value error | max gradient "
            "error / scale | within 1e-4 | note |", "|---|---|---|---|---|---|---|"]
  rows = d.get("parity") or []
  for r in rows:
    lines.append(f"| {r['what']} | {r['backend']} | {r['reference']} | "
                 f"{r['value_error']:.2e} | "
                 + ("-" if r["grad_error"] is None else f"{r['grad_error']:.2e}")
                 + f" | {'yes' if r['ok'] else 'NO'} | {r.get('note', '')} |")
  if not rows:
    lines.append("| GRU, LSTM layers; sample head; generation | fused, pallas "
                 "| scan / jnp | not measured | not measured | - | |")
  model = "Tiny model (--small)" if small else "Ambient model (dim 1024)"
  lines += ["", f"## {model}: train step at batch "
            f"{_sizes(small)['batch']} (target for the ambient model: under "
            f"{TRAIN_TARGET_MS:.0f} ms)", "",
            "| GRU backend | matmul precision | compute dtype | ms per step "
            "(one window) | samples/s | compile s |", "|---|---|---|---|---|---|"]
  done = {(r["gru_backend"], r["matmul_precision"], r["compute_dtype"]): r
          for r in d.get("train") or []}
  for case in TRAIN_CASES:
    r = done.get(case)
    lines.append("| " + " | ".join(case) + " | " + (
        f"{r['ms_per_step']:.1f} | {_fmt(r['samples_per_s'])} | "
        f"{r['compile_s']:.1f} |" if r else "not measured | - | - |"))
  lines += ["", f"## {model}: generation (targets for the ambient model: "
            + ", ".join(f"batch {b} >= {t:,} samples/s per stream"
                        for b, t in GENERATE_TARGETS.items()) + ")", "",
            "| sample-step backend | batch | samples/s per stream | aggregate "
            "| compile s |", "|---|---|---|---|---|"]
  done = {(r["backend"], r["batch"]): r for r in d.get("generate") or []}
  for batch in _sizes(small)["gen_batches"]:
    for backend in GENERATE_BACKENDS:
      r = done.get((backend, batch))
      lines.append(f"| {backend} | {batch} | " + (
          f"{_fmt(r['samples_per_s_per_stream'])} | "
          f"{_fmt(r['samples_per_s_per_stream'] * batch)} | "
          f"{r['compile_s']:.1f} |" if r else "not measured | - | - |"))
  lines += ["", "## What `auto` picks", ""]
  train = [r for r in d.get("train") or []
           if r["matmul_precision"] == "highest"
           and r["compute_dtype"] == "float32"]
  if train and not small:
    best = min(train, key=lambda r: r["ms_per_step"])
    lines.append(f"Fastest GRU backend measured here: `{best['gru_backend']}`"
                 f" ({best['ms_per_step']:.1f} ms). `model.gru_backend=auto` "
                 "resolves to `fused` (`ModelConfig.resolved_gru_backend`) "
                 "until these numbers say otherwise on a card.")
  else:
    lines.append("No GPU numbers: `model.gru_backend=auto` stays `fused` "
                 "(the backend measured fastest, on the CPU), and generation "
                 "keeps its default sample-step backend `fused`.")
  if log and os.path.exists(log):
    with open(log, encoding="utf-8") as f:
      problems = [line.strip() for line in f if line.strip()]
    if problems:
      lines += ["", "## Parts that did not finish", ""]
      lines += [f"- {p}" for p in problems]
  with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("part", choices=SECTIONS + ("report",))
  parser.add_argument("--results", required=True, help="JSON rows file")
  parser.add_argument("--small", action="store_true",
                      help="a tiny model (smoke test of this script)")
  parser.add_argument("--out", default=os.path.join(HERE, "RESULTS_gpu.md"))
  parser.add_argument("--log", help="the parts' failures, for the report")
  args = parser.parse_args(argv)
  results = Results(args.results)
  if args.part == "report":
    report(results, args.out, args.log)
    return
  {"info": part_info, "parity": part_parity, "train": part_train,
   "generate": part_generate}[args.part](results, args.small)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(HERE))
  main()
