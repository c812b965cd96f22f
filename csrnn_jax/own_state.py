"""Training from the model's own states (``train.own_state_share``).

Teacher forcing only ever starts a chunk from the learned h0 and silence, or
from the state real audio led to. Free-running generation drifts over
seconds into states of its own, such as a note that decayed into
near-silence, and a model that never trained from them stays there (the
demo's 30-s crashes, docs/results.md). So a share of the chunk batches
starts instead from the state the model reaches after generating
``train.own_state_seconds`` on its own (plain sampling, each row's
condition, the current parameters); the chunk is then trained
teacher-forced on the real audio as usual, its first window reading the
last generated top frame as context. The other chunk batches start from h0,
which keeps training.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from csrnn_jax import model as model_lib
from csrnn_jax import sampling


def scheduled(chunk_batch: int, share: float) -> bool:
  """Whether chunk batch ``chunk_batch`` (0, 1, ...) starts from an own
  state: spread evenly, floor(n share) of the first n batches (share 0.5:
  batches 1, 3, 5, ...). A function of the index, so a resumed run keeps
  the schedule."""
  return math.floor((chunk_batch + 1) * share) > math.floor(chunk_batch * share)


class OwnStarts:
  """Where each chunk batch starts, for ``trainer.make_chunk_step(...,
  own_starts=True)``: ``__call__(chunk_batch, params, windows_NxBxW,
  cond_BxC, key)`` -> (windows_NxBxW, carry, from_h0). When ``scheduled``:
  the state after ``num_samples`` (rounded up to whole top frames) of plain
  sampling from h0 and silence, rows seeded from ``key``, and the windows
  with the first one's context (its first FS(K) samples, never a target)
  replaced by the last generated top frame. Else the windows as given,
  zeros in the carry's shape and from_h0 (the step starts from h0). Host
  (numpy) arrays, this process's rows; the generator compiles once."""

  def __init__(self, graphdef, params, share: float, num_samples: int):
    if not 0.0 <= share <= 1.0:
      raise ValueError(f"train.own_state_share={share} must be in [0, 1] "
                       "(the share of chunk batches that start from a state "
                       "the model generated; 0 turns it off)")
    if num_samples < 1:
      raise ValueError("train.own_state_seconds must be > 0 (how long the "
                       "model generates to reach a chunk batch's start)")
    self.generator = sampling.Generator(graphdef, params)
    self.graphdef, self.share, self.num_samples = graphdef, share, num_samples

  def __call__(self, chunk_batch: int, params, windows_NxBxW, cond_BxC, key):
    # ``params`` only: training donates the ones this was made with.
    rows = len(cond_BxC)
    if not scheduled(chunk_batch, self.share):
      shapes = jax.eval_shape(
          lambda: model_lib.bind(self.graphdef, params).initial_carry(rows))
      return windows_NxBxW, jax.tree_util.tree_map(
          lambda s: np.zeros(s.shape, s.dtype), shapes), np.asarray(True)
    self.generator.set_params(params)
    seeds_B = np.asarray(jax.random.randint(key, (rows,), 0, 2 ** 31 - 1))
    plan = self.generator.plan(cond_BxC, seeds_B, self.num_samples)
    state = self.generator.segment(plan, self.generator.prime(plan),
                                   np.arange(plan.n_frames))[0]
    last_frame_BxL = np.asarray(state.last_frame_BxL)
    windows_NxBxW = np.array(windows_NxBxW)
    windows_NxBxW[0, :, :last_frame_BxL.shape[1]] = last_frame_BxL
    return (windows_NxBxW, jax.tree_util.tree_map(np.asarray, state.carry),
            np.asarray(False))
