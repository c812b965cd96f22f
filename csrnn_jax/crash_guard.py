"""Crash guard: generation that rewinds a row to its last good segment and
resamples it when the crash detector fires.

The paper's samples "crash and become random noise"; the demo model's fall
into a near-silent crackle (docs/results.md). A crash is a state the model
rarely leaves, so the guard does not wait for it to end: after every segment
(``segment_seconds``, rounded down to whole top frames) each row's newest
audio is checked with ``crash.CrashDetector``; a row that crashed goes
back to the generator state at the start of the segment where the crash began
and draws that stretch again with fresh randomness (with
``redraw_unfiltered``, from the model's plain conditional distribution: the
filters of the sampling options, which lower the noise floor but pull audio
into silence, are off, and so is guidance (s = 1), which extrapolates past
the conditional and can drive a sustained tone to the rails, until the row
is past the segment where the crash was found). A row that crashes again
within the detector's reach of where it was rewound to is in the same trap,
which the state at the crash's onset may already lead into (a piano note
decaying with no next note to come): with ``backoff_seconds``, each such
repeat goes back that much further than the one before, to at most the
detector's reach (about 2.1 s) before the onset: the choice that led into
the trap lies within a few seconds of it, and going further back would only
redraw good audio, at a cost that grows with each repeat. After
``max_rewinds`` a row keeps what it has (and is no longer checked).

Rows move independently, so a rewound row lags the others; once some rows
are done, the rest run as a smaller batch (``_width``), so that a long
redraw does not also compute the finished rows. Rows that never
rewound keep the plain generator's keys and positions: their audio is exactly
``Generator.segments``' audio for the same seeds. A rewound row's keys fold in
(attempt, position). Audio is yielded once no rewind can reach it, so the
guard streams like ``Generator.segments`` (same contract: (samples_BxS,
logp_BxS) chunks, all rows the same length).

It runs the generator's resumable API (``plan``, ``prime``, ``segment``) in
a loop of its own: the per-segment Python loop is the point, and the
compiled programs stay the generator's own. A generator's mesh is not used
to split the rows.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from csrnn_jax import audio
from csrnn_jax import crash as crash_lib
from csrnn_jax import sampling


def redraw_differs(options: sampling.SamplingOptions, guidance) -> bool:
  """Whether ``redraw_unfiltered`` redraws from another distribution than
  the row's own: a filter is on, or guidance (one scale, or one per row)
  is other than 1."""
  return options.filtered or bool(np.any(np.asarray(guidance) != 1))


def _row(state: sampling.GenState, b: int, passes: int) -> sampling.GenState:
  """Output row b's pass rows b P .. b P + P - 1 of a batched state (carry
  leaves are (n_rnn, B P, dim))."""
  rows = slice(b * passes, (b + 1) * passes)
  return sampling.GenState(
      jax.tree_util.tree_map(lambda c: np.asarray(c[:, rows]), state.carry),
      np.asarray(state.last_frame_BxL[rows]))


def _width(working: int, rows: int) -> int:
  """The batch that runs ``working`` of ``rows`` rows: all of them, or once
  some are done, the next power of 2 (at most log2(rows) + 1 programs)."""
  return rows if working == rows else min(rows, 2 ** math.ceil(
      math.log2(working)))


def _stack(rows) -> sampling.GenState:
  return sampling.GenState(
      jax.tree_util.tree_map(lambda *c: jnp.concatenate(c, axis=1),
                             *[r.carry for r in rows]),
      jnp.concatenate([r.last_frame_BxL for r in rows]))


class CrashGuard:
  """``segments`` generates like ``Generator.segments`` with rewinds;
  ``rewinds`` (per row) and ``crashes`` (per row, the detector's findings
  that caused them, each with the time the row went back to: ``rewound_to``,
  seconds) describe the last call."""

  def __init__(self, sample_rate: int, segment_seconds: float = 0.25,
               max_rewinds: int = 8,
               detector: crash_lib.CrashDetector = crash_lib.CrashDetector(),
               redraw_unfiltered: bool = False, backoff_seconds: float = 0.0):
    if max_rewinds < 0 or backoff_seconds < 0:
      raise ValueError(
          f"the crash guard needs max_rewinds >= 0 and backoff_seconds >= 0 "
          f"(got {max_rewinds} and {backoff_seconds})")
    self.detector, self.max_rewinds = detector, max_rewinds
    self.backoff = int(backoff_seconds * sample_rate)  # samples per repeat
    self.redraw_unfiltered = redraw_unfiltered
    self.sample_rate = sample_rate
    self.segment_samples = int(segment_seconds * sample_rate)
    longest = max(detector.constant_seconds, detector.clip_seconds,
                  detector.noise_seconds) + 2 * crash_lib.FRAME_SECONDS
    # A new crash run began at most this many samples before a segment.
    self.reach = math.ceil(longest * sample_rate)
    self.rewinds, self.crashes = [], []

  def segments(self, generator: sampling.Generator, cond, seeds,
               num_samples: int, temperature=1.0,
               options: sampling.SamplingOptions = sampling.SamplingOptions(),
               prime_BxP=None, start: str = "h0", guidance=1.0,
               mix_weights=None):
    """Yields (samples_BxS, logp_BxS) until num_samples are out.

    As ``Generator.segments`` (schedules of conditions or mix weights
    included: a rewound row reads its own frames' again). The rewind unit
    is ``segment_seconds`` rounded down to whole top frames.
    """
    lookback = generator.cfg.lookback
    frames = max(1, self.segment_samples // lookback)
    seg = frames * lookback
    n_segs = math.ceil(num_samples / seg)
    plan = generator.plan(cond, seeds, num_samples, temperature, options,
                          guidance, mix_weights, frames)
    b, passes, n_frames = plan.rows, plan.passes, plan.n_frames
    redraw_scales_BxMxT = None  # s = 1: the plain conditional's
    if self.redraw_unfiltered and redraw_differs(options, guidance):
      redraw_scales_BxMxT = generator.plan(
          cond, seeds, num_samples, temperature, options, 1.0, mix_weights,
          frames).scales_BxMxT
    state = generator.prime(plan, prime_BxP, start)
    history = [[_row(state, r, passes)] for r in range(b)]  # at boundaries
    audio_rows = [[] for _ in range(b)]  # accepted (samples, logp) segments
    pos, attempt = [0] * b, [0] * b
    redraw_until = [0] * b  # a row redraws unfiltered while pos < this
    self.rewinds, self.crashes = [0] * b, [[] for _ in range(b)]
    repeats, resumed = [0] * b, [-self.reach - 1] * b  # the same trap again
    sent, step = 0, 0
    # Segments a rewind can reach: the detector's reach and the backoff.
    furthest = min(self.backoff * self.max_rewinds, self.reach)
    margin = math.ceil((self.reach + furthest) / seg) + 1
    while min(pos) < n_segs:
      working = [r for r in range(b) if pos[r] < n_segs]
      rows = np.array(working + working[:1]
                      * (_width(len(working), b) - len(working)))
      keys_B = jnp.stack([
          plan.keys_B[r] if attempt[r] == 0 else jax.random.fold_in(
              jax.random.fold_in(plan.keys_B[r], attempt[r]), pos[r])
          for r in rows])
      state = _stack([history[r][pos[r]] for r in rows])
      index_BxT = np.minimum(np.array(pos)[rows, None] * frames
                             + np.arange(frames), n_frames - 1)
      redrawn_B = np.array([redraw_scales_BxMxT is not None
                            and pos[r] < redraw_until[r] for r in rows])
      step_plan = plan if len(working) == b else plan.map(lambda x: x[rows])
      if redrawn_B.any():
        step_plan = step_plan.redrawn(redrawn_B, redraw_scales_BxMxT[rows])
      state, samples_BxS, logp_BxS = generator.segment(
          step_plan, state, index_BxT, keys_B, step * seg)
      samples_BxS, logp_BxS = np.asarray(samples_BxS), np.asarray(logp_BxS)
      step += 1
      for i, r in enumerate(working):
        keep = min(seg, num_samples - pos[r] * seg)
        audio_rows[r].append((samples_BxS[i, :keep], logp_BxS[i, :keep]))
        crash = (self._check(generator.cfg, audio_rows[r], seg)
                 if self.rewinds[r] < self.max_rewinds else None)
        if crash is not None:
          self.crashes[r].append(crash)
          onset = int(crash["time"] * self.sample_rate)
          repeats[r] = repeats[r] + 1 if onset < resumed[r] + self.reach else 0
          back = max(0, onset - min(repeats[r] * self.backoff,
                                    self.reach)) // seg
          resumed[r] = back * seg
          crash["rewound_to"] = resumed[r] / self.sample_rate
          del audio_rows[r][back:], history[r][back + 1:]
          redraw_until[r] = pos[r] + 1
          pos[r] = back
          attempt[r] += 1
          self.rewinds[r] += 1
        else:
          pos[r] += 1
          history[r].append(_row(state, i, passes))
      final = min(n_segs if p >= n_segs else p - margin for p in pos)
      if final > sent:
        yield self._concat(audio_rows, sent, final)
        sent = final

  def _check(self, cfg, segments, seg: int):
    """The detector's crash that reaches into the row's newest segment (its
    time counted from the row's start), or None. Only the last ``reach``
    samples before that segment can hold the start of such a run (an older
    one would have been caught already)."""
    back = min(len(segments), math.ceil(self.reach / seg) + 1)
    x = np.concatenate([s for s, _ in segments[-back:]])
    # Decoded from silence at this stretch's start: the pre-emphasis filter
    # forgets its state in a few ms (a^n: 0.95^160 < 3e-4 after 10 ms).
    wave = audio.decode(x, cfg.q_levels, cfg.quantization, cfg.preemphasis)
    crash = self.detector.detect(wave, self.sample_rate)
    if crash is not None:
      crash["time"] += (len(segments) - back) * seg / self.sample_rate
    return crash

  @staticmethod
  def _concat(audio_rows, first: int, last: int):
    return tuple(np.stack([np.concatenate([seg[i] for seg in row[first:last]])
                           for row in audio_rows]) for i in (0, 1))
