"""GRU with PyTorch's equations, one layer over a sequence, three backends.

    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))   # b_hn inside the reset gate
    h' = (1 - z) * n + z * h

Weights are stored for ``x @ W``: ``w_ih`` (I, 3D), ``w_hh`` (D, 3D), biases
(3D,), gate order r, z, n (as torch.nn.GRU). flax's GRUCell has no b_hn, so it
cannot express the reference and is not used.

Backends of ``gru_sequence``, all the same function:

- ``scan``: the reference; a plain ``lax.scan`` of the whole cell, autodiff.
- ``fused``: the input projection for all T steps is one matmul before the
  scan; a ``custom_vjp`` whose forward saves only the hidden states (T, B, D)
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


def _gates(xp_Bx3D, hp_Bx3D):
  """(r, z, n, hn) from the input and hidden projections (B, 3D)."""
  return _gate_values(*jnp.split(xp_Bx3D, 3, axis=-1),
                      *jnp.split(hp_Bx3D, 3, axis=-1))


def _new_state(z, n, h):
  return (1.0 - z) * n + z * h


def gru_cell_from_projection(xp_Bx3D, h_BxD, w_hh, b_hh, compute_dtype):
  """One step given the input projection ``x W_ih + b_ih`` (B, 3D)."""
  _, z, n, _ = _gates(xp_Bx3D, dense(h_BxD, w_hh, compute_dtype) + b_hh)
  return _new_state(z, n, h_BxD)


def gru_cell(x_BxI, h_BxD, w_ih, w_hh, b_ih, b_hh,
             compute_dtype: str = "float32"):
  """One GRU step: (B, I), (B, D) -> (B, D). ``compute_dtype``: the
  matmuls' operands (``numerics``)."""
  return gru_cell_from_projection(dense(x_BxI, w_ih, compute_dtype) + b_ih,
                                  h_BxD, w_hh, b_hh, compute_dtype)


def _scan_reference(x_BxTxI, h0_BxD, w_ih, w_hh, b_ih, b_hh, compute_dtype):
  def step(h_BxD, x_BxI):
    h_BxD = gru_cell(x_BxI, h_BxD, w_ih, w_hh, b_ih, b_hh, compute_dtype)
    return h_BxD, h_BxD

  _, h_TxBxD = jax.lax.scan(step, h0_BxD, jnp.swapaxes(x_BxTxI, 0, 1))
  return h_TxBxD


def _recurrence_scan(xp_TxBx3D, h0_BxD, w_hh, b_hh, compute_dtype):
  """Hidden states (T, B, D) given all input projections."""
  def step(h_BxD, xp_Bx3D):
    h_BxD = gru_cell_from_projection(xp_Bx3D, h_BxD, w_hh, b_hh,
                                     compute_dtype)
    return h_BxD, h_BxD

  _, h_TxBxD = jax.lax.scan(step, h0_BxD, xp_TxBx3D)
  return h_TxBxD


def _cell_tiles(xp_tiles, hp_tiles, state_tiles):
  """One step on a column tile of the state (``recurrence.recurrence``)."""
  _, z, n, _ = _gate_values(*xp_tiles, *hp_tiles)
  return (_new_state(z, n, state_tiles[0]),)


def _recurrence_pallas(xp_TxBx3D, h0_BxD, w_hh, b_hh, compute_dtype):
  """The recurrence as one tiled Pallas kernel (``kernels/recurrence.py``)."""
  return recurrence.recurrence(xp_TxBx3D, (h0_BxD,), w_hh, b_hh,
                               _cell_tiles, compute_dtype)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused(xp_TxBx3D, h0_BxD, w_hh, b_hh, recurrence_fn, compute_dtype,
           precision):
  del precision  # the backward's (``numerics``)
  return recurrence_fn(xp_TxBx3D, h0_BxD, w_hh, b_hh, compute_dtype)


def _fused_fwd(xp_TxBx3D, h0_BxD, w_hh, b_hh, recurrence_fn, compute_dtype,
               precision):
  del precision
  h_TxBxD = recurrence_fn(xp_TxBx3D, h0_BxD, w_hh, b_hh, compute_dtype)
  return h_TxBxD, (xp_TxBx3D, h0_BxD, w_hh, b_hh, h_TxBxD)


def _fused_bwd(recurrence_fn, compute_dtype, precision, saved, dh_TxBxD):
  del recurrence_fn
  with numerics.matmul_precision_scope(precision):
    return _fused_grads(compute_dtype, saved, dh_TxBxD)


def _fused_grads(compute_dtype, saved, dh_TxBxD):
  """One reverse scan that pushes the gradient through each step. Only
  ``dhp @ w_hh.T`` must run step by step: the hidden projections of all
  steps (from the saved states) are one GEMM before the scan, and the
  weight gradient ``sum_t h_{t-1}^T dhp_t`` one GEMM after it."""
  xp_TxBx3D, h0_BxD, w_hh, b_hh, h_TxBxD = saved
  hprev_TxBxD = jnp.concatenate([h0_BxD[None], h_TxBxD[:-1]], axis=0)
  hp_TxBx3D = dense(hprev_TxBxD, w_hh, compute_dtype) + b_hh
  # Transposed once, outside the scan: inside, XLA would fold the transpose
  # into every step's matmul, and the transposed-operand GEMM is slower.
  w_hh_t = jnp.transpose(w_hh)

  def step(dh_next_BxD, xs):
    xp_Bx3D, hp_Bx3D, hprev_BxD, dh_out_BxD = xs
    dh_BxD = dh_next_BxD + dh_out_BxD
    r, z, n, hn = _gates(xp_Bx3D, hp_Bx3D)
    dn = dh_BxD * (1.0 - z)
    dz = dh_BxD * (hprev_BxD - n)
    dn_pre = dn * (1.0 - n * n)
    dr = dn_pre * hn
    dr_pre = dr * r * (1.0 - r)
    dz_pre = dz * z * (1.0 - z)
    dxp_Bx3D = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    dhp_Bx3D = jnp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
    dh_prev_BxD = dh_BxD * z + dense(dhp_Bx3D, w_hh_t, compute_dtype)
    return dh_prev_BxD, (dxp_Bx3D, dhp_Bx3D)

  dh0_BxD, (dxp_TxBx3D, dhp_TxBx3D) = jax.lax.scan(
      step, jnp.zeros_like(h0_BxD),
      (xp_TxBx3D, hp_TxBx3D, hprev_TxBxD, dh_TxBxD), reverse=True)
  t, b, h = hprev_TxBxD.shape
  dw_hh = dense(hprev_TxBxD.reshape(t * b, h).T,
                dhp_TxBx3D.reshape(t * b, 3 * h), compute_dtype)
  db_hh = jnp.sum(dhp_TxBx3D, axis=(0, 1))
  return dxp_TxBx3D, dh0_BxD, dw_hh, db_hh


_fused.defvjp(_fused_fwd, _fused_bwd)


def gru_sequence(x_BxTxI, h0_BxD, w_ih, w_hh, b_ih, b_hh,
                 backend: str = "fused", compute_dtype: str = "float32"):
  """One GRU layer over a sequence: returns (h_BxTxD, h_last_BxD).
  ``compute_dtype``: the matmuls' operands, forward and backward
  (``numerics``). One step (T = 1, a generation step) is the cell itself,
  whatever the backend: no loop to run."""
  if backend not in BACKENDS:
    raise ValueError(f"GRU backend {backend!r} is unknown; allowed values: "
                     f"{', '.join(BACKENDS)}")
  if x_BxTxI.shape[1] == 1:
    h_BxD = gru_cell(x_BxTxI[:, 0], h0_BxD, w_ih, w_hh, b_ih, b_hh,
                     compute_dtype)
    return h_BxD[:, None], h_BxD
  if backend == "scan":
    h_TxBxD = _scan_reference(x_BxTxI, h0_BxD, w_ih, w_hh, b_ih, b_hh,
                              compute_dtype)
  else:  # fused, pallas
    xp_TxBx3D = jnp.swapaxes(dense(x_BxTxI, w_ih, compute_dtype) + b_ih, 0, 1)
    recurrence_fn = (_recurrence_pallas if backend == "pallas"
                     else _recurrence_scan)
    h_TxBxD = _fused(xp_TxBx3D, h0_BxD, w_hh, b_hh, recurrence_fn,
                     compute_dtype, numerics.ambient_precision())
  return jnp.swapaxes(h_TxBxD, 0, 1), h_TxBxD[-1]
