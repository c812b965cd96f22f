"""GRU with PyTorch's equations, one layer over a sequence.

    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))   # b_hn inside the reset gate
    h' = (1 - z) * n + z * h

Weights are stored for ``x @ W``: ``w_ih`` (D_in, 3H), ``w_hh`` (H, 3H), biases
(3H,), gate order r, z, n (as torch.nn.GRU). flax's GRUCell has no b_hn, so it
cannot express the reference and is not used.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def gru_cell_from_projection(xp_Bx3H, h_BxH, w_hh, b_hh):
  """One step given the input projection ``x W_ih + b_ih`` (B, 3H)."""
  hp_Bx3H = h_BxH @ w_hh + b_hh
  xr, xz, xn = jnp.split(xp_Bx3H, 3, axis=-1)
  hr, hz, hn = jnp.split(hp_Bx3H, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return (1.0 - z) * n + z * h_BxH


def gru_cell(x_BxD, h_BxH, w_ih, w_hh, b_ih, b_hh):
  """One GRU step: (B, D_in), (B, H) -> (B, H)."""
  return gru_cell_from_projection(x_BxD @ w_ih + b_ih, h_BxH, w_hh, b_hh)


def gru_sequence(x_BxTxD, h0_BxH, w_ih, w_hh, b_ih, b_hh):
  """One GRU layer over a sequence: returns (h_BxTxH, h_last_BxH).

  The input projection for all T steps is one matmul before the scan; the scan
  carries only the hidden state.
  """
  xp_TxBx3H = jnp.swapaxes(x_BxTxD @ w_ih + b_ih, 0, 1)

  def step(h_BxH, xp_Bx3H):
    h_BxH = gru_cell_from_projection(xp_Bx3H, h_BxH, w_hh, b_hh)
    return h_BxH, h_BxH

  h_last_BxH, h_TxBxH = jax.lax.scan(step, h0_BxH, xp_TxBx3H)
  return jnp.swapaxes(h_TxBxH, 0, 1), h_last_BxH
