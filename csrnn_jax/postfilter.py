"""The output post-filter (``sample.py --denoise``): takes the model's
sampling noise out of the generated audio, down to the noise of the run's
own quantisation, and no further.

Each drawn sample lands a level or a few off, which adds a near-white noise
in the domain the model predicts (after pre-emphasis, so ``decode`` shapes
it by the de-emphasis response S(f)). Per STFT frame the filter estimates
that noise's level as the median over frequencies of P(f) / S(f) (most bins
of speech and music hold little of the signal), subtracts ``strength`` times
it from the power spectrum, and keeps in each bin at least the mean power
that the run's quantisation of the frame would leave there (its step
squared over 12, shaped by S): the output sounds like a clean recording in
the run's scheme, not cleaner. Frames are Hann windows of FRAME_SECONDS a
quarter apart, added back with the same window; a frame's gains depend on
that frame alone, so the filter runs in streaming pieces (``PostFilter``)
and gives the same audio as on the whole clip (``denoise``).

Letters: B rows, T samples, N the frame length, K = N // 2 + 1 its
frequency bins.
"""
from __future__ import annotations

import numpy as np

from csrnn_jax import audio

FRAME_SECONDS = 0.032  # 512 samples at 16 kHz


def frame_length(sample_rate: int) -> int:
  """N: the power of 2 nearest FRAME_SECONDS (at least 16)."""
  return max(16, 2 ** int(round(np.log2(FRAME_SECONDS * sample_rate))))


class PostFilter:
  """Streaming ``denoise`` over B rows: ``push`` a (B, T) piece, get back as
  many filtered samples as are complete (the filter lags N - N/4 samples),
  then ``flush`` for the rest. Output length = input length."""

  def __init__(self, num_rows: int, sample_rate: int, strength: float,
               q_levels: int = 256, quantization: str = "linear",
               preemphasis: float = 0.0):
    if not strength > 0:
      raise ValueError(f"denoise strength {strength!r} must be > 0 (leave "
                       "the filter out to keep the audio as drawn)")
    audio.check_quantization(quantization)
    audio.check_preemphasis(preemphasis)
    self.strength, self.q_levels = strength, q_levels
    self.quantization, self.preemphasis = quantization, preemphasis
    n = frame_length(sample_rate)
    self.hop = n // 4
    self.window_N = np.hanning(n + 1)[:n]  # periodic Hann
    self.window_energy = (self.window_N ** 2).sum()
    # Hann analysis and synthesis a quarter apart add up to 1.5.
    self.gain = self.hop / self.window_energy
    freq_K = np.arange(n // 2 + 1) / n
    self.shape_K = 1.0 / np.abs(
        1 - preemphasis * np.exp(-2j * np.pi * freq_K)) ** 2
    self.in_BxT = np.zeros((num_rows, n - self.hop))  # lead-in: silence
    self.out_BxN = np.zeros((num_rows, n))
    self.to_drop = n - self.hop  # the lead-in's output
    self.pushed = self.returned = 0

  def _quantisation_power_B(self, frame_BxN) -> np.ndarray:
    """(B,) the variance that quantising the frame's pre-emphasised signal
    adds: step^2 / 12, mu-law's step widened by the curve's slope."""
    e_BxN = audio.preemphasize(frame_BxN, self.preemphasis)
    slope_BxN = np.ones_like(e_BxN)
    if self.quantization == "mu-law":
      mu = self.q_levels - 1
      slope_BxN = np.log1p(mu) / mu * (1 + mu * np.abs(e_BxN))
    return ((2.0 / self.q_levels * slope_BxN) ** 2).mean(1) / 12

  def _frame(self, frame_BxN) -> np.ndarray:
    """One frame of each row, filtered and windowed for the overlap-add."""
    spec_BxK = np.fft.rfft(frame_BxN * self.window_N, axis=1)
    power_BxK = np.abs(spec_BxK) ** 2 + 1e-30
    level_B = np.median(power_BxK / self.shape_K, axis=1)
    noise_BxK = self.strength * level_B[:, None] * self.shape_K
    floor_BxK = (self._quantisation_power_B(frame_BxN)[:, None]
                 * self.window_energy * self.shape_K)
    kept_BxK = np.maximum(power_BxK - noise_BxK,
                          np.minimum(power_BxK, floor_BxK))
    spec_BxK = spec_BxK * np.sqrt(kept_BxK / power_BxK)
    return np.fft.irfft(spec_BxK, len(self.window_N), axis=1) * self.window_N

  def _run(self, x_BxT) -> np.ndarray:
    """Appends x and returns the samples completed since the last call,
    past the lead-in and up to the input's length."""
    self.in_BxT = np.concatenate([self.in_BxT, x_BxT], axis=1)
    n, out = len(self.window_N), []
    while self.in_BxT.shape[1] >= n:
      self.out_BxN += self._frame(self.in_BxT[:, :n]) * self.gain
      out.append(self.out_BxN[:, :self.hop].copy())
      self.out_BxN = np.pad(self.out_BxN[:, self.hop:],
                            ((0, 0), (0, self.hop)))
      self.in_BxT = self.in_BxT[:, self.hop:]
    y_BxT = np.concatenate([np.zeros((len(x_BxT), 0))] + out, axis=1)
    drop = min(self.to_drop, y_BxT.shape[1])
    self.to_drop -= drop
    y_BxT = y_BxT[:, drop:self.pushed - self.returned + drop]
    self.returned += y_BxT.shape[1]
    return y_BxT.astype(np.float32)

  def push(self, x_BxT) -> np.ndarray:
    """The filtered samples that this piece completes, float32 (B, <= T)."""
    x_BxT = np.asarray(x_BxT, np.float64)
    self.pushed += x_BxT.shape[1]
    return self._run(x_BxT)

  def flush(self) -> np.ndarray:
    """The rest: every row's output is then as long as its input."""
    return self._run(np.zeros((len(self.in_BxT), len(self.window_N))))


def denoise(wave_T, sample_rate: int, strength: float, q_levels: int = 256,
            quantization: str = "linear", preemphasis: float = 0.0
            ) -> np.ndarray:
  """One clip through the post-filter: float32 (T,)."""
  f = PostFilter(1, sample_rate, strength, q_levels, quantization,
                 preemphasis)
  return np.concatenate([f.push(np.asarray(wave_T)[None]), f.flush()],
                        axis=1)[0]
