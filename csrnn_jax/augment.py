"""Training-time changes to what the model reads, never to what it predicts.

``make(train_cfg)`` returns ``augment(m, keys_B, window_BxW, cond_BxC) ->
(inputs_BxW, cond_BxC)``: the trainer feeds ``inputs_BxW`` to the model and
scores its logits against the clean ``window_BxW``. With every option off it
is the identity, and training is exactly the reference's.

Randomness: ``keys_B`` holds one key per row, derived from the row's index in
the global batch (``row_keys``), so a batch split over devices draws what it
draws on one device, and a resumed run draws what the uninterrupted one did.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def row_keys(key, rows: int, axis_name: str | None = None):
  """One key per local row: ``fold_in(key, global row index)``. Inside
  ``shard_map`` over ``axis_name`` this device's rows are a contiguous block
  of the global batch (see ``sharding``)."""
  first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * rows
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(
      first + jnp.arange(rows))


def make(train_cfg):
  """The augmentation that ``train_cfg`` asks for (identity by default)."""
  del train_cfg

  def augment(m, keys_B, window_BxW, cond_BxC):
    del m, keys_B
    return window_BxW, cond_BxC

  return augment
