"""LSTM with PyTorch's equations, one layer over a sequence, three backends.

    i = sigmoid(x W_ii + b_ii + h W_hi + b_hi)
    f = sigmoid(x W_if + b_if + h W_hf + b_hf)
    g = tanh(x W_ig + b_ig + h W_hg + b_hg)
    o = sigmoid(x W_io + b_io + h W_ho + b_ho)
    c' = f * c + i * g
    h' = o * tanh(c')

Weights are stored for ``x @ W``: ``w_ih`` (D_in, 4H), ``w_hh`` (H, 4H),
biases (4H,), gate order i, f, g, o (as torch.nn.LSTM). The state is the pair
(h, c).

Backends of ``lstm_sequence``, as the GRU's (``kernels/gru.py``), all the
same function:

- ``scan``: the reference; a plain ``lax.scan`` of the whole cell, autodiff.
- ``fused``: the input projection for all T steps is one matmul before the
  scan; a ``custom_vjp`` whose forward saves the states h and c (T, B, H) and
  whose backward is one reverse scan in which only ``dgates @ w_hh.T`` runs
  step by step: the hidden projections of all steps are one GEMM before it,
  the weight gradient one GEMM after it.
- ``pallas``: the recurrence as one Pallas kernel that loops over T with the
  recurrent weights resident; interpret mode off GPU/TPU (tests). Its
  backward is the fused reverse scan.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from csrnn_jax.kernels import gru
from csrnn_jax.numerics import dense

BACKENDS = gru.BACKENDS


def _gates(pre_Bx4H):
  """(i, f, g, o) from the summed projections (biases included)."""
  i, f, g, o = jnp.split(pre_Bx4H, 4, axis=-1)
  return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def lstm_cell_from_projection(xp_Bx4H, state, w_hh, b_hh, compute_dtype):
  """One step given the input projection ``x W_ih + b_ih`` (B, 4H); state
  and result are (h_BxH, c_BxH)."""
  h_BxH, c_BxH = state
  i, f, g, o = _gates(xp_Bx4H + (dense(h_BxH, w_hh, compute_dtype) + b_hh))
  c_BxH = f * c_BxH + i * g
  return o * jnp.tanh(c_BxH), c_BxH


def lstm_cell(x_BxD, state, w_ih, w_hh, b_ih, b_hh,
              compute_dtype: str = "float32"):
  """One LSTM step: (B, D_in), (h, c) each (B, H) -> (h, c).
  ``compute_dtype``: the matmuls' operands (``numerics``)."""
  return lstm_cell_from_projection(dense(x_BxD, w_ih, compute_dtype) + b_ih,
                                   state, w_hh, b_hh, compute_dtype)


def _scan_reference(x_BxTxD, state0, w_ih, w_hh, b_ih, b_hh, compute_dtype):
  def step(state, x_BxD):
    state = lstm_cell(x_BxD, state, w_ih, w_hh, b_ih, b_hh, compute_dtype)
    return state, state

  _, (h_TxBxH, c_TxBxH) = jax.lax.scan(step, state0,
                                       jnp.swapaxes(x_BxTxD, 0, 1))
  return h_TxBxH, c_TxBxH


def _recurrence_scan(xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh, compute_dtype):
  """States h and c (T, B, H) given all input projections."""
  def step(state, xp_Bx4H):
    state = lstm_cell_from_projection(xp_Bx4H, state, w_hh, b_hh,
                                      compute_dtype)
    return state, state

  _, (h_TxBxH, c_TxBxH) = jax.lax.scan(step, (h0_BxH, c0_BxH), xp_TxBx4H)
  return h_TxBxH, c_TxBxH


def _recurrence_pallas(xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh, compute_dtype):
  """The recurrence as one Pallas kernel: a loop over T inside the kernel,
  w_hh loaded once. Interpret mode off GPU/TPU."""
  from jax.experimental import pallas as pl

  t_len = xp_TxBx4H.shape[0]

  def kernel(xp_ref, h0_ref, c0_ref, w_ref, b_ref, h_ref, c_ref):
    w_hh_HxG, b_hh_G = w_ref[...], b_ref[...]

    def body(t, state):
      state = lstm_cell_from_projection(xp_ref[t], state, w_hh_HxG, b_hh_G,
                                        compute_dtype)
      h_ref[t], c_ref[t] = state
      return state

    jax.lax.fori_loop(0, t_len, body, (h0_ref[...], c0_ref[...]))

  states = jax.ShapeDtypeStruct((t_len,) + h0_BxH.shape, h0_BxH.dtype)
  interpret = jax.default_backend() not in ("gpu", "tpu")
  return pl.pallas_call(kernel, out_shape=(states, states),
                        interpret=interpret)(xp_TxBx4H, h0_BxH, c0_BxH, w_hh,
                                             b_hh[None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _fused(xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh, recurrence, compute_dtype):
  """(h_TxBxH, c of the last step)."""
  h_TxBxH, c_TxBxH = recurrence(xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh,
                                compute_dtype)
  return h_TxBxH, c_TxBxH[-1]


def _fused_fwd(xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh, recurrence,
               compute_dtype):
  h_TxBxH, c_TxBxH = recurrence(xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh,
                                compute_dtype)
  return (h_TxBxH, c_TxBxH[-1]), (xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh,
                                  h_TxBxH, c_TxBxH)


def _fused_bwd(recurrence, compute_dtype, saved, cotangents):
  """One reverse scan carrying (dh, dc). The gates' pre-activations are
  ``x W_ih + h W_hh + biases`` with no product inside (unlike the GRU's
  reset gate), so one gradient ``dpre`` (T, B, 4H) serves the input
  projection, ``w_hh`` and ``b_hh``."""
  del recurrence
  dh_TxBxH, dc_last_BxH = cotangents
  xp_TxBx4H, h0_BxH, c0_BxH, w_hh, b_hh, h_TxBxH, c_TxBxH = saved
  hprev_TxBxH = jnp.concatenate([h0_BxH[None], h_TxBxH[:-1]], axis=0)
  cprev_TxBxH = jnp.concatenate([c0_BxH[None], c_TxBxH[:-1]], axis=0)
  pre_TxBx4H = xp_TxBx4H + (dense(hprev_TxBxH, w_hh, compute_dtype) + b_hh)
  # Transposed once, outside the scan (as the GRU's backward).
  w_hh_T = jnp.transpose(w_hh)

  def step(carry, xs):
    dh_next_BxH, dc_next_BxH = carry
    pre_Bx4H, cprev_BxH, c_BxH, dh_out_BxH = xs
    i, f, g, o = _gates(pre_Bx4H)
    tanh_c = jnp.tanh(c_BxH)
    dh_BxH = dh_next_BxH + dh_out_BxH
    dc_BxH = dc_next_BxH + dh_BxH * o * (1.0 - tanh_c * tanh_c)
    dpre_Bx4H = jnp.concatenate([
        dc_BxH * g * i * (1.0 - i), dc_BxH * cprev_BxH * f * (1.0 - f),
        dc_BxH * i * (1.0 - g * g), dh_BxH * tanh_c * o * (1.0 - o)], axis=-1)
    return (dense(dpre_Bx4H, w_hh_T, compute_dtype), dc_BxH * f), dpre_Bx4H

  (dh0_BxH, dc0_BxH), dpre_TxBx4H = jax.lax.scan(
      step, (jnp.zeros_like(h0_BxH), dc_last_BxH),
      (pre_TxBx4H, cprev_TxBxH, c_TxBxH, dh_TxBxH), reverse=True)
  t, b, h = hprev_TxBxH.shape
  dw_hh = dense(hprev_TxBxH.reshape(t * b, h).T,
                dpre_TxBx4H.reshape(t * b, 4 * h), compute_dtype)
  db_hh = jnp.sum(dpre_TxBx4H, axis=(0, 1))
  return dpre_TxBx4H, dh0_BxH, dc0_BxH, dw_hh, db_hh


_fused.defvjp(_fused_fwd, _fused_bwd)


def lstm_sequence(x_BxTxD, state0, w_ih, w_hh, b_ih, b_hh,
                  backend: str = "fused", compute_dtype: str = "float32"):
  """One LSTM layer over a sequence from ``state0`` = (h0, c0), each (B, H):
  returns (h_BxTxH, (h_last_BxH, c_last_BxH)). ``compute_dtype``: the
  matmuls' operands, forward and backward (``numerics``)."""
  if backend == "scan":
    h_TxBxH, c_TxBxH = _scan_reference(x_BxTxD, tuple(state0), w_ih, w_hh,
                                       b_ih, b_hh, compute_dtype)
    c_last_BxH = c_TxBxH[-1]
  elif backend in ("fused", "pallas"):
    xp_TxBx4H = jnp.swapaxes(dense(x_BxTxD, w_ih, compute_dtype) + b_ih, 0, 1)
    recurrence = (_recurrence_pallas if backend == "pallas"
                  else _recurrence_scan)
    h_TxBxH, c_last_BxH = _fused(xp_TxBx4H, *state0, w_hh, b_hh, recurrence,
                                 compute_dtype)
  else:
    raise ValueError(f"LSTM backend {backend!r} is unknown; allowed values: "
                     f"{', '.join(BACKENDS)}")
  return jnp.swapaxes(h_TxBxH, 0, 1), (h_TxBxH[-1], c_last_BxH)
