"""The inner generation step: the sample-level MLP for one sample, given the
tier-2 vector, with the tap-table input kept as running sums.

Backends (the same function; ``scan`` is the reference):

- ``scan``: every sample re-reads its FS(1) previous samples from the
  buffer and sums FS(1) table lookups (``taps.taps_input``).
- ``fused``: running per-tap sums ``acc`` (FS(1), B, dim): ``acc[k]`` holds
  what the known samples contribute to the position k steps ahead, so a
  sample's input is ``acc[0]``; a drawn sample x then adds all its FS(1)
  contributions in one lookup of a (Q, FS(1), dim) table (contiguous per x)
  and the sums shift by one (DESIGN §5).
- ``pallas``: ``fused`` with the MLP head (ReLU, hidden, ReLU, output) as a
  Pallas kernel with its weights resident; interpret mode off GPU/TPU.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from csrnn_jax.kernels import taps
from csrnn_jax.numerics import dense

BACKENDS = ("scan", "fused", "pallas")


def check_backend(backend: str) -> None:
  if backend not in BACKENDS:
    raise ValueError(f"sample-step backend {backend!r} is unknown; allowed "
                     f"values: {', '.join(BACKENDS)}")


def push_tables(tables_FxQxD):
  """(Q, FS1, dim) with [x, k] = T_{FS1-1-k}[x]: x's contribution to the
  position k + 1 steps after it."""
  return jnp.transpose(tables_FxQxD[::-1], (1, 0, 2))


def initial_sums(tables_FxQxD, prev_BxF):
  """acc (FS1, B, dim) from the FS1 samples before the current position:
  acc[k] = sum_{j < FS1 - k} T_j[prev[:, k + j]]."""
  fs1 = tables_FxQxD.shape[0]
  rows = []
  for k in range(fs1):
    acc_BxD = jnp.zeros(prev_BxF.shape[:1] + tables_FxQxD.shape[2:],
                        tables_FxQxD.dtype)
    for j in range(fs1 - k):
      acc_BxD = acc_BxD + tables_FxQxD[j][prev_BxF[:, k + j]]
    rows.append(acc_BxD)
  return jnp.stack(rows)


def push(push_QxFxD, acc_FxBxD, x_B):
  """Advance one position after drawing x_B: shift, add x's contributions."""
  shifted = jnp.concatenate([acc_FxBxD[1:], jnp.zeros_like(acc_FxBxD[:1])])
  return shifted + jnp.swapaxes(push_QxFxD[x_B], 0, 1)


def scan_features(tables_FxQxD, prev_BxF):
  """Reference input of one sample from its FS1 previous samples: (B, dim)."""
  return taps.taps_input(tables_FxQxD, prev_BxF)[:, 0]


def head_jnp(features_BxD, c_BxD, w_h, b_h, w_o, b_o,
             compute_dtype: str = "float32"):
  """ReLU(features + c) -> ReLU(hidden) -> logits, for any leading shape."""
  h = jax.nn.relu(features_BxD + c_BxD)
  h = jax.nn.relu(dense(h, w_h, compute_dtype) + b_h)
  return dense(h, w_o, compute_dtype) + b_o


def head_pallas(features_BxD, c_BxD, w_h, b_h, w_o, b_o,
                compute_dtype: str = "float32"):
  """``head_jnp`` as one Pallas kernel (whole arrays as one block)."""
  from jax.experimental import pallas as pl

  def kernel(f_ref, c_ref, wh_ref, bh_ref, wo_ref, bo_ref, out_ref):
    out_ref[...] = head_jnp(f_ref[...], c_ref[...], wh_ref[...], bh_ref[...],
                            wo_ref[...], bo_ref[...], compute_dtype)

  b, q = features_BxD.shape[0], w_o.shape[1]
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((b, q), features_BxD.dtype),
      interpret=jax.default_backend() not in ("gpu", "tpu"))(
          features_BxD, c_BxD, w_h, b_h[None], w_o, b_o[None])
