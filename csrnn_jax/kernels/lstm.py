"""LSTM with PyTorch's equations, one layer over a sequence, three backends.

    i = sigmoid(x W_ii + b_ii + h W_hi + b_hi)
    f = sigmoid(x W_if + b_if + h W_hf + b_hf)
    g = tanh(x W_ig + b_ig + h W_hg + b_hg)
    o = sigmoid(x W_io + b_io + h W_ho + b_ho)
    c' = f * c + i * g
    h' = o * tanh(c')

Weights are stored for ``x @ W``: ``w_ih`` (I, 4D), ``w_hh`` (D, 4D),
biases (4D,), gate order i, f, g, o (as torch.nn.LSTM). The state is the pair
(h, c).

Backends of ``lstm_sequence``, as the GRU's (``kernels/gru.py``), all the
same function:

- ``scan``: the reference; a plain ``lax.scan`` of the whole cell, autodiff.
- ``fused``: the input projection for all T steps is one matmul before the
  scan; a ``custom_vjp`` whose forward saves the states h and c (T, B, D) and
  whose backward is one reverse scan in which only ``dgates @ w_hh.T`` runs
  step by step: the hidden projections of all steps are one GEMM before it,
  the weight gradient one GEMM after it.
- ``pallas``: ``fused`` with the recurrence as one tiled Pallas kernel per
  window (``kernels/recurrence.py``): compiled by Triton on NVIDIA GPUs,
  interpret mode elsewhere (tests). Its backward is the fused reverse scan.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from csrnn_jax import numerics
from csrnn_jax.kernels import gru
from csrnn_jax.kernels import recurrence
from csrnn_jax.numerics import dense

BACKENDS = gru.BACKENDS


def _gate_values(i, f, g, o):
  """(i, f, g, o) from each gate's summed projections, any shape."""
  return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _gates(pre_Bx4D):
  """(i, f, g, o) from the summed projections (B, 4D), biases included."""
  return _gate_values(*jnp.split(pre_Bx4D, 4, axis=-1))


def _new_state(i, f, g, o, c):
  """(h', c') from the gates and the cell state."""
  c = f * c + i * g
  return o * jnp.tanh(c), c


def lstm_cell_from_projection(xp_Bx4D, state, w_hh, b_hh, compute_dtype):
  """One step given the input projection ``x W_ih + b_ih`` (B, 4D); state
  and result are (h_BxD, c_BxD)."""
  h_BxD, c_BxD = state
  gates = _gates(xp_Bx4D + (dense(h_BxD, w_hh, compute_dtype) + b_hh))
  return _new_state(*gates, c_BxD)


def lstm_cell(x_BxI, state, w_ih, w_hh, b_ih, b_hh,
              compute_dtype: str = "float32"):
  """One LSTM step: (B, I), (h, c) each (B, D) -> (h, c).
  ``compute_dtype``: the matmuls' operands (``numerics``)."""
  return lstm_cell_from_projection(dense(x_BxI, w_ih, compute_dtype) + b_ih,
                                   state, w_hh, b_hh, compute_dtype)


def _scan_reference(x_BxTxI, state0, w_ih, w_hh, b_ih, b_hh, compute_dtype):
  def step(state, x_BxI):
    state = lstm_cell(x_BxI, state, w_ih, w_hh, b_ih, b_hh, compute_dtype)
    return state, state

  _, (h_TxBxD, c_TxBxD) = jax.lax.scan(step, state0,
                                       jnp.swapaxes(x_BxTxI, 0, 1))
  return h_TxBxD, c_TxBxD


def _recurrence_scan(xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh, compute_dtype):
  """States h and c (T, B, D) given all input projections."""
  def step(state, xp_Bx4D):
    state = lstm_cell_from_projection(xp_Bx4D, state, w_hh, b_hh,
                                      compute_dtype)
    return state, state

  _, (h_TxBxD, c_TxBxD) = jax.lax.scan(step, (h0_BxD, c0_BxD), xp_TxBx4D)
  return h_TxBxD, c_TxBxD


def _cell_tiles(xp_tiles, hp_tiles, state_tiles):
  """One step on a column tile of the state (``recurrence.recurrence``)."""
  gates = _gate_values(*(x + h for x, h in zip(xp_tiles, hp_tiles)))
  return _new_state(*gates, state_tiles[1])


def _recurrence_pallas(xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh, compute_dtype):
  """The recurrence as one tiled Pallas kernel (``kernels/recurrence.py``):
  (h_TxBxD, c_TxBxD)."""
  return recurrence.recurrence(xp_TxBx4D, (h0_BxD, c0_BxD), w_hh, b_hh,
                               _cell_tiles, compute_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _fused(xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh, recurrence_fn,
           compute_dtype, precision):
  """(h_TxBxD, c of the last step)."""
  del precision  # the backward's (``numerics``)
  h_TxBxD, c_TxBxD = recurrence_fn(xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh,
                                   compute_dtype)
  return h_TxBxD, c_TxBxD[-1]


def _fused_fwd(xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh, recurrence_fn,
               compute_dtype, precision):
  del precision
  h_TxBxD, c_TxBxD = recurrence_fn(xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh,
                                   compute_dtype)
  return (h_TxBxD, c_TxBxD[-1]), (xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh,
                                  h_TxBxD, c_TxBxD)


def _fused_bwd(recurrence_fn, compute_dtype, precision, saved, cotangents):
  del recurrence_fn
  with numerics.matmul_precision_scope(precision):
    return _fused_grads(compute_dtype, saved, cotangents)


def _fused_grads(compute_dtype, saved, cotangents):
  """One reverse scan carrying (dh, dc). The gates' pre-activations are
  ``x W_ih + h W_hh + biases`` with no product inside (unlike the GRU's
  reset gate), so one gradient ``dpre`` (T, B, 4D) serves the input
  projection, ``w_hh`` and ``b_hh``."""
  dh_TxBxD, dc_last_BxD = cotangents
  xp_TxBx4D, h0_BxD, c0_BxD, w_hh, b_hh, h_TxBxD, c_TxBxD = saved
  hprev_TxBxD = jnp.concatenate([h0_BxD[None], h_TxBxD[:-1]], axis=0)
  cprev_TxBxD = jnp.concatenate([c0_BxD[None], c_TxBxD[:-1]], axis=0)
  pre_TxBx4D = xp_TxBx4D + (dense(hprev_TxBxD, w_hh, compute_dtype) + b_hh)
  # Transposed once, outside the scan (as the GRU's backward).
  w_hh_t = jnp.transpose(w_hh)

  def step(carry, xs):
    dh_next_BxD, dc_next_BxD = carry
    pre_Bx4D, cprev_BxD, c_BxD, dh_out_BxD = xs
    i, f, g, o = _gates(pre_Bx4D)
    tanh_c = jnp.tanh(c_BxD)
    dh_BxD = dh_next_BxD + dh_out_BxD
    dc_BxD = dc_next_BxD + dh_BxD * o * (1.0 - tanh_c * tanh_c)
    dpre_Bx4D = jnp.concatenate([
        dc_BxD * g * i * (1.0 - i), dc_BxD * cprev_BxD * f * (1.0 - f),
        dc_BxD * i * (1.0 - g * g), dh_BxD * tanh_c * o * (1.0 - o)], axis=-1)
    return (dense(dpre_Bx4D, w_hh_t, compute_dtype), dc_BxD * f), dpre_Bx4D

  (dh0_BxD, dc0_BxD), dpre_TxBx4D = jax.lax.scan(
      step, (jnp.zeros_like(h0_BxD), dc_last_BxD),
      (pre_TxBx4D, cprev_TxBxD, c_TxBxD, dh_TxBxD), reverse=True)
  t, b, h = hprev_TxBxD.shape
  dw_hh = dense(hprev_TxBxD.reshape(t * b, h).T,
                dpre_TxBx4D.reshape(t * b, 4 * h), compute_dtype)
  db_hh = jnp.sum(dpre_TxBx4D, axis=(0, 1))
  return dpre_TxBx4D, dh0_BxD, dc0_BxD, dw_hh, db_hh


_fused.defvjp(_fused_fwd, _fused_bwd)


def lstm_sequence(x_BxTxI, state0, w_ih, w_hh, b_ih, b_hh,
                  backend: str = "fused", compute_dtype: str = "float32"):
  """One LSTM layer over a sequence from ``state0`` = (h0, c0), each (B, D):
  returns (h_BxTxD, (h_last_BxD, c_last_BxD)). ``compute_dtype``: the
  matmuls' operands, forward and backward (``numerics``). One step (T = 1,
  a generation step) is the cell itself, whatever the backend."""
  if backend not in BACKENDS:
    raise ValueError(f"LSTM backend {backend!r} is unknown; allowed values: "
                     f"{', '.join(BACKENDS)}")
  if x_BxTxI.shape[1] == 1:
    h_BxD, c_BxD = lstm_cell(x_BxTxI[:, 0], tuple(state0), w_ih, w_hh, b_ih,
                             b_hh, compute_dtype)
    return h_BxD[:, None], (h_BxD, c_BxD)
  if backend == "scan":
    h_TxBxD, c_TxBxD = _scan_reference(x_BxTxI, tuple(state0), w_ih, w_hh,
                                       b_ih, b_hh, compute_dtype)
    c_last_BxD = c_TxBxD[-1]
  else:  # fused, pallas
    xp_TxBx4D = jnp.swapaxes(dense(x_BxTxI, w_ih, compute_dtype) + b_ih, 0, 1)
    recurrence_fn = (_recurrence_pallas if backend == "pallas"
                     else _recurrence_scan)
    h_TxBxD, c_last_BxD = _fused(xp_TxBx4D, *state0, w_hh, b_hh,
                                 recurrence_fn, compute_dtype,
                                 numerics.ambient_precision())
  return jnp.swapaxes(h_TxBxD, 0, 1), (h_TxBxD[-1], c_last_BxD)
