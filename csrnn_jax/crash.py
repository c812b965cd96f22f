"""The crash detector and the spectral framing it reads.

Generated audio "crashes" when it falls into a state the model rarely
leaves: near-silence, the rails, or noise. ``CrashDetector`` finds where.
Generation (``crash_guard``) and evaluation (``audio_eval``) both use it;
this module needs only NumPy and SciPy's window, so generation does not
import the evaluation's data, classifiers or features.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal

FRAME_SECONDS = 0.064  # analysis frames: 1024 samples at 16 kHz.
CRASH_KINDS = ("constant", "clipped", "noise")
POWER_FLOOR = 1e-12  # added to every power bin (log 0 in digital silence).


def frames(wave_T, sample_rate: int):
  """(frames_FxL float64, hop): the clip's FRAME_SECONDS frames that lie
  inside it, hop half a frame (F = 0 for a clip shorter than a frame)."""
  n = int(round(FRAME_SECONDS * sample_rate))
  x_T = np.asarray(wave_T, np.float64)
  if len(x_T) < n:
    return np.zeros((0, n)), n // 2
  return np.lib.stride_tricks.sliding_window_view(x_T, n)[::n // 2], n // 2


def spectral_flatness(frames_FxL) -> np.ndarray:
  """(F,) Wiener entropy per frame: the geometric over the arithmetic mean of
  the Hann-windowed power spectrum, DC left out, POWER_FLOOR added. White
  noise scores exp(-Euler's gamma) = 0.56 (each bin's power is exponentially
  distributed, and E log P = log E P - gamma); a pure tone nearly 0."""
  n = frames_FxL.shape[1]
  window_L = scipy.signal.windows.hann(n, sym=False)
  power_FxE = np.abs(np.fft.rfft(frames_FxL * window_L, axis=1)[:, 1:]
                     ) ** 2 + POWER_FLOOR
  return np.exp(np.log(power_FxE).mean(1)) / power_FxE.mean(1)


@dataclasses.dataclass(frozen=True)
class CrashDetector:
  """Finds where a clip "crashes": a sustained run of analysis windows (hop
  half a FRAME_SECONDS frame) that are all near-constant, clipped, or noise.

  Thresholds, set on the demo data (2.5 min each of piano and violin) and the
  voices data of docs/results.md, 8-bit quantised, where it never fires:
  - constant: the RMS around the window's mean over ``constant_window``
    seconds stays below ``constant_rms`` (2 levels of Q = 256 linear) for
    ``constant_seconds``. This is silence, a stuck level, and the crash seen
    in plain sampling: a near-silent crackle (RMS 0.004 to 0.009). Real music
    never has a 0.5 s window below 0.028; speech pauses last up to 0.8 s; the
    demo's training chunks hold up to 1.8 s of silence (where a tune ends),
    so 2 s. Whole demo files end in 2.4 s of digital silence, which it flags.
  - clipped: at least ``clip_share`` of a frame's samples at |x| >=
    ``clip_level`` (the two outermost levels of Q = 256) for ``clip_seconds``.
    A peak-normalised real file reaches the rail in a handful of samples.
  - noise: ``spectral_flatness`` >= ``noise_flatness`` in frames louder than
    ``noise_rms``, for ``noise_seconds``. White noise scores about 0.56;
    loud demo frames stay below 0.16, and a fricative lasts one frame. Quiet
    frames are left to the constant test: 8-bit quantisation noise is white.
  """
  constant_rms: float = 0.016
  constant_window: float = 0.5
  constant_seconds: float = 2.0
  clip_level: float = 0.99
  clip_share: float = 0.01
  clip_seconds: float = 0.25
  noise_flatness: float = 0.4
  noise_rms: float = 0.01
  noise_seconds: float = 0.5

  def window_flags(self, wave_T, sample_rate: int):
    """(hop in samples, {kind: (bool flags (W,), window length in samples)});
    window w of a kind starts at sample w * hop."""
    frames_FxL, hop = frames(wave_T, sample_rate)
    n = frames_FxL.shape[1]
    k = max(1, int(round((self.constant_window * sample_rate - n) / hop)) + 1)
    if not len(frames_FxL):
      return hop, {kind: (np.zeros(0, bool), n) for kind in CRASH_KINDS}
    rms_F = np.sqrt((frames_FxL ** 2).mean(1))
    # Mean square around each frame's mean, averaged over k frames.
    var_F = np.convolve(frames_FxL.var(1), np.ones(k) / k, mode="valid")
    return hop, {
        "constant": (np.sqrt(var_F) < self.constant_rms, (k - 1) * hop + n),
        "clipped": ((np.abs(frames_FxL) >= self.clip_level).mean(1)
                    >= self.clip_share, n),
        "noise": ((spectral_flatness(frames_FxL) >= self.noise_flatness)
                  & (rms_F >= self.noise_rms), n),
    }

  def detect(self, wave_T, sample_rate: int) -> dict | None:
    """The earliest crash, {"kind", "time": onset in s, "seconds": length of
    the run}, or None."""
    hop, flags = self.window_flags(wave_T, sample_rate)
    need = {"constant": self.constant_seconds, "clipped": self.clip_seconds,
            "noise": self.noise_seconds}
    found = []
    for kind, (flag_F, span) in flags.items():
      for first, count in _runs(flag_F):
        seconds = ((count - 1) * hop + span) / sample_rate
        if seconds >= need[kind]:
          found.append({"kind": kind, "time": first * hop / sample_rate,
                        "seconds": seconds})
          break
    return min(found, key=lambda c: c["time"]) if found else None


def _runs(flag_F):
  """(first index, length) of every run of True."""
  padded = np.concatenate([[0], flag_F.astype(np.int8), [0]])
  edges = np.flatnonzero(np.diff(padded))
  return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]
