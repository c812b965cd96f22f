"""Training and generation throughput against PyTorch, measured fairly.

Every measurement runs in a process of its own (``--worker``), one at a time:
the JAX side (this package) and the PyTorch side
(``csrnn_jax/interop/torch_reference.py``, eager, the original code's
semantics: embedding + conv sample input, weight norm, element-wise clip,
Adam; ``torch.set_num_threads(cores)``) alternate, case by case, for
``--repeats`` rounds, and the table gives the median of the rounds with the
range. The load average is recorded before every measurement. Writes
bench/RESULTS.md.

  python bench/run.py                     # everything (about 45 min, 2 cores)
  python bench/run.py --only train --repeats 3
  python bench/run.py --worker '{"side": "jax", "task": "train", ...}'

Run it on an otherwise idle machine: two jobs on the cores halve each other.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SEQ_LEN = 1024
MODELS = {"ambient": 1024, "dim256": 256}  # frame sizes (16, 16, 64), 4 classes
# (model, batch, compute dtype, training windows timed)
TRAIN_CASES = [("ambient", 16, "float32", 2), ("ambient", 16, "bfloat16", 2),
               ("ambient", 128, "float32", 1), ("ambient", 128, "bfloat16", 1),
               ("dim256", 32, "float32", 4), ("dim256", 32, "bfloat16", 4),
               ("dim256", 128, "float32", 2)]
# (model, batch, compute dtype, samples per stream; PyTorch's loop: samples)
GENERATE_CASES = [("ambient", 1, "float32", 8192, 512),
                  ("ambient", 1, "bfloat16", 8192, None),
                  ("ambient", 16, "float32", 2048, 256),
                  ("ambient", 128, "float32", 1024, None),
                  ("dim256", 1, "float32", 16384, 1024),
                  ("dim256", 16, "float32", 4096, 512),
                  ("dim256", 128, "float32", 2048, None)]


def machine() -> str:
  cpu = platform.processor() or "unknown CPU"
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


# The JAX side.

def jax_config(name, dtype):
  from csrnn_jax import model as model_lib
  return model_lib.ModelConfig(frame_sizes=(16, 16, 64), dim=MODELS[name],
                               cond_dim=4, compute_dtype=dtype)


def jax_train(name, batch, dtype, n_windows):
  import jax
  from csrnn_jax import configlib
  import numpy as np
  from csrnn_jax import model as model_lib
  from csrnn_jax import trainer
  cfg = jax_config(name, dtype)
  graphdef, params = model_lib.build(cfg, 0)
  tx = trainer.make_optimizer(configlib.TrainConfig())  # Adam 1e-3, clip 1
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  args = (rng.integers(0, 256, (n_windows, batch, cfg.lookback + SEQ_LEN),
                       dtype=np.int32),
          np.eye(4, dtype=np.float32)[np.arange(batch) % 4],
          np.ones(batch, np.float32), jax.random.key(0))
  step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
  start = time.perf_counter()
  compiled = step.lower(params, opt_state, *args).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  params, opt_state, _ = jax.block_until_ready(
      compiled(params, opt_state, *args))  # warm-up
  start = time.perf_counter()
  jax.block_until_ready(compiled(params, opt_state, *args))
  seconds = time.perf_counter() - start
  return {"samples_per_sec": batch * SEQ_LEN * n_windows / seconds,
          "compile_s": compile_s,
          "xla_mib": (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                      + mem.output_size_in_bytes) / 2**20}


def jax_generate(name, batch, dtype, n_samples):
  import numpy as np
  from csrnn_jax import model as model_lib
  from csrnn_jax import sampling
  graphdef, params = model_lib.build(jax_config(name, dtype), 0)
  gen = sampling.Generator(graphdef, params)
  cond = np.eye(4, dtype=np.float32)[np.arange(batch) % 4]
  start = time.perf_counter()
  gen.generate(cond, np.arange(batch), n_samples)
  first = time.perf_counter() - start
  start = time.perf_counter()
  gen.generate(cond, np.arange(batch) + 1000, n_samples)
  seconds = time.perf_counter() - start
  return {"samples_per_sec": n_samples / seconds,
          "compile_s": first - seconds}


# The PyTorch side.

def torch_model(name):
  import torch
  from csrnn_jax.interop import torch_reference as ref
  torch.set_num_threads(os.cpu_count())
  net = ref.SampleRNN([16, 4], 1, MODELS[name], True, 256, True, 4)
  return torch, ref, net


def torch_train(name, batch, dtype, n_windows):
  torch, ref, net = torch_model(name)
  predictor = ref.Predictor(net)
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  cond = torch.eye(4)[torch.arange(batch) % 4]
  lookback = 64
  x = torch.randint(0, 256, (batch, lookback + SEQ_LEN * (n_windows + 1)))
  autocast = dtype == "bfloat16"

  def window(i):
    seq = x[:, i * SEQ_LEN:i * SEQ_LEN + lookback + SEQ_LEN]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      logp = predictor(seq[:, :-1], reset=i == 0, cond_BxC=cond)
      loss = torch.nn.functional.nll_loss(
          logp.float().reshape(-1, 256), seq[:, lookback:].reshape(-1))
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
  return {"samples_per_sec": batch * SEQ_LEN * n_windows
          / (time.perf_counter() - start)}


def torch_generate(name, batch, dtype, n_samples):
  del dtype
  torch, ref, net = torch_model(name)
  cond = torch.eye(4)[torch.arange(batch) % 4]
  predictor = ref.Predictor(net)
  ref.generate_samples(predictor, batch, 16, cond)  # warm-up
  start = time.perf_counter()
  ref.generate_samples(predictor, batch, n_samples, cond)
  return {"samples_per_sec": n_samples / (time.perf_counter() - start)}


WORKERS = {("jax", "train"): jax_train, ("jax", "generate"): jax_generate,
           ("torch", "train"): torch_train,
           ("torch", "generate"): torch_generate}


def run_worker(spec: dict) -> dict:
  """One measurement in a fresh process; its JSON result and the load
  average before it started."""
  load = os.getloadavg()[0]
  proc = subprocess.run(
      [sys.executable, __file__, "--worker", json.dumps(spec)],
      capture_output=True, text=True, check=False)
  if proc.returncode:
    return {"error": proc.stderr.strip().splitlines()[-1:], "load": load}
  return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load}


def median_cell(results, key="samples_per_sec", digits=0):
  values = [r[key] for r in results if key in r]
  if not values:
    return "-", None
  mid = statistics.median(values)
  spread = (f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})"
            if len(values) > 1 else "")
  return f"{mid:,.{digits}f}{spread}", mid


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--only", choices=("train", "generate"))
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    spec = json.loads(args.worker)
    fn = WORKERS[(spec.pop("side"), spec.pop("task"))]
    result = fn(**spec)
    print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))
    return

  started, load_start = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()
  sections = []
  tasks = [("train", TRAIN_CASES), ("generate", GENERATE_CASES)]
  for task, cases in tasks:
    if args.only and task != args.only:
      continue
    results = {i: {"jax": [], "torch": []} for i in range(len(cases))}
    for _ in range(args.repeats):
      for i, case in enumerate(cases):
        name, batch, dtype, n = case[:4]
        results[i]["jax"].append(run_worker(dict(
            side="jax", task=task, name=name, batch=batch, dtype=dtype,
            **({"n_windows": n} if task == "train" else {"n_samples": n}))))
        torch_n = n if task == "train" else case[4]
        if torch_n:
          results[i]["torch"].append(run_worker(dict(
              side="torch", task=task, name=name, batch=batch, dtype=dtype,
              **({"n_windows": n} if task == "train"
                 else {"n_samples": torch_n}))))
        print(task, case, results[i]["jax"][-1],
              results[i]["torch"][-1] if results[i]["torch"] else "",
              flush=True)
    sections.append(format_section(task, cases, results))
  lines = ["# Benchmarks", "",
           f"Machine: {machine()}.", "",
           f"Command: `python bench/run.py{' --only ' + args.only if args.only else ''}"
           f" --repeats {args.repeats}` ({started}). Load average (1, 5, 15 "
           f"min) at the start {load_start[0]:.2f}, {load_start[1]:.2f}, "
           f"{load_start[2]:.2f}; at the end "
           f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}.", "",
           "Each number is the median of the rounds (range in brackets); "
           "every measurement ran in its own process, JAX and PyTorch "
           "alternating, nothing else on the machine. Random weights and "
           "data; TBPTT windows of 1024 samples; frame sizes (16, 16, 64), "
           "4 classes. bfloat16: this package's `model.compute_dtype`, and "
           "PyTorch's `torch.autocast('cpu', torch.bfloat16)`.", ""]
  with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
    f.write("\n".join(lines + sections))


def format_section(task, cases, results) -> str:
  if task == "train":
    head = ["## Training (samples/s through forward, backward and Adam)", "",
            "| model | batch | dtype | this package | PyTorch | ratio | "
            "compile s | XLA memory MiB | peak RSS MiB (JAX / PyTorch) | "
            "load before |", "|---|---|---|---|---|---|---|---|---|---|"]
  else:
    head = ["## Generation (samples/s per stream; x batch for the aggregate)",
            "", "| model | batch | dtype | this package | aggregate | "
            "PyTorch (its Python loop) | ratio | compile s | load before |",
            "|---|---|---|---|---|---|---|---|---|"]
  rows = []
  for i, case in enumerate(cases):
    name, batch, dtype = case[:3]
    jax_r, torch_r = results[i]["jax"], results[i]["torch"]
    ours, ours_mid = median_cell(jax_r)
    theirs, theirs_mid = median_cell(torch_r)
    ratio = (f"{ours_mid / theirs_mid:.2f}x" if ours_mid and theirs_mid
             else "-")
    compile_s = median_cell(jax_r, "compile_s", 1)[0]
    loads = [r["load"] for r in jax_r + torch_r]
    load = f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-"
    errors = [r["error"] for r in jax_r + torch_r if "error" in r]
    note = f" (failed: {errors[0]})" if errors else ""
    if task == "train":
      rss = (f"{median_cell(jax_r, 'peak_rss_mib')[0].split(' ')[0]} / "
             f"{median_cell(torch_r, 'peak_rss_mib')[0].split(' ')[0]}")
      rows.append(f"| {name} | {batch} | {dtype} | {ours} | {theirs} | "
                  f"{ratio} | {compile_s} | "
                  f"{median_cell(jax_r, 'xla_mib')[0].split(' ')[0]} | "
                  f"{rss} | {load} |{note}")
    else:
      aggregate = f"{ours_mid * batch:,.0f}" if ours_mid else "-"
      rows.append(f"| {name} | {batch} | {dtype} | {ours} | {aggregate} | "
                  f"{theirs} | {ratio} | {compile_s} | {load} |{note}")
  return "\n".join(head + rows) + "\n"


if __name__ == "__main__":
  main()
