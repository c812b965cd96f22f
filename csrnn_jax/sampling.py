"""Generation as one compiled program per (batch, length, options) shape.

A segment of audio is nested ``lax.scan``s: over top-tier frames, then over
the frames of each tier below, then over samples. The carry holds the RNN
states and a buffer of the previous top frame plus the one being written, so
each level reads only what the level above wrote. No Python runs per sample.

Randomness: sample t of row b uses ``fold_in(key_b, t)`` with ``key_b`` from
the row's own seed, so a row's audio depends only on its seed, condition,
temperature and guidance: not on the batch it shares, nor on how a long file
is cut into segments. Sampling is Gumbel-max on ``logits / temperature``
after optional top-k / top-p / min-p / typical filtering, at every step or
only where the audio is loud (``SamplingOptions.truncate_above``); the
returned log-likelihood is that of the samples under the untempered model (with
guidance: the untempered guided distribution).

Classifier-free guidance (``SamplingOptions.guide``): each output row runs
G = M + 1 passes as rows of the same scan, its M condition components and the
model's null condition; pass p of output row b is scan row b G + p, so a
row's passes stay together (on one device, and in the crash guard's
rewinds). Every sample step combines the passes, ``null + sum_i s_i (v_i -
null)`` with the row's scales s (the function ``guide``), draws one sample
from the result and feeds it to every pass. ``guide="logits"`` combines the
MLP's logits; ``"cond_vectors"`` combines the tier-2 vectors that enter the
MLP and runs the MLP once per output row. A row with one component and s = 1
samples exactly as without guidance; ``guide="off"`` compiles the plain
program (G = 1).
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
GUIDES = ("off", "logits", "cond_vectors")
# The most samples one call generates: sample indices (the per-sample keys)
# are int32, and a segment may reach past the end by up to num_samples.
MAX_SAMPLES = 2 ** 30


class GenState(NamedTuple):
  """Between segments: RNN states (``CSampleRNN.initial_carry``'s structure:
  per frame tier (n_rnn, B, dim), or the pair (h, c) of those with LSTM
  cells) and the last top frame of samples (B, FS(K)). With guidance B
  counts every pass of every output row (B G rows)."""
  carry: tuple
  last_frame_BxL: jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """Options that change the compiled program (static)."""
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1.0: off
  min_p: float = 0.0  # 0.0: off
  typical_p: float = 1.0  # 1.0: off
  # The filters apply only at the steps whose previous FS(1) samples reach
  # more than this many levels from the centre (-1: at every step). Cutting
  # the tail cleans the noise floor of loud passages; in quiet ones it pulls
  # the audio into silence, which a full draw avoids.
  truncate_above: int = -1
  guide: str = "off"  # where guidance applies: off | logits | cond_vectors
  backend: str = "fused"  # the inner step: scan (reference) | fused | pallas

  def __post_init__(self):
    sample_step.check_backend(self.backend)
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k} must be >= 0 (0 turns it off)")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 turns it off)")
    if not 0.0 <= self.min_p <= 1.0:
      raise ValueError(f"min_p={self.min_p} must be in [0, 1] (0 turns it off)")
    if not 0.0 < self.typical_p <= 1.0:
      raise ValueError(f"typical_p={self.typical_p} must be in (0, 1] (1 turns "
                       "it off)")
    if self.truncate_above < -1:
      raise ValueError(f"truncate_above={self.truncate_above} must be >= 0 "
                       "levels, or -1 (the filters apply at every step)")
    if self.guide not in GUIDES:
      raise ValueError(f"guide={self.guide!r} is unknown; allowed values: "
                       f"{', '.join(GUIDES)}")

  @property
  def guided(self) -> bool:
    return self.guide != "off"

  @property
  def filtered(self) -> bool:
    """Whether a rule cuts the distribution (top-k/p, min-p, typical)."""
    return (self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0
            or self.typical_p < 1.0)

  @property
  def gated(self) -> bool:
    """Whether the filters apply only at loud steps (``truncate_above``)."""
    return self.filtered and self.truncate_above >= 0


def _keep_mass(logits_BxQ, rank_BxQ, mass):
  """Keep the tokens that come first in ascending ``rank`` until their
  probability reaches ``mass`` (and those that tie with the last one)."""
  order_BxQ = jnp.argsort(rank_BxQ, axis=-1)
  sorted_rank_BxQ = jnp.take_along_axis(rank_BxQ, order_BxQ, -1)
  probs_BxQ = jnp.take_along_axis(jax.nn.softmax(logits_BxQ, axis=-1),
                                  order_BxQ, -1)
  before_BxQ = jnp.cumsum(probs_BxQ, axis=-1) - probs_BxQ
  last_Bx1 = jnp.max(jnp.where(before_BxQ < mass, sorted_rank_BxQ, -jnp.inf),
                     axis=-1, keepdims=True)
  return jnp.where(rank_BxQ > last_Bx1, -jnp.inf, logits_BxQ)


def filter_logits(logits_BxQ, options: SamplingOptions):
  """Logits outside the kept set become -inf. The rules apply in this order,
  each to what the ones before kept: top-k; top-p (nucleus: the likeliest
  tokens until their mass reaches top_p); min-p (tokens with p >= min_p
  p_max); typical (Meister et al. 2022: tokens in order of how far their
  information -log p is from the entropy, until their mass reaches
  typical_p)."""
  if options.top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxQ, options.top_k)[0][:, -1:]
    logits_BxQ = jnp.where(logits_BxQ < kth_Bx1, -jnp.inf, logits_BxQ)
  if options.top_p < 1.0:
    logits_BxQ = _keep_mass(logits_BxQ, -logits_BxQ, options.top_p)
  if options.min_p > 0.0:
    floor_Bx1 = (jnp.max(logits_BxQ, axis=-1, keepdims=True)
                 + math.log(options.min_p))
    logits_BxQ = jnp.where(logits_BxQ < floor_Bx1, -jnp.inf, logits_BxQ)
  if options.typical_p < 1.0:
    logp_BxQ = jax.nn.log_softmax(logits_BxQ, axis=-1)
    p_BxQ = jnp.exp(logp_BxQ)
    entropy_Bx1 = -jnp.sum(jnp.where(p_BxQ > 0, p_BxQ * logp_BxQ, 0.0),
                           axis=-1, keepdims=True)
    logits_BxQ = _keep_mass(logits_BxQ, jnp.abs(-logp_BxQ - entropy_Bx1),
                            options.typical_p)
  return logits_BxQ


def guide(values_RxX, scales_BxM):
  """Each output row's guided values (B, X) from its G = M + 1 pass rows
  (rows b G .. b G + M of ``values_RxX``, the last one the null condition's):
  ``null + sum_i s_i (v_i - null)``. A row whose scales are (1, 0, ..., 0)
  gets v_0 exactly: plain conditional sampling, bit for bit."""
  b, m = scales_BxM.shape
  v_BxGxX = values_RxX.reshape((b, m + 1) + values_RxX.shape[1:])
  null_BxX = v_BxGxX[:, m]
  guided_BxX = null_BxX
  for i in range(m):
    guided_BxX = guided_BxX + scales_BxM[:, i, None] * (v_BxGxX[:, i]
                                                        - null_BxX)
  plain_Bx1 = ((scales_BxM[:, :1] == 1)
               & jnp.all(scales_BxM[:, 1:] == 0, axis=1, keepdims=True))
  return jnp.where(plain_Bx1, v_BxGxX[:, 0], guided_BxX)


def pass_conditions(m: model_lib.CSampleRNN, cond_BxMxTxC, guided: bool):
  """The condition of every pass row, (B G, T, C): each output row's M
  components and then, guided, the null condition (G = M + 1); unguided
  there is one component and G = 1."""
  if not guided:
    return cond_BxMxTxC[:, 0]
  b, _, f, c = cond_BxMxTxC.shape
  null_Bx1xTxC = jnp.broadcast_to(m.null_condition(b)[:, None, None],
                                  (b, 1, f, c))
  return jnp.concatenate([cond_BxMxTxC, null_Bx1xTxC], axis=1).reshape(
      b * (cond_BxMxTxC.shape[1] + 1), f, c)


def draw(logits_BxQ, keys_B, temperature_B, options: SamplingOptions,
         filter_B=None):
  """One sample per row: Gumbel-max over tempered logits, filtered in the
  rows where ``filter_B`` (bool (B,); every row when None)."""
  scaled_BxQ = logits_BxQ / temperature_B[:, None]
  filtered_BxQ = filter_logits(scaled_BxQ, options)
  if filter_B is not None:
    filtered_BxQ = jnp.where(filter_B[:, None], filtered_BxQ, scaled_BxQ)
  gumbel_BxQ = jax.vmap(lambda k: jax.random.gumbel(
      k, logits_BxQ.shape[-1:]))(keys_B)
  return jnp.argmax(filtered_BxQ + gumbel_BxQ, axis=-1).astype(jnp.int32)


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
  """Scan state inside one top frame, over R = B G pass rows: RNN states, the
  samples of the previous and the current top frame (R, 2 FS(K)), the running
  tap sums (FS(1), R, dim), and the log-probabilities of the current frame's
  samples per output row (B, FS(K)), or of every level (B, FS(K), Q) when
  teacher-forced."""
  carry: tuple
  buf_Rx2L: jax.Array
  acc_LxRxD: jax.Array
  logp_BxL: jax.Array


@dataclasses.dataclass(frozen=True)
class _Context:
  """What the nested scans close over."""
  m: model_lib.CSampleRNN
  tables: sample_step.StepTables
  keys_B: jax.Array
  temperature_B: jax.Array
  scales_BxM: jax.Array  # guidance scale of each row's components
  filtered_B: jax.Array | None  # the rows the filters may apply to; None: all
  options: "SamplingOptions"
  frame_start: jax.Array  # absolute index of the top frame's first sample
  teacher_BxL: jax.Array | None  # the top frame's given samples, or None

  @property
  def passes(self) -> int:
    return self.scales_BxM.shape[1] + 1 if self.options.guided else 1

  def guided(self, values_RxX):
    """The output rows' values (B, X) from their passes' (R, X)."""
    if not self.options.guided:
      return values_RxX
    return guide(values_RxX, self.scales_BxM)


def _tier_step(m: model_lib.CSampleRNN, tier_index: int, frame_RxL, cond_RxC,
               upper_RxD, state):
  """Frame tier ``tier_index + 2`` over one frame (``CSampleRNN.run_tier``
  with T = 1): its (R, r, dim) vectors as the level below reads them (tier
  2's with the condition's own term, ``cond_mlp``) and its new state."""
  cond_Rx1xC = m.embed_condition(cond_RxC)[:, None]
  vectors_RxUxD, state = m.run_tier(
      tier_index, frame_RxL[:, None], cond_Rx1xC,
      None if upper_RxD is None else upper_RxD[:, None], state)
  if tier_index == 0 and m.cfg.cond_mlp:
    vectors_RxUxD = vectors_RxUxD + m.mlp.condition(cond_Rx1xC)
  return vectors_RxUxD, state


def _samples(ctx: _Context, c_RxUxD, state: _Frame, base):
  """Innermost scan: one sample per tier-2 vector, starting at ``base``."""
  mlp, lookback, fs1 = ctx.m.mlp, ctx.m.cfg.lookback, ctx.m.cfg.frame_sizes[0]

  def body(state, xs):
    j, c_RxD = xs
    pos = base + j
    prev_RxL = jax.lax.dynamic_slice_in_dim(state.buf_Rx2L,
                                            lookback + pos - fs1, fs1, 1)
    if ctx.options.backend == "scan":
      features_RxD = mlp.features(prev_RxL, ctx.tables.taps_LxQxD)[:, 0]
    else:
      features_RxD = state.acc_LxRxD[0]
    pallas = ctx.options.backend == "pallas"
    if ctx.options.guide == "cond_vectors":  # the passes share the samples
      logits_BxQ = mlp.head(features_RxD[::ctx.passes], ctx.guided(c_RxD),
                            pallas=pallas)
    else:
      logits_BxQ = ctx.guided(mlp.head(features_RxD, c_RxD, pallas=pallas))
    logp_BxQ = jax.nn.log_softmax(logits_BxQ, axis=-1)
    if ctx.teacher_BxL is None:
      step_keys = jax.vmap(jax.random.fold_in, (0, None))(
          ctx.keys_B, ctx.frame_start + pos)
      x_B = draw(logits_BxQ, step_keys, ctx.temperature_B, ctx.options,
                 _filter_rows(ctx, prev_RxL[::ctx.passes]))
      logp_Bx1 = jnp.take_along_axis(logp_BxQ, x_B[:, None], 1)
    else:
      x_B = jax.lax.dynamic_index_in_dim(ctx.teacher_BxL, pos, 1, False)
      logp_Bx1 = logp_BxQ[:, None]
    x_R = jnp.repeat(x_B, ctx.passes)  # every pass continues the same audio
    acc = state.acc_LxRxD
    if ctx.options.backend != "scan":
      acc = mlp.push_sample(ctx.tables, acc, x_R)
    return state._replace(
        buf_Rx2L=jax.lax.dynamic_update_slice_in_dim(
            state.buf_Rx2L, x_R[:, None], lookback + pos, 1),
        acc_LxRxD=acc,
        logp_BxL=jax.lax.dynamic_update_slice_in_dim(
            state.logp_BxL, logp_Bx1, pos, 1)), None

  xs = (jnp.arange(c_RxUxD.shape[1]), jnp.swapaxes(c_RxUxD, 0, 1))
  return jax.lax.scan(body, state, xs)[0]


def _filter_rows(ctx: _Context, prev_BxL):
  """Which rows the filters apply to at this step, or None: all. The plan's
  ``filtered_B`` rows, and of those, when gated, the ones whose previous
  FS(1) samples are loud (``truncate_above``)."""
  if not ctx.options.filtered:
    return None
  rows_B = ctx.filtered_B
  if ctx.options.gated:
    centre = audio.q_zero(ctx.m.cfg.q_levels)
    loud_B = (jnp.max(jnp.abs(prev_BxL - centre), 1)
              > ctx.options.truncate_above)
    rows_B = loud_B if rows_B is None else rows_B & loud_B
  return rows_B


def _run_below(ctx: _Context, tier_index, vectors_RxUxD, state: _Frame, base,
               cond_RxC, skip_RxD=None):
  """Consume the vectors tier ``tier_index + 1`` emitted for one of its frames:
  run tier ``tier_index`` (or the MLP when -1) once per vector. ``skip_RxD``
  (``skip_conn``): the sum of the current skip terms of the tiers above
  ``tier_index + 1``, which every sample below them adds to its MLP input."""
  if tier_index < 0:
    if skip_RxD is not None:
      vectors_RxUxD = vectors_RxUxD + skip_RxD[:, None]
    return _samples(ctx, vectors_RxUxD, state, base)
  m = ctx.m
  n, lookback = m.cfg.frame_sizes[tier_index + 1], m.cfg.lookback

  def body(state, xs):
    j, upper_RxD = xs
    pos = base + j * n
    frame_RxL = jax.lax.dynamic_slice_in_dim(state.buf_Rx2L,
                                             lookback + pos - n, n, 1)
    vectors, h = _tier_step(m, tier_index, frame_RxL, cond_RxC, upper_RxD,
                            state.carry[tier_index])
    carry = state.carry[:tier_index] + (h,) + state.carry[tier_index + 1:]
    skip = skip_RxD
    if m.cfg.skip_conn:  # upper_RxD is a vector of a tier >= 3
      term_RxD = m.skip_term(tier_index + 1, upper_RxD)
      skip = term_RxD if skip is None else skip + term_RxD
    return _run_below(ctx, tier_index - 1, vectors,
                      state._replace(carry=carry), pos, cond_RxC, skip), None

  xs = (jnp.arange(vectors_RxUxD.shape[1]), jnp.swapaxes(vectors_RxUxD, 0, 1))
  return jax.lax.scan(body, state, xs)[0]


def generate_segment(m, state: GenState, cond_BxMxTxC, keys_B, temperature_B,
                     scales_BxMxT, start_index, options: SamplingOptions,
                     teacher_BxS=None, filtered_B=None):
  """T = cond_BxMxTxC.shape[2] top frames of audio after ``state``.

  cond_BxMxTxC: each row's M condition components per top frame (M = 1
  without guidance); scales_BxMxT: their guidance scales per top frame
  (unused without guidance). ``state`` holds B G rows (``pass_conditions``).
  Returns (state, samples_BxS with S = T FS(K), logp_BxS: each sample's
  log-probability under the untempered, guided model). ``start_index`` is
  the absolute index of the first sample (for the per-sample keys).

  teacher_BxS: teacher forcing, int levels (B, S) fed in place of the drawn
  samples (keys, temperatures and filters unused); the samples returned are
  these, and logp is that of every level at each position, (B, S, Q).
  filtered_B: bool (B,), the rows that the options' filters apply to (the
  others draw from the full distribution); None: every row.
  """
  lookback, fs1 = m.cfg.lookback, m.cfg.frame_sizes[0]
  top = len(m.frame_tiers) - 1
  tables = m.mlp.step_tables()
  cond_RxTxC = pass_conditions(m, cond_BxMxTxC, options.guided)
  b, r, n_frames = keys_B.shape[0], cond_RxTxC.shape[0], cond_RxTxC.shape[1]
  logp_shape = (b, lookback) + (() if teacher_BxS is None
                                else (m.cfg.q_levels,))

  def top_frame(gen, xs):
    carry, last_RxL, acc_LxRxD = gen
    f, cond_RxC, scales_BxM, teacher_BxL = xs
    vectors, h = _tier_step(m, top, last_RxL, cond_RxC, None, carry[top])
    ctx = _Context(m, tables, keys_B, temperature_B, scales_BxM, filtered_B,
                   options, start_index + f * lookback, teacher_BxL)
    frame = _Frame(
        carry[:top] + (h,),
        jnp.concatenate([last_RxL, jnp.zeros((r, lookback), jnp.int32)], 1),
        acc_LxRxD, jnp.zeros(logp_shape))
    frame = _run_below(ctx, top - 1, vectors, frame, 0, cond_RxC)
    frame_RxL = frame.buf_Rx2L[:, lookback:]
    return ((frame.carry, frame_RxL, frame.acc_LxRxD),
            (frame_RxL[::r // b], frame.logp_BxL))

  acc_LxRxD = m.mlp.running_sums(tables, state.last_frame_BxL[:, -fs1:])
  teacher_TxBxL = None if teacher_BxS is None else jnp.swapaxes(
      jnp.asarray(teacher_BxS, jnp.int32).reshape(b, n_frames, lookback), 0,
      1)
  xs = (jnp.arange(n_frames), jnp.swapaxes(cond_RxTxC, 0, 1),
        jnp.moveaxis(scales_BxMxT, 2, 0), teacher_TxBxL)
  (carry, last, _), (frames_TxBxL, logp_TxBxL) = jax.lax.scan(
      top_frame, (state.carry, state.last_frame_BxL, acc_LxRxD), xs)
  flat = lambda a_TxBxL: jnp.swapaxes(a_TxBxL, 0, 1).reshape(
      (b, -1) + a_TxBxL.shape[3:])
  return GenState(carry, last), flat(frames_TxBxL), flat(logp_TxBxL)


@dataclasses.dataclass(frozen=True)
class Plan:
  """A batch's checked inputs, shaped for the compiled programs
  (``Generator.plan``), one entry per output row: M condition components per
  top frame (B, M, T, C), keys, temperatures (B,), the components'
  guidance scales per top frame (B, M, T) and the rows that the options'
  filters apply to (``filtered_B``, bool (B,), or None: all; the crash
  guard redraws some rows unfiltered in the same program as the others).
  ``per_frame``: T counts the audio's top frames (a schedule, sliced per
  segment); else the rows' one condition is held over the T frames of one
  segment. ``n_frames``: the top frames of the audio asked for. The arrays
  other than the keys are host (numpy) arrays, or jax.Arrays once split
  over a mesh."""
  cond_BxMxTxC: np.ndarray | jax.Array
  keys_B: jax.Array
  temperature_B: np.ndarray | jax.Array
  scales_BxMxT: np.ndarray | jax.Array
  per_frame: bool
  options: SamplingOptions
  n_frames: int
  filtered_B: np.ndarray | jax.Array | None = None

  @property
  def rows(self) -> int:
    return self.keys_B.shape[0]

  @property
  def passes(self) -> int:
    """Scan rows per output row: its M components and, guided, the null
    condition (``pass_conditions``)."""
    return self.cond_BxMxTxC.shape[1] + 1 if self.options.guided else 1

  def map(self, fn) -> "Plan":
    """The plan with ``fn`` applied to each of its per-row arrays."""
    return dataclasses.replace(self, **{
        k: fn(getattr(self, k)) for k in ("cond_BxMxTxC", "keys_B",
                                          "temperature_B", "scales_BxMxT",
                                          "filtered_B")
        if getattr(self, k) is not None})

  def redrawn(self, rows_B, scales_BxMxT) -> "Plan":
    """The plan with the rows ``rows_B`` (bool (B,)) drawn without the
    options' filters and at ``scales_BxMxT`` (the crash guard's redraw, at
    guidance 1), in the same program as the other rows."""
    kept_B = ~rows_B if self.filtered_B is None else self.filtered_B & ~rows_B
    return dataclasses.replace(self, filtered_B=kept_B, scales_BxMxT=np.where(
        rows_B[:, None, None], scales_BxMxT, self.scales_BxMxT))

  def frames(self, index_T):
    """The conditions and scales of top frames ``index_T`` (of the audio; a
    row's own frames (B, T) when 2-D), or the held ones."""
    if not self.per_frame:
      return self.cond_BxMxTxC, self.scales_BxMxT
    if np.ndim(index_T) == 1:
      return self.cond_BxMxTxC[:, :, index_T], self.scales_BxMxT[:, :, index_T]
    rows_Bx1 = np.arange(len(index_T))[:, None]
    return (jnp.swapaxes(self.cond_BxMxTxC[rows_Bx1, :, index_T], 1, 2),
            jnp.swapaxes(self.scales_BxMxT[rows_Bx1, :, index_T], 1, 2))


class Generator:
  """Compiled generation for one model: ``generate`` for a batch in one call,
  ``segments`` for long audio in pieces. Compiles once per shape/options.

  Both are written on a resumable API that callers with a loop of their own
  (the crash guard) use too: ``plan`` checks a batch's inputs, ``prime``
  gives the state before the first sample, and ``segment`` generates some
  top frames from a state and returns the state after them.

  ``mesh``: split the batch's rows over the mesh's devices (params
  replicated); a batch that does not divide is padded with copies of its last
  row, which are dropped from the output.
  """

  def __init__(self, graphdef, params, mesh=None):
    self._trained_graphdef, self.mesh = graphdef, mesh
    self.set_params(params)
    self.cfg = model_lib.bind(self.graphdef, self.params).cfg
    self._segment_program = jax.jit(self._segment_impl,
                                    static_argnames=("options",))
    self._prime_program = jax.jit(self._prime_impl,
                                  static_argnames=("start", "guided"))

  def set_params(self, params) -> None:
    """Swaps in other parameters of the same model (training's current
    ones, ``own_state``), keeping the compiled programs."""
    self.graphdef, self.params = model_lib.fold_weight_norm(
        self._trained_graphdef, params)
    if self.mesh is not None:
      self.params = sharding.replicate(self.params, self.mesh)

  def _segment_impl(self, params, state, cond_BxMxTxC, keys_B, temperature_B,
                    scales_BxMxT, start_index, teacher_BxS, filtered_B,
                    options):
    m = model_lib.bind(self.graphdef, params)
    return generate_segment(m, state, cond_BxMxTxC, keys_B, temperature_B,
                            scales_BxMxT, start_index, options, teacher_BxS,
                            filtered_B)

  def _prime_impl(self, params, prime_BxP, cond_BxMxC, start, guided):
    """The state before the first sample, B G pass rows (B = cond rows)."""
    m = model_lib.bind(self.graphdef, params)
    cond_RxC = pass_conditions(m, cond_BxMxC[:, :, None], guided)[:, 0]
    state = initial_state(m, cond_RxC.shape[0], start)
    if prime_BxP is None:
      return state
    passes = cond_RxC.shape[0] // cond_BxMxC.shape[0]
    return prime(m, state, jnp.repeat(jnp.asarray(prime_BxP), passes, axis=0),
                 cond_RxC)

  def plan(self, cond, seeds, num_samples: int, temperature=1.0,
           options: SamplingOptions = SamplingOptions(), guidance=1.0,
           mix_weights=None, segment_frames: int | None = None) -> Plan:
    """Checks a batch's inputs (as ``segments`` takes them) and shapes them
    for ``prime`` and ``segment``. A schedule (of conditions or of mix
    weights) must cover the top frames of ``num_samples``; one condition per
    row is held over ``segment_frames`` (default: all of them), the frames
    of one ``segment`` call."""
    if not 1 <= num_samples <= MAX_SAMPLES:
      raise ValueError(f"num_samples={num_samples}: give 1 to {MAX_SAMPLES} "
                       "samples a call (generate longer audio in several)")
    n_frames = math.ceil(num_samples / self.cfg.lookback)
    # Host arrays (numpy) until the programs take them: checking and shaping
    # them eagerly in jax would compile a small program per op and shape.
    c = self.cfg.cond_dim
    cond = np.asarray(cond, np.float32)
    seeds = np.asarray(seeds, np.uint32).reshape(-1)
    b = seeds.shape[0]
    if b == 0:
      raise ValueError("no rows to generate: give at least one seed")
    if not np.all(np.isfinite(cond)):
      raise ValueError("condition vectors must be finite")
    # Which inputs are per top frame: a (B, T, C) condition, (B, M, T) weights.
    cond_frames = mix_weights is None and cond.ndim == 3
    weight_frames = mix_weights is not None and np.ndim(mix_weights) == 3
    if mix_weights is None:
      weights_BxMxT = np.ones((b, 1, 1), np.float32)
      if cond.shape[0] != b or cond.shape[-1] != c or cond.ndim not in (2, 3):
        raise ValueError(f"condition of shape {cond.shape}; expected ({b}, {c})"
                         f" or ({b}, frames, {c})")
      cond = cond[:, None] if cond.ndim == 3 else cond[:, None, None]
    else:
      weights_BxMxT = np.asarray(mix_weights, np.float32)
      if weights_BxMxT.ndim not in (2, 3) or weights_BxMxT.shape[0] != b:
        raise ValueError(f"mix_weights of shape {weights_BxMxT.shape}; "
                         f"expected ({b}, components) or ({b}, components, "
                         "frames)")
      m = weights_BxMxT.shape[1]
      if cond.shape != (b, m, c):
        raise ValueError(
            f"condition of shape {cond.shape}; a mix of {m} components needs "
            f"one vector per component: ({b}, {m}, {c})")
      cond = cond[:, :, None]
      if weights_BxMxT.ndim == 2:
        weights_BxMxT = weights_BxMxT[:, :, None]
    per_frame = cond_frames or weight_frames
    for what, n, given in (("condition schedule", cond.shape[2], cond_frames),
                           ("mix weight schedule", weights_BxMxT.shape[2],
                            weight_frames)):
      if given and n < n_frames:
        raise ValueError(f"the {what} has {n} vectors; {n_frames} top frames "
                         f"need one each (one per {self.cfg.lookback} "
                         "samples)")
    frames = (max(cond.shape[2], weights_BxMxT.shape[2]) if per_frame
              else segment_frames or n_frames)
    cond = np.broadcast_to(cond, cond.shape[:2] + (frames, c))
    temperature_B = np.broadcast_to(np.asarray(temperature, np.float32), (b,))
    if not np.all(temperature_B > 0):
      raise ValueError("temperature must be > 0 (use top_k=1 for greedy)")
    scales_BxMxT = np.broadcast_to(
        np.broadcast_to(np.asarray(guidance, np.float32),
                        (b,))[:, None, None] * weights_BxMxT,
        cond.shape[:3])
    if not np.all(np.isfinite(scales_BxMxT)):
      raise ValueError("guidance scales and mix weights must be finite")
    plain = mix_weights is None and np.all(scales_BxMxT == 1)
    if not options.guided and not plain:
      raise ValueError(
          "guidance other than 1 and mixes run the guided program: pass "
          "options=SamplingOptions(guide='logits') (or 'cond_vectors')")
    return Plan(cond, jax.vmap(jax.random.key)(jnp.asarray(seeds)),
                temperature_B, scales_BxMxT, per_frame, options, n_frames)

  def prime(self, plan: Plan, prime_BxP=None, start: str = "h0") -> GenState:
    """The state before the plan's first sample: silence and the learned h0
    (``start="zeros"``: zero hidden states), continued over ``prime_BxP``
    (int levels (B, P), any P) when given. Holds B G pass rows."""
    return self._prime_program(self.params, prime_BxP,
                               plan.cond_BxMxTxC[:, :, 0], start=start,
                               guided=plan.options.guided)

  def segment(self, plan: Plan, state: GenState, index_T, keys_B=None,
              start_index=0):
    """The top frames ``index_T`` of the plan after ``state``: (T,) for every
    row, or (B, T) each row's own (where a schedule is read; a held condition
    covers its T frames). keys_B: the rows' keys (default: the plan's);
    start_index: the absolute index of the first sample (for the per-sample
    keys). Returns (state, samples_BxS, logp_BxS), S = T FS(K), as
    ``generate_segment``."""
    return self._run_segment(plan, state, index_T, keys_B, start_index, None)

  def score(self, plan: Plan, state: GenState, index_T, teacher_BxS):
    """Teacher forcing through the generation program: ``segment`` fed the
    given samples ``teacher_BxS`` (B, T FS(K) int levels) in place of drawn
    ones. Returns (state after them, logp_BxSxQ: the log-probability of
    every level at each position under the untempered (guided) model, as
    generation computes it; the given samples' are ``take_along_axis``)."""
    state, _, logp_BxSxQ = self._run_segment(
        plan, state, index_T, None, 0, jnp.asarray(teacher_BxS, jnp.int32))
    return state, logp_BxSxQ

  def _run_segment(self, plan: Plan, state, index_T, keys_B, start_index,
                   teacher_BxS):
    cond_BxMxTxC, scales_BxMxT = plan.frames(index_T)
    return self._segment_program(
        self.params, state, cond_BxMxTxC,
        plan.keys_B if keys_B is None else keys_B, plan.temperature_B,
        scales_BxMxT, start_index, teacher_BxS, plan.filtered_B,
        options=plan.options)

  def segments(self, cond, seeds, num_samples: int, temperature=1.0,
               options: SamplingOptions = SamplingOptions(), prime_BxP=None,
               start: str = "h0", segment_samples: int = 16000,
               guidance=1.0, mix_weights=None):
    """Yields (samples_BxS, logp_BxS) per segment of about
    ``segment_samples`` until ``num_samples`` are out (the last is trimmed).
    logp_BxS: each sample's log-probability under the (untempered) model.

    cond: (B, C), or a schedule (B, T, C) with one vector per top frame
    (T >= num_samples / FS(K)). seeds: B ints. temperature: scalar or (B,).
    guidance: the scale s, scalar or (B,), with ``options.guide`` on:
    ``l_null + s (l_cond - l_null)`` (1: plain sampling; 0: the null
    condition alone). mix_weights (B, M): a product of experts of M
    conditions, cond (B, M, C) holding them; component i's scale is
    ``guidance * mix_weights[:, i]``. mix_weights (B, M, T): the weights per
    top frame (a morph between mixes).
    """
    lookback = self.cfg.lookback
    n_frames = math.ceil(num_samples / lookback)
    per_segment = min(max(1, segment_samples // lookback), n_frames)
    # A schedule is sliced per segment; one condition per row is held over
    # one segment, so memory does not grow with num_samples.
    plan = self.plan(cond, seeds, num_samples, temperature, options, guidance,
                     mix_weights, per_segment)
    b = plan.rows
    if self.mesh is not None:  # pad the rows to a multiple of the devices
      pad = np.minimum(np.arange(sharding.round_up_batch(b, self.mesh)), b - 1)
      plan = plan.map(lambda x: x[pad])
      prime_BxP = None if prime_BxP is None else np.asarray(prime_BxP)[pad]
    state = self.prime(plan, prime_BxP, start)
    if self.mesh is not None:
      state = GenState(
          sharding.shard_batch_rows(state.carry, self.mesh, batch_axis=1),
          sharding.shard_batch_rows(state.last_frame_BxL, self.mesh))
      plan = plan.map(lambda x: sharding.shard_batch_rows(x, self.mesh))
    for first in range(0, n_frames, per_segment):
      # Every segment has the same shape (one compile); the last is trimmed.
      index_T = np.arange(first, first + per_segment).clip(max=n_frames - 1)
      state, samples_BxS, logp_BxS = self.segment(plan, state, index_T,
                                                  start_index=first * lookback)
      keep = min(per_segment * lookback, num_samples - first * lookback)
      yield (np.asarray(samples_BxS[:b, :keep]),
             np.asarray(logp_BxS[:b, :keep]))

  def generate(self, cond, seeds, num_samples: int, temperature=1.0,
               options: SamplingOptions = SamplingOptions(), prime_BxP=None,
               start: str = "h0", guidance=1.0, mix_weights=None):
    """The whole batch in one compiled call: (samples_BxS int32, logp_BxS).
    ``logp_BxS.sum(1)`` is each sequence's log-likelihood under the model."""
    n_frames = math.ceil(num_samples / self.cfg.lookback)
    (samples_BxS, logp_BxS), = list(self.segments(
        cond, seeds, num_samples, temperature, options, prime_BxP, start,
        n_frames * self.cfg.lookback, guidance, mix_weights))
    return samples_BxS, logp_BxS
