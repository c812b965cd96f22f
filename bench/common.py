"""Shared by the benchmarks: the machine description and model sizes."""
from __future__ import annotations

import os
import platform
import time

import jax

from csrnn_jax import model as model_lib

MODELS = {
    "ambient (dim 1024)": model_lib.ModelConfig(
        frame_sizes=(16, 16, 64), dim=1024, cond_dim=4),
    "dim 256": model_lib.ModelConfig(
        frame_sizes=(16, 16, 64), dim=256, cond_dim=4),
}


def machine() -> str:
  cpu = "unknown CPU"
  if os.path.exists("/proc/cpuinfo"):
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  devices = ", ".join(str(d) for d in jax.devices())
  return (f"{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on "
          f"{devices}; Python {platform.python_version()}")


def timed(fn, *args):
  """(result, seconds) with the result blocked on."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start
