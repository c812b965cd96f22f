"""GRU with PyTorch's equations, one layer over a sequence, three backends.

    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))   # b_hn inside the reset gate
    h' = (1 - z) * n + z * h

Weights are stored for ``x @ W``: ``w_ih`` (D_in, 3H), ``w_hh`` (H, 3H), biases
(3H,), gate order r, z, n (as torch.nn.GRU). flax's GRUCell has no b_hn, so it
cannot express the reference and is not used.

Backends of ``gru_sequence``, all the same function:

- ``scan``: the reference; a plain ``lax.scan`` of the whole cell, autodiff.
- ``fused``: the input projection for all T steps is one matmul before the
  scan; a ``custom_vjp`` whose forward saves only the hidden states (T, B, H)
  and whose backward is one reverse scan that recomputes the gates. Less
  memory than autodiff's saved gates, and one big matmul for the input side.
- ``pallas``: ``fused`` with the recurrence as one tiled Pallas kernel per
  window (``kernels/recurrence.py``): compiled by Triton on NVIDIA GPUs,
  interpret mode elsewhere (tests). Its backward is the fused reverse scan.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from csrnn_jax import numerics
from csrnn_jax.kernels import recurrence
from csrnn_jax.numerics import dense

BACKENDS = ("scan", "fused", "pallas")


def _gate_values(xr, xz, xn, hr, hz, hn):
  """(r, z, n, hn) from each gate's input and hidden projections (biases
  included), any shape."""
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return r, z, n, hn


def _gates(xp_Bx3H, hp_Bx3H):
  """(r, z, n, hn) from the input and hidden projections (B, 3H)."""
  return _gate_values(*jnp.split(xp_Bx3H, 3, axis=-1),
                      *jnp.split(hp_Bx3H, 3, axis=-1))


def _new_state(z, n, h):
  return (1.0 - z) * n + z * h


def gru_cell_from_projection(xp_Bx3H, h_BxH, w_hh, b_hh, compute_dtype):
  """One step given the input projection ``x W_ih + b_ih`` (B, 3H)."""
  _, z, n, _ = _gates(xp_Bx3H, dense(h_BxH, w_hh, compute_dtype) + b_hh)
  return _new_state(z, n, h_BxH)


def gru_cell(x_BxD, h_BxH, w_ih, w_hh, b_ih, b_hh,
             compute_dtype: str = "float32"):
  """One GRU step: (B, D_in), (B, H) -> (B, H). ``compute_dtype``: the
  matmuls' operands (``numerics``)."""
  return gru_cell_from_projection(dense(x_BxD, w_ih, compute_dtype) + b_ih,
                                  h_BxH, w_hh, b_hh, compute_dtype)


def _scan_reference(x_BxTxD, h0_BxH, w_ih, w_hh, b_ih, b_hh, compute_dtype):
  def step(h_BxH, x_BxD):
    h_BxH = gru_cell(x_BxD, h_BxH, w_ih, w_hh, b_ih, b_hh, compute_dtype)
    return h_BxH, h_BxH

  _, h_TxBxH = jax.lax.scan(step, h0_BxH, jnp.swapaxes(x_BxTxD, 0, 1))
  return h_TxBxH


def _recurrence_scan(xp_TxBx3H, h0_BxH, w_hh, b_hh, compute_dtype):
  """Hidden states (T, B, H) given all input projections."""
  def step(h_BxH, xp_Bx3H):
    h_BxH = gru_cell_from_projection(xp_Bx3H, h_BxH, w_hh, b_hh,
                                     compute_dtype)
    return h_BxH, h_BxH

  _, h_TxBxH = jax.lax.scan(step, h0_BxH, xp_TxBx3H)
  return h_TxBxH


def _cell_tiles(xp_tiles, hp_tiles, state_tiles):
  """One step on a column tile of the state (``recurrence.recurrence``)."""
  _, z, n, _ = _gate_values(*xp_tiles, *hp_tiles)
  return (_new_state(z, n, state_tiles[0]),)


def _recurrence_pallas(xp_TxBx3H, h0_BxH, w_hh, b_hh, compute_dtype):
  """The recurrence as one tiled Pallas kernel (``kernels/recurrence.py``)."""
  return recurrence.recurrence(xp_TxBx3H, (h0_BxH,), w_hh, b_hh,
                               _cell_tiles, compute_dtype)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused(xp_TxBx3H, h0_BxH, w_hh, b_hh, recurrence_fn, compute_dtype,
           precision):
  del precision  # the backward's (``numerics``)
  return recurrence_fn(xp_TxBx3H, h0_BxH, w_hh, b_hh, compute_dtype)


def _fused_fwd(xp_TxBx3H, h0_BxH, w_hh, b_hh, recurrence_fn, compute_dtype,
               precision):
  del precision
  h_TxBxH = recurrence_fn(xp_TxBx3H, h0_BxH, w_hh, b_hh, compute_dtype)
  return h_TxBxH, (xp_TxBx3H, h0_BxH, w_hh, b_hh, h_TxBxH)


def _fused_bwd(recurrence_fn, compute_dtype, precision, saved, dh_TxBxH):
  del recurrence_fn
  with numerics.matmul_precision_scope(precision):
    return _fused_grads(compute_dtype, saved, dh_TxBxH)


def _fused_grads(compute_dtype, saved, dh_TxBxH):
  """One reverse scan that pushes the gradient through each step. Only
  ``dhp @ w_hh.T`` must run step by step: the hidden projections of all
  steps (from the saved states) are one GEMM before the scan, and the
  weight gradient ``sum_t h_{t-1}^T dhp_t`` one GEMM after it."""
  xp_TxBx3H, h0_BxH, w_hh, b_hh, h_TxBxH = saved
  hprev_TxBxH = jnp.concatenate([h0_BxH[None], h_TxBxH[:-1]], axis=0)
  hp_TxBx3H = dense(hprev_TxBxH, w_hh, compute_dtype) + b_hh
  # Transposed once, outside the scan: inside, XLA would fold the transpose
  # into every step's matmul, and the transposed-operand GEMM is slower.
  w_hh_T = jnp.transpose(w_hh)

  def step(dh_next_BxH, xs):
    xp_Bx3H, hp_Bx3H, hprev_BxH, dh_out_BxH = xs
    dh_BxH = dh_next_BxH + dh_out_BxH
    r, z, n, hn = _gates(xp_Bx3H, hp_Bx3H)
    dn = dh_BxH * (1.0 - z)
    dz = dh_BxH * (hprev_BxH - n)
    dn_pre = dn * (1.0 - n * n)
    dr = dn_pre * hn
    dr_pre = dr * r * (1.0 - r)
    dz_pre = dz * z * (1.0 - z)
    dxp_Bx3H = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    dhp_Bx3H = jnp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
    dh_prev_BxH = dh_BxH * z + dense(dhp_Bx3H, w_hh_T, compute_dtype)
    return dh_prev_BxH, (dxp_Bx3H, dhp_Bx3H)

  dh0_BxH, (dxp_TxBx3H, dhp_TxBx3H) = jax.lax.scan(
      step, jnp.zeros_like(h0_BxH),
      (xp_TxBx3H, hp_TxBx3H, hprev_TxBxH, dh_TxBxH), reverse=True)
  t, b, h = hprev_TxBxH.shape
  dw_hh = dense(hprev_TxBxH.reshape(t * b, h).T,
                dhp_TxBx3H.reshape(t * b, 3 * h), compute_dtype)
  db_hh = jnp.sum(dhp_TxBx3H, axis=(0, 1))
  return dxp_TxBx3H, dh0_BxH, dw_hh, db_hh


_fused.defvjp(_fused_fwd, _fused_bwd)


def gru_sequence(x_BxTxD, h0_BxH, w_ih, w_hh, b_ih, b_hh,
                 backend: str = "fused", compute_dtype: str = "float32"):
  """One GRU layer over a sequence: returns (h_BxTxH, h_last_BxH).
  ``compute_dtype``: the matmuls' operands, forward and backward
  (``numerics``). One step (T = 1, a generation step) is the cell itself,
  whatever the backend: no loop to run."""
  if backend not in BACKENDS:
    raise ValueError(f"GRU backend {backend!r} is unknown; allowed values: "
                     f"{', '.join(BACKENDS)}")
  if x_BxTxD.shape[1] == 1:
    h_BxH = gru_cell(x_BxTxD[:, 0], h0_BxH, w_ih, w_hh, b_ih, b_hh,
                     compute_dtype)
    return h_BxH[:, None], h_BxH
  if backend == "scan":
    h_TxBxH = _scan_reference(x_BxTxD, h0_BxH, w_ih, w_hh, b_ih, b_hh,
                              compute_dtype)
  else:  # fused, pallas
    xp_TxBx3H = jnp.swapaxes(dense(x_BxTxD, w_ih, compute_dtype) + b_ih, 0, 1)
    recurrence_fn = (_recurrence_pallas if backend == "pallas"
                     else _recurrence_scan)
    h_TxBxH = _fused(xp_TxBx3H, h0_BxH, w_hh, b_hh, recurrence_fn,
                     compute_dtype, numerics.ambient_precision())
  return jnp.swapaxes(h_TxBxH, 0, 1), h_TxBxH[-1]
