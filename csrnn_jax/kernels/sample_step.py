"""The inner generation step: the sample-level MLP for one sample, given the
tier-2 vector, with the tap-table input kept as running sums. ``SampleMLP``
(``model.py``) runs these on its own weights; the generator calls it.

Backends (the same function; ``scan`` is the reference):

- ``scan``: every sample re-reads its FS(1) previous samples from the
  buffer and sums FS(1) table lookups (``taps.taps_input``).
- ``fused``: running per-tap sums ``acc`` (FS(1), B, dim): ``acc[k]`` holds
  what the known samples contribute to the position k steps ahead, so a
  sample's input is ``acc[0]``; a drawn sample x then adds all its FS(1)
  contributions in one lookup of a (Q, FS(1), dim) table (contiguous per x)
  and the sums shift by one.
- ``pallas``: ``fused`` with the MLP head (ReLU, hidden, ReLU, output) as
  two tiled Pallas kernels, the hidden layer and the output layer
  (``head_pallas``): compiled by Triton on NVIDIA GPUs, interpret mode
  elsewhere.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from csrnn_jax import numerics
from csrnn_jax.kernels import pallas_gpu
from csrnn_jax.numerics import dense

BACKENDS = ("scan", "fused", "pallas")


def check_backend(backend: str) -> None:
  if backend not in BACKENDS:
    raise ValueError(f"sample-step backend {backend!r} is unknown; allowed "
                     f"values: {', '.join(BACKENDS)}")


class StepTables(NamedTuple):
  """The input layer as one sample step reads it: the tap tables (FS1, Q,
  dim) and their push layout (``push_tables``)."""
  taps_LxQxD: jax.Array
  push_QxLxD: jax.Array


def push_tables(tables_LxQxD):
  """(Q, FS1, dim) with [x, k] = T_{FS1-1-k}[x]: x's contribution to the
  position k + 1 steps after it."""
  return jnp.transpose(tables_LxQxD[::-1], (1, 0, 2))


def initial_sums(tables_LxQxD, prev_BxL):
  """acc (FS1, B, dim) from the FS1 samples before the current position:
  acc[k] = sum_{j < FS1 - k} T_j[prev[:, k + j]]."""
  fs1 = tables_LxQxD.shape[0]
  rows = []
  for k in range(fs1):
    acc_BxD = jnp.zeros(prev_BxL.shape[:1] + tables_LxQxD.shape[2:],
                        tables_LxQxD.dtype)
    for j in range(fs1 - k):
      acc_BxD = acc_BxD + tables_LxQxD[j][prev_BxL[:, k + j]]
    rows.append(acc_BxD)
  return jnp.stack(rows)


def push(push_QxLxD, acc_LxBxD, x_B):
  """Advance one position after drawing x_B: shift, add x's contributions."""
  shifted = jnp.concatenate([acc_LxBxD[1:], jnp.zeros_like(acc_LxBxD[:1])])
  return shifted + jnp.swapaxes(push_QxLxD[x_B], 0, 1)


def head_jnp(features_BxD, c_BxD, w_h, b_h, w_o, b_o,
             compute_dtype: str = "float32"):
  """ReLU(features + c) -> ReLU(hidden) -> logits, for any leading shape."""
  h = jax.nn.relu(features_BxD + c_BxD)
  h = jax.nn.relu(dense(h, w_h, compute_dtype) + b_h)
  return dense(h, w_o, compute_dtype) + b_o


def head_pallas(features_BxD, c_BxD, w_h, b_h, w_o, b_o,
                compute_dtype: str = "float32"):
  """``head_jnp`` for (B, dim) rows as two tiled Pallas kernels, for any B,
  dim and Q (``pallas_gpu``): ReLU(hidden) of ReLU(features + c), then the
  logits. Each program computes one (BATCH_BLOCK, tile) block of a layer's
  output from its rows' whole input, streaming that block's weight column
  in (tile, tile) tiles, so a layer runs on (B / 16) x (N / tile) programs;
  the second layer reads the whole hidden layer, hence the two launches.
  Returns (B, Q)."""
  return pallas_gpu.run(functools.partial(_head, compute_dtype=compute_dtype),
                        features_BxD, c_BxD, w_h, b_h, w_o, b_o)


def _head(features_BxD, c_BxD, w_h, b_h, w_o, b_o, *, compute_dtype,
          compiled):
  b, d = features_BxD.shape
  q = w_o.shape[1]
  bp = pallas_gpu.round_up(b, pallas_gpu.BATCH_BLOCK)
  tile_d, tile_q = pallas_gpu.tile_size(d), pallas_gpu.tile_size(q)
  dp, qp = pallas_gpu.round_up(d, tile_d), pallas_gpu.round_up(q, tile_q)
  operand = numerics.operand_dtype(compute_dtype)
  layer = functools.partial(_dense_tiles, compute_dtype=compute_dtype,
                            compiled=compiled)
  hidden_BxD = layer(
      [pallas_gpu.pad_to(features_BxD, (bp, dp)),
       pallas_gpu.pad_to(c_BxD, (bp, dp))],
      pallas_gpu.pad_to(w_h, (dp, dp)).astype(operand),
      pallas_gpu.pad_to(b_h, (dp,)), relu=True, tile_n=tile_d)
  logits_BxQ = layer([hidden_BxD],
                     pallas_gpu.pad_to(w_o, (dp, qp)).astype(operand),
                     pallas_gpu.pad_to(b_o, (qp,)), relu=False, tile_n=tile_q)
  return logits_BxQ[:b, :q]


def _dense_tiles(inputs, w_IxO, b_O, *, relu, tile_n, compute_dtype,
                 compiled):
  """One layer as a kernel: act(ReLU(sum of ``inputs``) @ w + b), act ReLU
  with ``relu``. ``inputs`` (B, K) with B a multiple of BATCH_BLOCK and K
  of the input's tile; N a multiple of ``tile_n``."""
  rows = pallas_gpu.BATCH_BLOCK
  bp, kp = inputs[0].shape
  n = w_IxO.shape[1]
  tile_k = pallas_gpu.tile_size(kp)

  def kernel(*refs):
    input_refs, (w_ref, b_ref, out_ref) = refs[:len(inputs)], refs[-3:]

    def k_tile(k, acc):
      x = input_refs[0][:, pl.ds(k * tile_k, tile_k)]
      for ref in input_refs[1:]:
        x = x + ref[:, pl.ds(k * tile_k, tile_k)]
      return acc + numerics.matmul(jax.nn.relu(x),
                                   w_ref[pl.ds(k * tile_k, tile_k), :],
                                   compute_dtype)

    acc = jax.lax.fori_loop(0, kp // tile_k, k_tile,
                            jnp.zeros((rows, tile_n), jnp.float32))
    y = acc + b_ref[...]
    out_ref[...] = jax.nn.relu(y) if relu else y

  return pallas_gpu.call(
      kernel, compiled=compiled, grid=(bp // rows, n // tile_n),
      out_shape=jax.ShapeDtypeStruct((bp, n), jnp.float32),
      in_specs=[pl.BlockSpec((rows, kp), lambda i, j: (i, 0))] * len(inputs)
      + [pl.BlockSpec((kp, tile_n), lambda i, j: (0, j)),
         pl.BlockSpec((1, tile_n), lambda i, j: (0, j))],
      out_specs=pl.BlockSpec((rows, tile_n), lambda i, j: (i, j)))(
          *inputs, w_IxO, b_O[None])
