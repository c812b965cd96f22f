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
from csrnn_jax import sharding
from csrnn_jax.kernels import sample_step

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
  backend: str = "fused"  # the inner step: scan (reference) | fused | pallas

  def __post_init__(self):
    sample_step.check_backend(self.backend)
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


class _Frame(NamedTuple):
  """Scan state inside one top frame: GRU states, the samples of the previous
  and the current top frame (B, 2 FS(K)), the running tap sums (FS(1), B, dim)
  and the log-probabilities of the current frame's samples (B, FS(K))."""
  carry: tuple
  buf_BxL2: jax.Array
  acc_FxBxD: jax.Array
  logp_BxL: jax.Array


@dataclasses.dataclass(frozen=True)
class _Context:
  """What the nested scans close over."""
  m: model_lib.CSampleRNN
  tables_FxQxD: jax.Array
  push_QxFxD: jax.Array
  keys_B: jax.Array
  temperature_B: jax.Array
  options: "SamplingOptions"
  frame_start: jax.Array  # absolute index of the top frame's first sample

  def head(self, features_BxD, c_BxD):
    mlp = self.m.mlp
    head = (sample_step.head_pallas if self.options.backend == "pallas"
            else sample_step.head_jnp)
    return head(features_BxD, c_BxD, mlp.hidden(), mlp.hidden_bias[...],
                mlp.output(), mlp.output_bias[...])


def _samples(ctx: _Context, c_BxRxD, state: _Frame, base):
  """Innermost scan: one sample per tier-2 vector, starting at ``base``."""
  lookback, fs1 = ctx.m.cfg.lookback, ctx.m.cfg.frame_sizes[0]

  def body(state, xs):
    j, c_BxD = xs
    pos = base + j
    if ctx.options.backend == "scan":
      prev_BxF = jax.lax.dynamic_slice_in_dim(state.buf_BxL2,
                                              lookback + pos - fs1, fs1, 1)
      features_BxD = sample_step.scan_features(ctx.tables_FxQxD, prev_BxF)
    else:
      features_BxD = state.acc_FxBxD[0]
    logits_BxQ = ctx.head(features_BxD, c_BxD)
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(
        ctx.keys_B, ctx.frame_start + pos)
    x_B = draw(logits_BxQ, step_keys, ctx.temperature_B, ctx.options)
    logp_Bx1 = jnp.take_along_axis(jax.nn.log_softmax(logits_BxQ, axis=-1),
                                   x_B[:, None], 1)
    acc = state.acc_FxBxD
    if ctx.options.backend != "scan":
      acc = sample_step.push(ctx.push_QxFxD, acc, x_B)
    return state._replace(
        buf_BxL2=jax.lax.dynamic_update_slice_in_dim(
            state.buf_BxL2, x_B[:, None], lookback + pos, 1),
        acc_FxBxD=acc,
        logp_BxL=jax.lax.dynamic_update_slice_in_dim(
            state.logp_BxL, logp_Bx1, pos, 1)), None

  xs = (jnp.arange(c_BxRxD.shape[1]), jnp.swapaxes(c_BxRxD, 0, 1))
  return jax.lax.scan(body, state, xs)[0]


def _run_below(ctx: _Context, tier_index, vectors_BxRxD, state: _Frame, base,
               cond_BxC):
  """Consume the vectors tier ``tier_index + 1`` emitted for one of its frames:
  run tier ``tier_index`` (or the MLP when -1) once per vector."""
  if tier_index < 0:
    return _samples(ctx, vectors_BxRxD, state, base)
  m = ctx.m
  n, lookback = m.cfg.frame_sizes[tier_index + 1], m.cfg.lookback

  def body(state, xs):
    j, upper_BxD = xs
    pos = base + j * n
    frame_BxN = jax.lax.dynamic_slice_in_dim(state.buf_BxL2,
                                             lookback + pos - n, n, 1)
    vectors, h = m.frame_step(tier_index, frame_BxN, cond_BxC, upper_BxD,
                              state.carry[tier_index])
    carry = state.carry[:tier_index] + (h,) + state.carry[tier_index + 1:]
    return _run_below(ctx, tier_index - 1, vectors,
                      state._replace(carry=carry), pos, cond_BxC), None

  xs = (jnp.arange(vectors_BxRxD.shape[1]), jnp.swapaxes(vectors_BxRxD, 0, 1))
  return jax.lax.scan(body, state, xs)[0]


def generate_segment(m, state: GenState, cond_BxFxC, keys_B, temperature_B,
                     start_index, options: SamplingOptions):
  """F = cond_BxFxC.shape[1] top frames of audio after ``state``.

  Returns (state, samples_BxS with S = F * FS(K), logp_BxS: each sample's
  log-probability under the untempered model). ``start_index`` is the
  absolute index of the first sample (for the per-sample keys).
  """
  lookback, fs1 = m.cfg.lookback, m.cfg.frame_sizes[0]
  top = len(m.frame_tiers) - 1
  tables_FxQxD = m.mlp.tables()
  b = state.last_frame_BxL.shape[0]

  def top_frame(gen, xs):
    carry, last_BxL, acc_FxBxD = gen
    f, cond_BxC = xs
    vectors, h = m.frame_step(top, last_BxL, cond_BxC, None, carry[top])
    ctx = _Context(m, tables_FxQxD, push_QxFxD, keys_B, temperature_B,
                   options, start_index + f * lookback)
    frame = _Frame(
        carry[:top] + (h,),
        jnp.concatenate([last_BxL, jnp.zeros((b, lookback), jnp.int32)], 1),
        acc_FxBxD, jnp.zeros((b, lookback)))
    frame = _run_below(ctx, top - 1, vectors, frame, 0, cond_BxC)
    frame_BxL = frame.buf_BxL2[:, lookback:]
    return ((frame.carry, frame_BxL, frame.acc_FxBxD),
            (frame_BxL, frame.logp_BxL))

  push_QxFxD = sample_step.push_tables(tables_FxQxD)
  acc_FxBxD = sample_step.initial_sums(tables_FxQxD,
                                       state.last_frame_BxL[:, -fs1:])
  xs = (jnp.arange(cond_BxFxC.shape[1]), jnp.swapaxes(cond_BxFxC, 0, 1))
  (carry, last, _), (frames_FxBxL, logp_FxBxL) = jax.lax.scan(
      top_frame, (state.carry, state.last_frame_BxL, acc_FxBxD), xs)
  flat = lambda a_FxBxL: jnp.swapaxes(a_FxBxL, 0, 1).reshape(b, -1)
  return GenState(carry, last), flat(frames_FxBxL), flat(logp_FxBxL)


class Generator:
  """Compiled generation for one model: ``generate`` for a batch in one call,
  ``segments`` for long audio in pieces. Compiles once per shape/options.

  ``mesh``: split the batch's rows over the mesh's devices (params
  replicated); a batch that does not divide is padded with copies of its last
  row, which are dropped from the output.
  """

  def __init__(self, graphdef, params, mesh=None):
    self.graphdef, self.params = model_lib.fold_weight_norm(graphdef, params)
    self.cfg = model_lib.bind(self.graphdef, self.params).cfg
    self.mesh = mesh
    if mesh is not None:
      self.params = sharding.replicate(self.params, mesh)
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
    if self.mesh is not None:  # pad the rows to a multiple of the devices
      rows = np.minimum(np.arange(sharding.round_up_batch(b, self.mesh)),
                        b - 1)
      cond, seeds, temperature_B = cond[rows], seeds[rows], temperature_B[rows]
      prime_BxP = None if prime_BxP is None else jnp.asarray(prime_BxP)[rows]
    keys_B = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    state = self._prime(self.params, prime_BxP, cond[:, 0],
                        batch_size=len(seeds), start=start)
    if self.mesh is not None:
      state = GenState(
          sharding.shard_batch_rows(state.carry, self.mesh, batch_axis=1),
          sharding.shard_batch_rows(state.last_frame_BxL, self.mesh))
      cond, keys_B, temperature_B = sharding.shard_batch_rows(
          (cond, keys_B, temperature_B), self.mesh)
    per_segment = max(1, segment_samples // lookback)
    for first in range(0, n_frames, per_segment):
      # Every segment has the same shape (one compile); the last is trimmed.
      frames = jnp.arange(first, first + per_segment).clip(max=n_frames - 1)
      state, samples_BxS, logp_BxS = self._segment(
          self.params, state, cond[:, frames], keys_B, temperature_B,
          first * lookback, options=options)
      keep = min(per_segment * lookback, num_samples - first * lookback)
      yield (np.asarray(samples_BxS[:b, :keep]),
             np.asarray(logp_BxS[:b, :keep]))

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
