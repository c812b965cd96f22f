"""Training-time changes to what the model reads, never to what it predicts.

``make(train_cfg)`` returns ``augment(m, keys_B, chunk_keys_B, window_BxW,
cond_BxC) -> (inputs_BxW, cond_BxC)``: the trainer feeds ``inputs_BxW`` to the
model and scores its logits against the clean ``window_BxW``. With every
option off it is the identity, and training is exactly the reference's.

Randomness: ``keys_B`` holds one key per row for this window, ``chunk_keys_B``
one per row for the whole chunk batch (the same in all its windows, for
decisions that hold for a whole chunk). Both are derived from the row's index
in the global batch (``row_keys``), so a batch split over devices draws what
it draws on one device, and a resumed run draws what the uninterrupted one
did. Each option draws from its own ``fold_in(key, tag)``: condition dropout
tag 1, input noise tag 2 (and the model's RNN dropout tag 3,
``model.DROPOUT_TAG``, from the same row keys).
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


def drop_condition(m, chunk_keys_B, cond_BxC, rate: float):
  """Condition dropout: each row (chunk) reads the model's null condition
  instead of its own with probability ``rate``, the same decision in every
  window of the chunk, as a generated clip is conditioned (or not) as a
  whole. The null condition is what classifier-free guidance contrasts the
  condition with. (B, C) -> (B, C)."""
  if not rate:
    return cond_BxC
  u_B = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(
      chunk_keys_B)
  return jnp.where((u_B < rate)[:, None], m.null_condition(cond_BxC.shape[0]),
                   cond_BxC)


def add_input_noise(keys_B, x_BxW, rate: float, levels: int, q_levels: int):
  """Input noise, against the errors a model meets in its own samples: each
  sample, with probability ``rate``, moves by an integer drawn uniformly from
  [-levels, levels] without 0, then is clipped to [0, Q). Every sample of
  the window, its context too: the tiers read the context's frames here for
  the first time (the window before predicted them). (B, W) -> (B, W)."""
  if not rate:
    return x_BxW

  def row(key, x_W):
    hit_key, step_key = jax.random.split(jax.random.fold_in(key, 2))
    hit_W = jax.random.bernoulli(hit_key, rate, x_W.shape)
    u_W = jax.random.randint(step_key, x_W.shape, 0, 2 * levels)
    step_W = jnp.where(u_W < levels, u_W - levels, u_W - levels + 1)
    return jnp.where(hit_W, jnp.clip(x_W + step_W, 0, q_levels - 1), x_W)

  return jax.vmap(row)(keys_B, x_BxW)


def make(train_cfg):
  """The augmentation that ``train_cfg`` asks for (identity by default)."""
  cond_dropout = 0.0 if train_cfg is None else train_cfg.cond_dropout
  if not 0.0 <= cond_dropout < 1.0:
    raise ValueError(f"train.cond_dropout={cond_dropout} must be in [0, 1) "
                     "(the share of chunks trained with the null condition)")

  noise, noise_levels = ((0.0, 1) if train_cfg is None else
                         (train_cfg.input_noise, train_cfg.input_noise_levels))
  if not 0.0 <= noise <= 1.0:
    raise ValueError(f"train.input_noise={noise} must be in [0, 1] (the share "
                     "of input samples moved; 0 turns it off)")
  if not isinstance(noise_levels, int) or noise_levels < 1:
    raise ValueError(f"train.input_noise_levels={noise_levels!r} must be an "
                     "integer >= 1 (the largest move, in levels)")

  def augment(m, keys_B, chunk_keys_B, window_BxW, cond_BxC):
    inputs_BxW = add_input_noise(keys_B, window_BxW, noise, noise_levels,
                                 m.cfg.q_levels)
    return inputs_BxW, drop_condition(m, chunk_keys_B, cond_BxC, cond_dropout)

  return augment
