"""The sample tier's input: Embedding(Q, Q) followed by Conv1d(Q -> dim, FS1).

Because the conv reads one-hot embeddings, it equals a sum of FS1 lookups in
per-tap tables ``T_j = Emb @ W_j`` (Q x dim each): FS1 * dim additions per
position instead of Q * FS1 * dim multiply-adds (DESIGN §2). ``conv_input`` is
the plain reference; ``taps_input`` is the fast path; both take the same
parameters, so gradients reach the embedding and the conv weight either way.
"""
from __future__ import annotations

import jax.numpy as jnp


def tap_tables(embedding_QxQ, w_FxQxD):
  """Per-tap tables T_j = Emb @ W_j: (FS1, Q, dim)."""
  return jnp.einsum("ae,feb->fab", embedding_QxQ, w_FxQxD)


def taps_input(tables_FxQxD, x_BxW):
  """Sum of tap lookups over every full window of FS1 samples in x.

  Output position t reads x[:, t : t + FS1]; returns (B, W - FS1 + 1, dim).
  """
  fs1 = tables_FxQxD.shape[0]
  t = x_BxW.shape[1] - fs1 + 1
  out_BxTxD = tables_FxQxD[0][x_BxW[:, 0:t]]
  for j in range(1, fs1):
    out_BxTxD = out_BxTxD + tables_FxQxD[j][x_BxW[:, j:j + t]]
  return out_BxTxD


def conv_input(embedding_QxQ, w_FxQxD, x_BxW):
  """Reference: embed every sample, then a valid conv with kernel FS1."""
  fs1 = w_FxQxD.shape[0]
  t = x_BxW.shape[1] - fs1 + 1
  emb_BxWxQ = embedding_QxQ[x_BxW]
  out_BxTxD = emb_BxWxQ[:, 0:t] @ w_FxQxD[0]
  for j in range(1, fs1):
    out_BxTxD = out_BxTxD + emb_BxWxQ[:, j:j + t] @ w_FxQxD[j]
  return out_BxTxD
