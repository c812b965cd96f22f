"""Quantisation of audio to Q integer levels, and back.

Three methods (docs/design.md §2):

- ``linear`` (default): fixed range [-1, 1]; ``q = round((x + 1) * Q / 2)``
  clipped to [0, Q). ``q_zero = Q // 2`` is exactly 0.0, so the padding value
  before a sequence is silence.
- ``mu-law``: the mu-law companding curve (mu = Q - 1) applied before the
  linear step, and inverted after it.
- ``linear-minmax``: the PyTorch reference's per-file min/max scaling with
  epsilon 1e-2. Kept only for parity with old checkpoints: it shifts DC per
  file, and its dequantisation cannot recover the original scale.

Out-of-range input is clipped, never wrapped. Integer samples are int32.

Noise shaping (``preemphasis`` a in [0, 1), 0 = off): ``encode`` filters the
audio before quantising, e[n] = x[n] - a x[n-1], and ``decode`` inverts the
filter after dequantising, y[n] = e[n] + a y[n-1], so the quantisation (and
sampling) error comes out shaped like the signal's spectrum (gain
1 / |1 - a exp(-iw)|: 1/(1-a) at DC, 1/(1+a) at Nyquist) instead of white.
Every conversion between audio and levels goes through this pair. The sample
before the start is silence (x[-1] = 0), as the q_zero padding before every
sequence. e can reach (1 + a) max|x|; it is clipped to [-1, 1] like any input
rather than scaled down (which would coarsen every level): on data/demo e
peaks at 0.53 to 0.71 of x's peak and no sample clips for a in {0.85, 0.9,
0.95}.

File I/O: ``load_audio`` decodes any format soundfile reads (librosa as the
fallback) to float32 mono at a given rate; ``write_wav`` writes 16-bit PCM.
``loud_span`` finds where a file's quiet ends begin (prepare's ``trim_db``).
"""
from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np
import scipy.signal
import soundfile as sf
import soxr

QUANTIZATIONS = ("linear", "mu-law", "linear-minmax")
MINMAX_EPSILON = 1e-2


def q_zero(q_levels: int) -> int:
  """The integer level of silence, used to pad before a sequence starts."""
  return q_levels // 2


def check_quantization(method: str) -> None:
  if method not in QUANTIZATIONS:
    raise ValueError(
        f"quantization={method!r} is unknown; allowed values: "
        f"{', '.join(QUANTIZATIONS)}")


def _linear_quantize(x, q_levels: int):
  x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
  q = np.round((x + 1.0) * (q_levels / 2))
  return np.clip(q, 0, q_levels - 1).astype(np.int32)


def _linear_dequantize(q, q_levels: int):
  return np.asarray(q, np.float64) / (q_levels / 2) - 1.0


def mu_law_encode(x, mu: float):
  """Mu-law companding of x in [-1, 1]: sign(x) ln(1 + mu|x|) / ln(1 + mu)."""
  x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
  return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def mu_law_decode(y, mu: float):
  """Inverse of ``mu_law_encode``."""
  y = np.asarray(y, np.float64)
  return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def quantize(x, q_levels: int = 256, method: str = "linear") -> np.ndarray:
  """Float audio (any shape, nominally in [-1, 1]) -> int32 levels in [0, Q)."""
  check_quantization(method)
  if method == "linear":
    return _linear_quantize(x, q_levels)
  if method == "mu-law":
    return _linear_quantize(mu_law_encode(x, q_levels - 1), q_levels)
  # linear-minmax, as the reference:
  # (x - min) / (max - min) * (Q - eps) + eps/2.
  x = np.asarray(x, np.float64)
  lo, span = x.min(), x.max() - x.min()
  if span == 0.0:  # a constant signal has no range: call it silence.
    return np.full(x.shape, q_zero(q_levels), np.int32)
  q = (x - lo) / span * (q_levels - MINMAX_EPSILON) + MINMAX_EPSILON / 2
  return np.clip(q.astype(np.int64), 0, q_levels - 1).astype(np.int32)


def dequantize(q, q_levels: int = 256, method: str = "linear") -> np.ndarray:
  """Int levels -> float32 audio in [-1, 1). linear-minmax has no scale left."""
  check_quantization(method)
  y = _linear_dequantize(q, q_levels)
  if method == "mu-law":
    y = mu_law_decode(y, q_levels - 1)
  return y.astype(np.float32)


def check_preemphasis(preemphasis: float) -> None:
  if not 0.0 <= preemphasis < 1.0:
    raise ValueError(
        f"preemphasis={preemphasis!r} must be in [0, 1) (0 turns it off; "
        "e.g. 0.85)")


def preemphasize(x, preemphasis: float) -> np.ndarray:
  """(..., T) float64: x[n] - a x[n-1], each row starting after silence."""
  x = np.asarray(x, np.float64)
  previous = np.concatenate([np.zeros_like(x[..., :1]), x[..., :-1]], -1)
  return x - preemphasis * previous


def encode(x, q_levels: int = 256, method: str = "linear",
           preemphasis: float = 0.0) -> np.ndarray:
  """Float audio (..., T) -> int32 levels: the pre-emphasis filter, then
  ``quantize``. Each row starts after silence; 0.0 is ``quantize`` itself."""
  check_preemphasis(preemphasis)
  if preemphasis:
    x = preemphasize(x, preemphasis)
  return quantize(x, q_levels, method)


def decode(q, q_levels: int = 256, method: str = "linear",
           preemphasis: float = 0.0, previous=None) -> np.ndarray:
  """Int levels (..., S) -> float32 audio: ``dequantize``, then the inverse
  filter. ``previous`` (...,): each row's last decoded sample before ``q``
  (silence at the start); pass ``y[..., -1]`` of the last call to decode a
  stream segment by segment, which equals decoding it in one call bitwise.
  The output is not clipped (the exact inverse); 0.0 is ``dequantize``."""
  check_preemphasis(preemphasis)
  e = dequantize(q, q_levels, method)
  if not preemphasis:
    return e
  a = np.float32(preemphasis)
  previous = np.zeros(e.shape[:-1], np.float32) if previous is None else (
      np.broadcast_to(np.asarray(previous, np.float32), e.shape[:-1]))
  # Direct form II transposed, in float32: the state is a * y[n-1] exactly.
  return scipy.signal.lfilter(np.float32([1.0]), np.float32([1.0, -a]), e,
                              axis=-1, zi=(a * previous)[..., None])[0]


def frame_input(x, q_levels: int):
  """Frame-tier input scaling of the reference: u = 2 * (x / (Q/2) - 1).

  Works on numpy and jax arrays alike (int levels in, float32 in [-2, 2) out).
  """
  return 2.0 * (x.astype("float32") / (q_levels / 2) - 1.0)


LOUDNESS_FRAME_SECONDS = 0.064  # loud_span's frames, a quarter of one apart.


def loud_span(x_T, sample_rate: int, db: float) -> tuple[int, int]:
  """(start, stop): x_T[start:stop] runs from the first to the end of the
  last LOUDNESS_FRAME_SECONDS frame whose RMS reaches ``db`` dBFS, so what
  is cut on either side is quiet throughout; (0, 0) when no frame does. A
  clip shorter than a frame is one frame."""
  x_T = np.asarray(x_T, np.float64)
  n = min(len(x_T), round(LOUDNESS_FRAME_SECONDS * sample_rate))
  if n == 0:
    return 0, 0
  hop = max(1, n // 4)
  # The frames hop apart, and one that ends at the clip's end.
  starts_F = np.unique(np.append(np.arange(0, len(x_T) - n + 1, hop),
                                 len(x_T) - n))
  energy_T = np.concatenate([[0.0], np.cumsum(np.square(x_T))])
  power_F = (energy_T[starts_F + n] - energy_T[starts_F]) / n
  loud_F = np.flatnonzero(power_F >= 10.0 ** (db / 10))
  if not len(loud_F):
    return 0, 0
  return int(starts_F[loud_F[0]]), int(starts_F[loud_F[-1]] + n)


class AudioError(ValueError):
  """An audio file is missing, empty or cannot be decoded; names the file."""


def _decode(path: str):
  """(frames, channels) float32 and the file's sample rate.

  soundfile first; librosa (and through it audioread/ffmpeg) for the formats
  libsndfile cannot read. librosa is imported only then: its import is slow.
  """
  try:
    return sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError) as e:
    soundfile_reason = str(e)
  import librosa  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    # librosa warns that soundfile failed and that audioread is deprecated;
    # audioread can leave the file open when it fails (a ResourceWarning when
    # its exception is dropped, still inside this block).
    warnings.simplefilter("ignore")
    try:
      x, rate = librosa.load(path, sr=None, mono=False)
      return np.atleast_2d(x).T, rate
    except Exception as e:  # pylint: disable=broad-except
      librosa_reason = f"{type(e).__name__} {e}".strip()
  raise AudioError(
      f"{path}: cannot be decoded (soundfile: {soundfile_reason}; librosa: "
      f"{librosa_reason}); check the file or convert it to wav or flac")


def load_audio(path, sample_rate: int) -> np.ndarray:
  """Decodes any soundfile/librosa format -> float32 (T,) mono at sample_rate.

  Channels are averaged; resampling uses soxr (high quality). Raises AudioError
  for a missing, empty (0 bytes), undecodable or zero-length file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AudioError(f"{path}: no such file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: the file is empty (0 bytes)")
  x_TxCh, rate = _decode(path)
  if x_TxCh.shape[0] == 0:
    raise AudioError(f"{path}: the file holds no samples (zero length)")
  x_T = x_TxCh.mean(axis=1, dtype=np.float32)
  if not np.isfinite(x_T).all():
    raise AudioError(f"{path}: the file holds NaN or infinite samples")
  if rate != sample_rate:
    x_T = soxr.resample(x_T, rate, sample_rate, quality="HQ")
  return np.ascontiguousarray(x_T, np.float32)


def write_wav(path, x, sample_rate: int) -> None:
  """Writes float audio (T,) in [-1, 1] as 16-bit PCM wav, clipping, and
  creating the parent folders."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, np.clip(np.asarray(x, np.float32), -1.0, 1.0), sample_rate,
           subtype="PCM_16", format="WAV")
