"""Generation as one compiled program per (batch, length, options) shape
(DESIGN §5).

A segment of audio is nested ``lax.scan``s: over top-tier frames, then over
the frames of each tier below, then over samples. The carry holds the GRU
states and a buffer of the previous top frame plus the one being written, so
each level reads only what the level above wrote. No Python runs per sample.

Randomness: sample t of row b uses ``fold_in(key_b, t)`` with ``key_b`` from
the row's own seed, so a row's audio depends only on its seed, condition and
temperature: not on the batch it shares, nor on how a long file is cut into
segments. Sampling is Gumbel-max on ``logits / temperature`` after optional
top-k / top-p filtering; the returned log-likelihood is that of the samples
under the untempered model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from csrnn_jax import audio
from csrnn_jax import model as model_lib

STARTS = ("h0", "zeros")


class GenState(NamedTuple):
  """Between segments: GRU states (tuple over frame tiers of (n_rnn, B, dim))
  and the last top frame of samples (B, FS(K))."""
  carry: tuple
  last_frame_BxL: jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """Options that change the compiled program (static)."""
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1.0: off

  def __post_init__(self):
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k} must be >= 0 (0 turns it off)")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 turns it off)")


def filter_logits(logits_BxQ, options: SamplingOptions):
  """Logits outside the top-k / top-p (nucleus) set become -inf."""
  if options.top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxQ, options.top_k)[0][:, -1:]
    logits_BxQ = jnp.where(logits_BxQ < kth_Bx1, -jnp.inf, logits_BxQ)
  if options.top_p < 1.0:
    sorted_BxQ = jnp.sort(logits_BxQ, axis=-1)[:, ::-1]
    probs_BxQ = jax.nn.softmax(sorted_BxQ, axis=-1)
    before_BxQ = jnp.cumsum(probs_BxQ, axis=-1) - probs_BxQ
    # The smallest logit whose preceding mass is still below top_p is kept.
    keep_BxQ = before_BxQ < options.top_p
    threshold_Bx1 = jnp.min(jnp.where(keep_BxQ, sorted_BxQ, jnp.inf), axis=-1,
                            keepdims=True)
    logits_BxQ = jnp.where(logits_BxQ < threshold_Bx1, -jnp.inf, logits_BxQ)
  return logits_BxQ


def draw(logits_BxQ, keys_B, temperature_B, options: SamplingOptions):
  """One sample per row: Gumbel-max over filtered, tempered logits."""
  scaled_BxQ = filter_logits(logits_BxQ / temperature_B[:, None], options)
  gumbel_BxQ = jax.vmap(lambda k: jax.random.gumbel(
      k, logits_BxQ.shape[-1:]))(keys_B)
  return jnp.argmax(scaled_BxQ + gumbel_BxQ, axis=-1).astype(jnp.int32)


def initial_state(m: model_lib.CSampleRNN, batch_size: int,
                  start: str = "h0") -> GenState:
  """Silence before the start (q_zero samples) and the learned h0, or zero
  hidden states (``start="zeros"``)."""
  if start not in STARTS:
    raise ValueError(f"start={start!r} is unknown; allowed values: "
                     f"{', '.join(STARTS)}")
  carry = m.initial_carry(batch_size)
  if start == "zeros":
    carry = jax.tree_util.tree_map(jnp.zeros_like, carry)
  last = jnp.full((batch_size, m.cfg.lookback), audio.q_zero(m.cfg.q_levels),
                  jnp.int32)
  return GenState(carry, last)


def prime(m: model_lib.CSampleRNN, state: GenState, prime_BxP, cond_BxC):
  """Run the frame tiers over real audio so generation continues it.

  prime_BxP: int levels, any length P; it is left-padded with q_zero to a
  multiple of FS(K) (as if the silence before it were longer).
  """
  lookback = m.cfg.lookback
  pad = (-prime_BxP.shape[1]) % lookback
  prime_BxP = jnp.pad(prime_BxP.astype(jnp.int32), ((0, 0), (pad, 0)),
                      constant_values=audio.q_zero(m.cfg.q_levels))
  x_BxW = jnp.concatenate([state.last_frame_BxL, prime_BxP], axis=1)
  _, carry = m.frame_tiers_forward(x_BxW, cond_BxC, state.carry)
  return GenState(carry, prime_BxP[:, -lookback:])


def _sample_level(m, tables, c_BxRxD, buf_BxL2, base, cond_ctx):
  """Innermost scan: one sample per tier-2 vector."""
  keys_B, temperature_B, options, start_index, lookback = cond_ctx
  fs1 = m.cfg.frame_sizes[0]

  def body(state, xs):
    buf_BxL2, logp_BxL = state
    j, c_BxD = xs
    pos = lookback + base + j
    prev_BxF = jax.lax.dynamic_slice_in_dim(buf_BxL2, pos - fs1, fs1, axis=1)
    logits_BxQ = m.sample_logits(prev_BxF, c_BxD, tables)
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(
        keys_B, start_index + base + j)
    x_B = draw(logits_BxQ, step_keys, temperature_B, options)
    logp_Bx1 = jnp.take_along_axis(jax.nn.log_softmax(logits_BxQ, axis=-1),
                                   x_B[:, None], 1)
    buf_BxL2 = jax.lax.dynamic_update_slice_in_dim(buf_BxL2, x_B[:, None],
                                                   pos, axis=1)
    logp_BxL = jax.lax.dynamic_update_slice_in_dim(logp_BxL, logp_Bx1,
                                                   base + j, axis=1)
    return (buf_BxL2, logp_BxL), None

  n = c_BxRxD.shape[1]
  return body, (jnp.arange(n), jnp.swapaxes(c_BxRxD, 0, 1))


def _run_below(m, tables, tier_index, vectors_BxRxD, carry, buf_BxL2, logp_BxL,
               base, cond_BxC, ctx):
  """Consume the vectors tier ``tier_index + 1`` emitted for one of its frames:
  run tier ``tier_index`` (or the MLP when -1) once per vector."""
  lookback = ctx[-1]
  if tier_index < 0:
    body, xs = _sample_level(m, tables, vectors_BxRxD, buf_BxL2, base, ctx)
    (buf_BxL2, logp_BxL), _ = jax.lax.scan(body, (buf_BxL2, logp_BxL), xs)
    return carry, buf_BxL2, logp_BxL
  n = m.cfg.frame_sizes[tier_index + 1]

  def body(state, xs):
    carry, buf_BxL2, logp_BxL = state
    j, upper_BxD = xs
    pos = base + j * n
    frame_BxN = jax.lax.dynamic_slice_in_dim(buf_BxL2, lookback + pos - n, n,
                                             axis=1)
    vectors, h = m.frame_step(tier_index, frame_BxN, cond_BxC, upper_BxD,
                              carry[tier_index])
    carry = carry[:tier_index] + (h,) + carry[tier_index + 1:]
    return _run_below(m, tables, tier_index - 1, vectors, carry, buf_BxL2,
                      logp_BxL, pos, cond_BxC, ctx), None

  xs = (jnp.arange(vectors_BxRxD.shape[1]), jnp.swapaxes(vectors_BxRxD, 0, 1))
  (carry, buf_BxL2, logp_BxL), _ = jax.lax.scan(
      body, (carry, buf_BxL2, logp_BxL), xs)
  return carry, buf_BxL2, logp_BxL


def generate_segment(m, state: GenState, cond_BxFxC, keys_B, temperature_B,
                     start_index, options: SamplingOptions):
  """F = cond_BxFxC.shape[1] top frames of audio after ``state``.

  Returns (state, samples_BxS with S = F * FS(K), logp_BxS: each sample's
  log-probability under the untempered model). ``start_index`` is the
  absolute index of the first sample (for the per-sample keys).
  """
  lookback = m.cfg.lookback
  top = len(m.frame_tiers) - 1
  tables = m.mlp.tables()
  b = state.last_frame_BxL.shape[0]
  ctx = (keys_B, temperature_B, options, start_index, lookback)

  def top_frame(gen, xs):
    carry, last_BxL = gen
    f, cond_BxC = xs
    vectors, h = m.frame_step(top, last_BxL, cond_BxC, None, carry[top])
    carry = carry[:top] + (h,)
    buf_BxL2 = jnp.concatenate(
        [last_BxL, jnp.zeros((b, lookback), jnp.int32)], axis=1)
    sub_ctx = ctx[:3] + (start_index + f * lookback, lookback)
    carry, buf_BxL2, logp_BxL = _run_below(
        m, tables, top - 1, vectors, carry, buf_BxL2,
        jnp.zeros((b, lookback)), 0, cond_BxC, sub_ctx)
    frame_BxL = buf_BxL2[:, lookback:]
    return (carry, frame_BxL), (frame_BxL, logp_BxL)

  xs = (jnp.arange(cond_BxFxC.shape[1]), jnp.swapaxes(cond_BxFxC, 0, 1))
  (carry, last), (frames_FxBxL, logp_FxBxL) = jax.lax.scan(
      top_frame, (state.carry, state.last_frame_BxL), xs)
  flat = lambda a_FxBxL: jnp.swapaxes(a_FxBxL, 0, 1).reshape(b, -1)
  return GenState(carry, last), flat(frames_FxBxL), flat(logp_FxBxL)


class Generator:
  """Compiled generation for one model: ``generate`` for a batch in one call,
  ``segments`` for long audio in pieces. Compiles once per shape/options."""

  def __init__(self, graphdef, params):
    self.graphdef, self.params = model_lib.fold_weight_norm(graphdef, params)
    self.cfg = model_lib.bind(self.graphdef, self.params).cfg
    self._segment = jax.jit(self._segment_impl, static_argnames=("options",))
    self._prime = jax.jit(self._prime_impl,
                          static_argnames=("batch_size", "start"))
    self.traces = 0  # how often the segment program was traced (tests)

  def _segment_impl(self, params, state, cond_BxFxC, keys_B, temperature_B,
                    start_index, options):
    self.traces += 1
    m = model_lib.bind(self.graphdef, params)
    return generate_segment(m, state, cond_BxFxC, keys_B, temperature_B,
                            start_index, options)

  def _prime_impl(self, params, prime_BxP, cond_BxC, batch_size, start):
    m = model_lib.bind(self.graphdef, params)
    state = initial_state(m, batch_size, start)
    if prime_BxP is None:
      return state
    return prime(m, state, prime_BxP, cond_BxC)

  def _check(self, cond, batch_size):
    c = self.cfg.cond_dim
    if cond.shape[0] != batch_size or cond.shape[-1] != c:
      raise ValueError(f"condition of shape {cond.shape}; expected ({batch_size}"
                       f", {c}) or ({batch_size}, frames, {c})")

  def segments(self, cond, seeds, num_samples: int, temperature=1.0,
               options: SamplingOptions = SamplingOptions(), prime_BxP=None,
               start: str = "h0", segment_samples: int = 16000):
    """Yields (samples_BxS, logp_BxS) per segment of about
    ``segment_samples`` until ``num_samples`` are out (the last is trimmed).
    logp_BxS: each sample's log-probability under the (untempered) model.

    cond: (B, C), or a schedule (B, N, C) with one vector per top frame
    (N >= num_samples / FS(K)). seeds: B ints. temperature: scalar or (B,).
    """
    lookback = self.cfg.lookback
    cond = jnp.asarray(cond, jnp.float32)
    seeds = np.asarray(seeds, np.uint32).reshape(-1)
    b = seeds.shape[0]
    self._check(cond, b)
    temperature_B = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32),
                                     (b,))
    if not bool(jnp.all(temperature_B > 0)):
      raise ValueError("temperature must be > 0 (use top_k=1 for greedy)")
    n_frames = math.ceil(num_samples / lookback)
    if cond.ndim == 2:
      cond = jnp.broadcast_to(cond[:, None], (b, n_frames, cond.shape[-1]))
    elif cond.shape[1] < n_frames:
      raise ValueError(f"the condition schedule has {cond.shape[1]} vectors;"
                       f" {num_samples} samples need {n_frames} (one per "
                       f"{lookback} samples)")
    keys_B = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    state = self._prime(self.params, prime_BxP, cond[:, 0], batch_size=b,
                        start=start)
    per_segment = max(1, segment_samples // lookback)
    for first in range(0, n_frames, per_segment):
      # Every segment has the same shape (one compile); the last is trimmed.
      frames = jnp.arange(first, first + per_segment).clip(max=n_frames - 1)
      state, samples_BxS, logp_BxS = self._segment(
          self.params, state, cond[:, frames], keys_B, temperature_B,
          first * lookback, options=options)
      keep = min(per_segment * lookback, num_samples - first * lookback)
      yield np.asarray(samples_BxS[:, :keep]), np.asarray(logp_BxS[:, :keep])

  def generate(self, cond, seeds, num_samples: int, temperature=1.0,
               options: SamplingOptions = SamplingOptions(), prime_BxP=None,
               start: str = "h0"):
    """The whole batch in one compiled call: (samples_BxN int32, logp_BxN).
    ``logp_BxN.sum(1)`` is each sequence's log-likelihood under the model."""
    n_frames = math.ceil(num_samples / self.cfg.lookback)
    (samples_BxN, logp_BxN), = list(self.segments(
        cond, seeds, num_samples, temperature, options, prime_BxP, start,
        segment_samples=n_frames * self.cfg.lookback))
    return samples_BxN, logp_BxN
