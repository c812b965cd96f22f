"""The sample tier's input: Embedding(Q, Q) followed by Conv1d(Q -> dim, FS1).

Because the conv reads one-hot embeddings, it equals a sum of FS1 lookups in
per-tap tables ``T_j = Emb @ W_j`` (Q x dim each): FS1 * dim additions per
position instead of Q * FS1 * dim multiply-adds (docs/design.md).
``conv_input`` is the plain reference; ``taps_input`` is the fast path; both
take the same parameters, so gradients reach the embedding and the conv weight
either way.

``taps_input`` has its own VJP: the forward is one fused gather-and-sum, the
backward one scatter-add per tap, and only the int samples are kept for the
backward. Left to autodiff, XLA keeps the FS1 gathered (B, T, dim) arrays of
the forward for its backward (on the ambient model 16 x 64 MB per window, and
a third of the training step's time spent writing and re-reading them).
``taps_input_autodiff`` is that plain version, kept as the reference the VJP
is tested against.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def tap_tables(embedding_QxQ, w_LxQxD):
  """Per-tap tables T_j = Emb @ W_j: (FS1, Q, dim)."""
  return jnp.einsum("ae,feb->fab", embedding_QxQ, w_LxQxD)


def taps_input_autodiff(tables_LxQxD, x_BxW):
  """Sum of tap lookups over every full window of FS1 samples in x.

  Output position t reads x[:, t : t + FS1]; returns (B, W - FS1 + 1, dim).
  """
  fs1 = tables_LxQxD.shape[0]
  t = x_BxW.shape[1] - fs1 + 1
  out_BxTxD = tables_LxQxD[0][x_BxW[:, 0:t]]
  for j in range(1, fs1):
    out_BxTxD = out_BxTxD + tables_LxQxD[j][x_BxW[:, j:j + t]]
  return out_BxTxD


TAPS_PER_LOOP_STEP = 4


def _taps_sum_loop(tables_LxQxD, x_BxW):
  """``taps_input_autodiff`` as a loop over groups of taps. The loop's
  result is materialised once: as a plain sum, XLA copies the FS1 gathers
  into every consumer of the sum, forward and backward, and keeps them all
  (on the ambient model 16 x 64 MB per window)."""
  fs1, _, dim = tables_LxQxD.shape
  group = TAPS_PER_LOOP_STEP if fs1 % TAPS_PER_LOOP_STEP == 0 else 1
  t = x_BxW.shape[1] - fs1 + 1

  def body(out_BxTxD, first):
    for k in range(group):
      x_BxT = jax.lax.dynamic_slice_in_dim(x_BxW, first + k, t, 1)
      out_BxTxD = out_BxTxD + jnp.take(tables_LxQxD, first + k, axis=0)[x_BxT]
    return out_BxTxD, None

  zeros_BxTxD = jnp.zeros((x_BxW.shape[0], t, dim), tables_LxQxD.dtype)
  return jax.lax.scan(body, zeros_BxTxD, jnp.arange(0, fs1, group))[0]


@jax.custom_vjp
def taps_input(tables_LxQxD, x_BxW):
  """``taps_input_autodiff`` with a VJP that keeps only ``x_BxW``."""
  return _taps_sum_loop(tables_LxQxD, x_BxW)


def _taps_fwd(tables_LxQxD, x_BxW):
  return _taps_sum_loop(tables_LxQxD, x_BxW), (
      x_BxW, jnp.zeros((0,) + tables_LxQxD.shape[1:], tables_LxQxD.dtype))


def _taps_bwd(saved, dout_BxTxD):
  """dT_j[q] = sum of dout over the positions whose tap j reads level q."""
  x_BxW, like_0xQxD = saved
  t = dout_BxTxD.shape[1]
  fs1 = x_BxW.shape[1] - t + 1
  zeros_QxD = jnp.zeros(like_0xQxD.shape[1:], dout_BxTxD.dtype)
  dtables_LxQxD = jnp.stack([zeros_QxD.at[x_BxW[:, j:j + t]].add(dout_BxTxD)
                             for j in range(fs1)])
  return dtables_LxQxD, None


taps_input.defvjp(_taps_fwd, _taps_bwd)


def conv_input(embedding_QxQ, w_LxQxD, x_BxW):
  """Reference: embed every sample, then a valid conv with kernel FS1."""
  fs1 = w_LxQxD.shape[0]
  t = x_BxW.shape[1] - fs1 + 1
  emb_BxWxQ = embedding_QxQ[x_BxW]
  out_BxTxD = emb_BxWxQ[:, 0:t] @ w_LxQxD[0]
  for j in range(1, fs1):
    out_BxTxD = out_BxTxD + emb_BxWxQ[:, j:j + t] @ w_LxQxD[j]
  return out_BxTxD
