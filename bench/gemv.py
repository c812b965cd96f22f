"""Batch-1 generation is a chain of GEMVs: how fast this CPU streams a
weight matrix through each way XLA can compute one (bench/RESULTS.md, the
generation notes).

    python bench/gemv.py   # about 20 s

The matrix is the ambient model's tier-2 upsampling, dim x (16 dim) with
dim = 1024 (64 MB in float32, 32 MB in bfloat16), read once per tier-2
frame. Prints the median of 20 calls and the effective read bandwidth of
each form, with the load average before the run.
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

DIM = 1024


def median_ms(fn, *args, calls=20):
  fn(*args).block_until_ready()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn(*args).block_until_ready()
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def main():
  print(f"load average before: {os.getloadavg()[0]:.2f}")
  rng = np.random.default_rng(0)
  w_DxE = jnp.asarray(rng.standard_normal((DIM, 16 * DIM), np.float32))
  x_D = jnp.asarray(rng.standard_normal(DIM, np.float32))
  w16_DxE = w_DxE.astype(jnp.bfloat16)
  w16_ExD = w16_DxE.T.copy()
  forms = {
      "float32 dot": (lambda w, x: x @ w, w_DxE),
      "bfloat16 dot (float32 results)": (
          lambda w, x: jnp.dot(x.astype(jnp.bfloat16), w,
                               preferred_element_type=jnp.float32), w16_DxE),
      "bfloat16 weights, fused convert-multiply-reduce": (
          lambda w, x: jnp.sum(w.astype(jnp.float32) * x[None, :], axis=1),
          w16_ExD),
  }
  print("| form | ms per GEMV | GB/s of weights |")
  print("|---|---|---|")
  for name, (fn, w) in forms.items():
    ms = median_ms(jax.jit(fn), w, x_D)
    print(f"| {name} | {ms:.2f} | {w.nbytes / ms / 1e6:.1f} |")


if __name__ == "__main__":
  main()
