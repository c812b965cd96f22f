"""Automatic evaluation of generated audio against a run's real data.

The paper could only listen. These numbers make "does the conditioning work,
and how noisy is it" measurable, per class and overall, next to the real test
clips of the same class:

- condition accuracy by two judges, classifiers trained on the real train
  split. The *plain* judge sees the train clips as the model hears them; the
  *noise-robust* judge also sees one noisy copy of each per level of
  NOISE_LEVELS (``add_sampling_noise``): it asks "which class, under the
  sampling noise", so noise alone does not push a clip to one class. Ceilings:
  each judge's accuracy on the real test clips (the robust judge's also on
  noisy test copies); chance is 1 / classes;
- spectral flatness (``clip_flatness``): how noise-like, generated vs real;
- periodicity (``clip_periodicity``): how harmonic, generated vs real;
- Frechet distance between the MFCC statistics of generated clips of a class
  and the real train clips of that class, next to the same distance from the
  real test clips (the floor: what unseen real audio scores);
- crashes (``CrashDetector``): the share of clips that crash, the clip length
  it was measured on, and over the first LONG_CLIP_SECONDS of clips at least
  that long;
- mixes: of the clips generated with a mix of two classes, the share whose two
  likeliest classes (under each judge) are the mixed pair, for all and per
  pair.

Features: a clip is cut into ``SEGMENT_SECONDS`` segments (the last partial
one dropped; a shorter clip is one segment); a segment's feature is the mean
and standard deviation over its frames of ``N_MFCC`` MFCCs (64 ms frames, 16
ms hop, 64 mel bands), so 2 * N_MFCC numbers. Segments, not clips, are the
samples of the distributions: a few seconds per class then give tens of
feature vectors. Real clips are first quantised and dequantised as the model
sees them, so that real and generated audio share the same noise floor.

Judges: scikit-learn's StandardScaler + LogisticRegression on the segments; a
clip's class is the argmax of its segments' summed log-probabilities. The
Frechet distance is computed in the plain judge's standardised space (every
feature weighs the same), from a class's generated (or real test) segments to
the real train segments of each class; it grows as the sets get smaller, so
the generated set and the floor are cut to the same size.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import pathlib
import zlib

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

from csrnn_jax import audio
from csrnn_jax.crash import (  # the framing and the detector are shared
    FRAME_SECONDS, CrashDetector, frames, spectral_flatness)
from csrnn_jax import dataset as dataset_lib

SEGMENT_SECONDS = 0.5
N_MFCC = 20
N_MELS = 64
HOP_FRACTION = 0.25  # MFCC hop, a fraction of a frame (16 ms).
FD_DRAWS = 10
NOISE_LEVELS = (1, 2, 4)  # sampling-noise spreads (levels) of the robust judge.
NOISE_SEED = 0
LOUD_RMS = 0.01  # -40 dBFS: frames quieter than this are not measured.
F0_RANGE = (50.0, 1000.0)  # Hz: the lags the periodicity looks at.
LONG_CLIP_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Clip:
  """One clip: float32 audio (T,), its class (None: not a class, e.g. a mix)
  and, for a mix of two classes, their names (likelier first)."""
  name: str
  wave_T: np.ndarray
  label: str | None
  mix: tuple[str, str] | None = None


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int) -> np.ndarray:
  from librosa import filters  # pylint: disable=import-outside-toplevel (slow)
  return filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=N_MELS)


def mfcc(wave_T, sample_rate: int) -> np.ndarray:
  """(N_MFCC, frames): librosa's MFCC recipe (power mel spectrogram, dB with
  an 80 dB floor below the clip's peak, orthonormal DCT-II) on Hann frames
  that lie inside the clip. numpy's FFT instead of librosa.stft, whose first
  call compiles with numba for seconds."""
  n_fft = int(round(FRAME_SECONDS * sample_rate))
  hop = int(n_fft * HOP_FRACTION)
  x_T = np.asarray(wave_T, np.float32)
  if len(x_T) < n_fft:
    x_T = np.pad(x_T, (0, n_fft - len(x_T)))
  frames_FxL = np.lib.stride_tricks.sliding_window_view(x_T, n_fft)[::hop]
  window_L = scipy.signal.windows.hann(n_fft, sym=False)
  power_FxE = np.abs(np.fft.rfft(frames_FxL * window_L, axis=1)) ** 2
  # einsum, not a BLAS matmul: a product this small runs 10 to 100 times
  # slower on BLAS threads when the cores are busy.
  mel_ExF = np.einsum("mk,fk->mf", _mel_basis(sample_rate, n_fft), power_FxE)
  db_ExF = 10 * np.log10(np.maximum(mel_ExF, 1e-10))
  db_ExF = np.maximum(db_ExF, db_ExF.max() - 80.0)
  return scipy.fft.dct(db_ExF, axis=0, norm="ortho")[:N_MFCC]


def segment_features(wave_T, sample_rate: int) -> np.ndarray:
  """(S, 2 * N_MFCC) MFCC means and standard deviations per segment; S is
  the clip's length in whole segments (at least 1), the frames shared out
  evenly."""
  mfcc_ExF = mfcc(wave_T, sample_rate)
  n_segments = max(1, len(wave_T) // int(SEGMENT_SECONDS * sample_rate))
  return np.stack([np.concatenate([seg_ExF.mean(1), seg_ExF.std(1)])
                   for seg_ExF in np.array_split(mfcc_ExF, n_segments, axis=1)])


def loud_frames(wave_T, sample_rate: int) -> np.ndarray:
  """(F, N) the clip's frames (``frames``) with an RMS of at least LOUD_RMS:
  silence does not count (its 8-bit quantisation noise is white)."""
  frames_FxL, _ = frames(wave_T, sample_rate)
  return frames_FxL[np.sqrt((frames_FxL ** 2).mean(1)) >= LOUD_RMS]


def _median(values):
  values = [v for v in values if v is not None]
  return float(np.median(values)) if values else None


def clip_flatness(wave_T, sample_rate: int) -> float | None:
  """How noise-like a clip is: the median ``spectral_flatness`` of its loud
  frames (None when it has none). For scale, 8-bit linear real test clips
  (median per class): flute 0.0002, piano 0.003, speech 0.007; sampling
  errors of 1, 2, 4 levels (``add_sampling_noise``) multiply it by 4, 11, 25
  on the voices data and by 2.5, 5, 14 on the demo's piano and violin."""
  loud_FxL = loud_frames(wave_T, sample_rate)
  return _median(spectral_flatness(loud_FxL)) if len(loud_FxL) else None


def class_flatness(clips, class_names, sample_rate: int) -> dict:
  """{class: the median ``clip_flatness`` of its clips (None: no loud
  frame)}."""
  return {n: _median([clip_flatness(c.wave_T, sample_rate)
                      for c in clips if c.label == n]) for n in class_names}


def autocorrelation_peak(frames_FxL, sample_rate: int) -> np.ndarray:
  """(F,) per frame (mean removed) the largest local maximum of the
  normalised autocorrelation r(t) = sum_n x[n] x[n+t] / sqrt(sum_n x[n]^2
  sum_n x[n+t]^2) (sums over the N - t samples where both exist) at lags t
  of one period of F0_RANGE; 0 where there is none. 1 for a periodic frame;
  about 0.1 for white noise (the largest of ~150 correlations of spread
  1/sqrt(N)); r / (1 - r) is the harmonic-to-noise ratio. Local maxima only,
  so that a low-passed signal's slow fall from r(0) = 1 does not count. The
  sums come from an FFT of the frame zero-padded to 2N and cumulative
  energies."""
  x_FxL = frames_FxL - frames_FxL.mean(1, keepdims=True)
  n = x_FxL.shape[1]
  lo = int(np.floor(sample_rate / F0_RANGE[1]))
  hi = min(int(np.ceil(sample_rate / F0_RANGE[0])), n - 2)
  spectrum_FxE = np.fft.rfft(x_FxL, 2 * n, axis=1)
  lags_J = np.arange(lo - 1, hi + 2)  # one more each side for the maxima.
  cross_FxJ = np.fft.irfft(np.abs(spectrum_FxE) ** 2, 2 * n, axis=1)[:, lags_J]
  energy_FxL = np.cumsum(x_FxL ** 2, axis=1)
  head_FxJ = energy_FxL[:, n - 1 - lags_J]  # sum of x[n]^2, n < N - t.
  tail_FxJ = energy_FxL[:, -1:] - energy_FxL[:, lags_J - 1]  # n >= t.
  r_FxJ = cross_FxJ / np.sqrt(head_FxJ * tail_FxJ + 1e-30)
  inner_FxJ = r_FxJ[:, 1:-1]
  peak_FxJ = (inner_FxJ >= r_FxJ[:, :-2]) & (inner_FxJ >= r_FxJ[:, 2:])
  return np.maximum(np.where(peak_FxJ, inner_FxJ, 0.0).max(1), 0.0)


def clip_periodicity(wave_T, sample_rate: int) -> float | None:
  """How harmonic a clip is: the median ``autocorrelation_peak`` of its loud
  frames (None when it has none). 8-bit real test clips: speech 0.75 to 0.9,
  piano 0.81, violin 0.98, chords on organ or guitar 0.75 to 0.78. Chosen
  over librosa.pyin's voiced share for cost and grading: two FFTs per frame,
  40 times faster than pyin's pitch HMM (0.8 s per 10 s of audio on this
  2-core machine, after a 20 s numba compile), and noise added to a harmonic
  sound lowers it smoothly instead of flipping a voiced flag."""
  loud_FxL = loud_frames(wave_T, sample_rate)
  return (_median(autocorrelation_peak(loud_FxL, sample_rate))
          if len(loud_FxL) else None)


def add_sampling_noise(wave_T, spread: int, rng, q_levels: int = 256,
                       quantization: str = "linear",
                       preemphasis: float = 0.0) -> np.ndarray:
  """(T,) float32: the clip with sampling errors of about ``spread`` levels.

  The clip's levels in the run's quantisation (``audio.encode``) each move
  by round(spread * z), z ~ N(0, 1) drawn independently per sample from
  ``rng`` (a spread of sqrt(spread^2 + 1/12) levels: rounding adds 1/12),
  are clipped to [0, Q) and decoded back (``audio.decode``, so pre-emphasis
  shapes the noise as it shapes the model's): drawing every sample from a
  predicted distribution a few levels wide puts it a few levels off.
  """
  q_T = audio.encode(wave_T, q_levels, quantization, preemphasis)
  q_T = q_T + np.rint(spread * rng.standard_normal(q_T.shape)).astype(np.int32)
  return audio.decode(np.clip(q_T, 0, q_levels - 1), q_levels, quantization,
                      preemphasis)


def noisy_copies(clips, spread: int, **quantisation) -> list[Clip]:
  """``add_sampling_noise`` of every clip, seeded by (NOISE_SEED, spread,
  the clip's name): the same copies on every run, whatever the clip order."""
  return [dataclasses.replace(c, wave_T=add_sampling_noise(
      c.wave_T, spread, np.random.default_rng(
          [NOISE_SEED, spread, zlib.crc32(c.name.encode())]), **quantisation))
          for c in clips]


def frechet_distance(a_NxE, b_NxE) -> float:
  """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).

  The symmetric form needs only eigendecompositions of PSD matrices, so it
  stays real and finite when N < D makes the covariances singular.
  """
  a_NxE, b_NxE = np.asarray(a_NxE, np.float64), np.asarray(b_NxE, np.float64)
  if len(a_NxE) < 2 or len(b_NxE) < 2:
    raise ValueError("the Frechet distance needs at least 2 vectors per set")
  cov_a, cov_b = np.cov(a_NxE, rowvar=False), np.cov(b_NxE, rowvar=False)
  w, v = np.linalg.eigh(cov_a)
  sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
  mean_term = np.sum((a_NxE.mean(0) - b_NxE.mean(0)) ** 2)
  return float(mean_term + np.trace(cov_a) + np.trace(cov_b)
               - 2 * np.sum(np.sqrt(np.clip(cross, 0, None))))


class ConditionClassifier:
  """Which class does a clip sound like? Logistic regression on standardised
  segment features of real clips (see the module docstring)."""

  def __init__(self, class_names, c: float = 1.0):
    # pylint: disable=import-outside-toplevel (slow; evaluate imports us)
    from sklearn import linear_model, pipeline, preprocessing
    self.class_names = list(class_names)
    self.model = pipeline.make_pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(C=c, max_iter=5000))

  def fit(self, feats, labels) -> "ConditionClassifier":
    """feats: per clip (S_i, D); labels: per clip class names."""
    y = [self.class_names.index(l) for f, l in zip(feats, labels)
         for _ in range(len(f))]
    missing = set(range(len(self.class_names))) - set(y)
    if missing:
      raise ValueError("the classifier needs training clips of every class; "
                       f"none of {[self.class_names[i] for i in missing]}")
    self.model.fit(np.concatenate(feats), y)
    return self

  def standardize(self, feats_NxE) -> np.ndarray:
    """The space the classifier and the Frechet distance work in."""
    return self.model[0].transform(feats_NxE)

  def segment_probs(self, feats_NxE) -> np.ndarray:
    """(S, C): each segment's class probabilities."""
    return self.model.predict_proba(feats_NxE)

  def clip_log_probs(self, feats) -> np.ndarray:
    """(N, C): per clip, the summed log-probabilities of its segments."""
    if not feats:
      return np.zeros((0, len(self.class_names)))
    return np.stack([self.model.predict_log_proba(f).sum(0) for f in feats])


def evaluate_clips(generated, train, test, class_names, sample_rate: int,
                   detector: CrashDetector = CrashDetector(),
                   q_levels: int = 256, quantization: str = "linear",
                   preemphasis: float = 0.0, test_original=None) -> dict:
  """The whole evaluation of ``generated`` against real ``train``/``test``
  clips (lists of Clip with class labels; ``generated`` may be empty: then
  it gives the judges' ceilings); see ``format_markdown``. The quantisation
  is the run's: the noisy copies of the robust judge are made in it.

  ``test_original``: the test clips as recorded (not quantised). The flatness
  of generated clips is then also compared with theirs
  (``flatness_ratio_original``), a reference that is the same for every
  quantisation, and ``flatness_floor`` says what 8-bit quantisation in the
  run's scheme alone does to real clips (quantised over original)."""
  feats = lambda clips: [segment_features(c.wave_T, sample_rate) for c in clips]
  quantisation = {"q_levels": q_levels, "quantization": quantization,
                  "preemphasis": preemphasis}
  noisy = {split: {k: noisy_copies(clips, k, **quantisation)
                   for k in NOISE_LEVELS}
           for split, clips in (("train", train), ("test", test))}
  train_f, test_f, gen_f = feats(train), feats(test), feats(generated)
  labels = [c.label for c in train]
  judges = {
      "plain": ConditionClassifier(class_names).fit(train_f, labels),
      "robust": ConditionClassifier(class_names).fit(
          train_f + [f for k in NOISE_LEVELS for f in feats(noisy["train"][k])],
          labels * (1 + len(NOISE_LEVELS)))}
  out = {"classes": list(class_names), "chance": 1.0 / len(class_names),
         "segment_seconds": SEGMENT_SECONDS, "n_mfcc": N_MFCC,
         "noise_levels": list(NOISE_LEVELS), "noise_seed": NOISE_SEED,
         "long_clip_seconds": LONG_CLIP_SECONDS,
         "crash_thresholds": dataclasses.asdict(detector),
         "segments": {"train": sum(len(f) for f in train_f),
                      "test": sum(len(f) for f in test_f),
                      "generated": sum(len(f) for f in gen_f)}}
  out.update(_frechet(judges["plain"], train_f, train, test_f, test, gen_f,
                      generated, class_names))
  for key, fs, clips in (("test", test_f, test),
                         ("generated", gen_f, generated)):
    out[key] = _score(judges, fs, clips, class_names, sample_rate, detector)
  out["test_noisy"] = {
      name: _noisy_accuracy(clf, {k: feats(noisy["test"][k])
                                  for k in NOISE_LEVELS}, test, class_names)
      for name, clf in judges.items()}
  test_all = out["test"]["per_class"]["all"]
  out["ceilings"] = {"plain": test_all["accuracy"],
                     "robust": test_all["accuracy_robust"],
                     "robust_noisy": out["test_noisy"]["robust"]["all"]}
  gen_pc, test_pc = out["generated"]["per_class"], out["test"]["per_class"]
  out["flatness_ratio"] = {
      n: (gen_pc[n]["flatness"] / test_pc[n]["flatness"]
          if gen_pc[n]["flatness"] is not None and test_pc[n]["flatness"]
          else None) for n in gen_pc}
  if test_original is not None:
    original = class_flatness(test_original, class_names, sample_rate)
    ratio = lambda a, b: a / b if a is not None and b else None
    out["flatness_original"] = original
    out["flatness_ratio_original"] = {
        n: ratio(gen_pc[n]["flatness"], original[n]) for n in class_names}
    out["flatness_floor"] = {n: ratio(test_pc[n]["flatness"], original[n])
                             for n in class_names}
  out["mix"] = _mix_summary(out["generated"]["clips"], class_names)
  return out


def _frechet(plain, train_f, train, test_f, test, gen_f, generated,
             class_names) -> dict:
  """{"frechet_to_train": {"generated"/"test": {class: {train class: FD}}},
  "frechet_segments": {class: segments per set}}."""
  per_class = lambda fs, clips: {
      n: plain.standardize(np.concatenate([f for f, c in zip(fs, clips)
                                           if c.label == n]))
      for n in class_names if any(c.label == n for c in clips)}
  ref, sets = per_class(train_f, train), {
      "generated": per_class(gen_f, generated), "test": per_class(test_f, test)}
  frechet, sizes = {"generated": {}, "test": {}}, {}
  for n in class_names:
    have = [len(sets[k][n]) for k in sets if n in sets[k]]
    sizes[n] = min(have) if have else 0
    for key in sets:
      if n in sets[key] and sizes[n] >= 2:
        frechet[key][n] = {m: _frechet_subsets(sets[key][n], ref[m], sizes[n])
                           for m in class_names}
  return {"frechet_to_train": frechet, "frechet_segments": sizes}


def _frechet_subsets(cand_NxE, ref_NxE, size: int) -> float:
  """The Frechet distance of ``size`` of the candidate vectors to the
  reference; the mean over FD_DRAWS seeded draws when there are more. The
  distance grows as a set shrinks, so a generated set and its floor (the real
  test set) are both cut to the smaller one's size."""
  if len(cand_NxE) == size:
    return frechet_distance(cand_NxE, ref_NxE)
  rng = np.random.default_rng(0)
  return float(np.mean([
      frechet_distance(cand_NxE[rng.choice(len(cand_NxE), size, replace=False)],
                       ref_NxE) for _ in range(FD_DRAWS)]))


def _judgement(clf, feats, clips) -> list[dict]:
  """Per clip: the predicted class, the probability of its condition (None
  for a clip without a class) and its two likeliest classes."""
  names, out = clf.class_names, []
  for clip, logp_C in zip(clips, clf.clip_log_probs(feats)):
    prob_C = np.exp(logp_C - logp_C.max())
    prob_C /= prob_C.sum()
    order = np.argsort(-logp_C, kind="stable")
    out.append({"predicted": names[int(order[0])],
                "p_condition": (float(prob_C[names.index(clip.label)])
                                if clip.label in names else None),
                "top2": [names[int(i)] for i in order[:2]]})
  return out


def _score(judges, feats, clips, class_names, sample_rate, detector) -> dict:
  """Per-clip records of one set of clips (both judges' verdicts, flatness,
  periodicity, crash) and their summaries per class and for all."""
  verdicts = {name: _judgement(clf, feats, clips)
              for name, clf in judges.items()}
  records = []
  for i, clip in enumerate(clips):
    record = {"name": clip.name, "condition": clip.label,
              "mix": list(clip.mix) if clip.mix else None,
              "seconds": len(clip.wave_T) / sample_rate,
              "flatness": clip_flatness(clip.wave_T, sample_rate),
              "periodicity": clip_periodicity(clip.wave_T, sample_rate),
              "crash": detector.detect(clip.wave_T, sample_rate)}
    for name, verdict in verdicts.items():
      suffix = "" if name == "plain" else "_" + name
      record.update({k + suffix: v for k, v in verdict[i].items()})
    records.append(record)
  per_class = {n: _summary([r for r in records if r["condition"] == n])
               for n in class_names}
  per_class["all"] = _summary(records)
  return {"per_class": per_class, "clips": records}


def _accuracy(records, suffix=""):
  """The share of the records (with a class condition) predicted right."""
  scored = [r for r in records if r["p_condition" + suffix] is not None]
  return (float(np.mean([r["predicted" + suffix] == r["condition"]
                         for r in scored])) if scored else None)


def _summary(records) -> dict:
  """Both judges' accuracy over the clips with a class condition, also over
  those that did not crash (a classifier of real audio labels a crash
  arbitrarily); median flatness and periodicity over the clips; crashes over
  all, and over the first LONG_CLIP_SECONDS of the clips that long."""
  fine = [r for r in records if not r["crash"]]
  crashes = [r["crash"]["time"] for r in records if r["crash"]]
  seconds = [r["seconds"] for r in records]
  long = [r for r in records if r["seconds"] >= LONG_CLIP_SECONDS]
  return {
      "clips": len(records),
      "accuracy": _accuracy(records), "accuracy_not_crashed": _accuracy(fine),
      "accuracy_robust": _accuracy(records, "_robust"),
      "accuracy_robust_not_crashed": _accuracy(fine, "_robust"),
      "flatness": _median([r["flatness"] for r in records]),
      "periodicity": _median([r["periodicity"] for r in records]),
      "crashed": len(crashes),
      "crash_rate": len(crashes) / len(records) if records else None,
      "clip_seconds": ({"min": min(seconds), "max": max(seconds)}
                       if records else None),
      "mean_crash_time": float(np.mean(crashes)) if crashes else None,
      "long_clips": len(long),
      "crash_rate_long": (float(np.mean([
          r["crash"] is not None and r["crash"]["time"] < LONG_CLIP_SECONDS
          for r in long])) if long else None)}


def _noisy_accuracy(clf, noisy_feats, test, class_names) -> dict:
  """A judge's accuracy on the noisy test copies: per class and for all
  (pooled over the noise levels), and per level ("per_level")."""
  records = {k: [{"condition": c.label, **v} for c, v in
                 zip(test, _judgement(clf, fs, test))]
             for k, fs in noisy_feats.items()}
  pooled = [r for rs in records.values() for r in rs]
  out = {n: _accuracy([r for r in pooled if r["condition"] == n])
         for n in class_names}
  out["all"] = _accuracy(pooled)
  out["per_level"] = {str(k): _accuracy(rs) for k, rs in records.items()}
  return out


def _mix_summary(records, class_names) -> dict | None:
  """Of the clips generated with a mix of two classes, the share whose two
  likeliest classes are that pair, per judge; chance is 1 / (C choose 2).
  Also per pair ("pairs", keyed "a+b" in class order), with the plain
  judge's likeliest class of its clips: a blend of two classes can sound
  like a third that lies between them. None without such clips; with two
  classes every clip's two likeliest are the pair, so there is no measure
  (the shares are None)."""
  mixed = [r for r in records if r["mix"]]
  if not mixed:
    return None
  n_classes = len(class_names)

  def share(rows, key):
    return (float(np.mean([set(r[key]) == set(r["mix"]) for r in rows]))
            if n_classes > 2 else None)

  def pair(r):
    return "+".join(sorted(r["mix"], key=class_names.index))

  by_pair = {}
  for r in mixed:
    by_pair.setdefault(pair(r), []).append(r)
  pairs = {}
  for key, rows in sorted(by_pair.items()):
    heard = [r["predicted"] for r in rows]
    pairs[key] = {"clips": len(rows), "plain": share(rows, "top2"),
                  "robust": share(rows, "top2_robust"),
                  "likeliest": {n: heard.count(n) for n in class_names
                                if n in heard}}
  return {"clips": len(mixed), "plain": share(mixed, "top2"),
          "robust": share(mixed, "top2_robust"),
          "chance": 2 / (n_classes * (n_classes - 1)) if n_classes > 2
                    else None,
          "pairs": pairs}


def _fmt(value, spec=".2f", none="–"):
  return none if value is None else format(value, spec)


def format_markdown(result: dict) -> str:
  """One row per class and one for all (Frechet: the mean over classes):
  both judges' condition accuracy and ceilings (the robust one on real and
  on noisy test clips), flatness and periodicity of generated vs real test
  clips, crashes and the Frechet distance vs its floor; then the clip
  lengths, the long-clip crash rate and the mix score."""
  gen, test = result["generated"]["per_class"], result["test"]["per_class"]
  noisy = result["test_noisy"]["robust"]
  fd_gen, fd_test = (result["frechet_to_train"]["generated"],
                     result["frechet_to_train"]["test"])
  original = result.get("flatness_original", {})
  lines = ["| class | clips | acc. plain | acc. robust | ceiling plain | "
           "ceiling robust (real / noisy) | flatness gen. / real 8-bit "
           "(ratio) | flatness ratio to original (floor) | "
           "periodicity gen. / real | crashed | Frechet gen. / floor |",
           "|---" * 11 + "|"]
  own, floor = [], []
  for n in result["classes"] + ["all"]:
    if n == "all":
      fd = np.mean(own) if own else None
      fl = np.mean(floor) if floor else None
      label = f"**all** (chance {result['chance']:.2f})"
    else:
      fd, fl = fd_gen.get(n, {}).get(n), fd_test.get(n, {}).get(n)
      own += [fd] if fd is not None else []
      floor += [fl] if fl is not None else []
      label = n
    g, t, ratio = gen[n], test[n], result["flatness_ratio"][n]
    to_original = (f"{_fmt(result['flatness_ratio_original'][n], '.1f')}x "
                   f"({_fmt(result['flatness_floor'][n], '.1f')}x)"
                   if n in original else "–")
    lines.append(
        f"| {label} | {g['clips']} | {_fmt(g['accuracy'])} | "
        f"{_fmt(g['accuracy_robust'])} | {_fmt(t['accuracy'])} | "
        f"{_fmt(t['accuracy_robust'])} / {_fmt(noisy[n])} | "
        f"{_fmt(g['flatness'], '.3f')} / {_fmt(t['flatness'], '.3f')} "
        f"({_fmt(ratio, '.1f')}x) | {to_original} | "
        f"{_fmt(g['periodicity'])} / "
        f"{_fmt(t['periodicity'])} | {g['crashed']}/{g['clips']} | "
        f"{_fmt(fd, '.1f')} / {_fmt(fl, '.1f')} |")
  every = gen["all"]
  if every["clip_seconds"]:
    span = every["clip_seconds"]
    lines.append(f"\nClips of {span['min']:.1f} to {span['max']:.1f} s; "
                 f"crash rate {_fmt(every['crash_rate'])}, over the first "
                 f"{result['long_clip_seconds']:g} s of the "
                 f"{every['long_clips']} clips that long: "
                 f"{_fmt(every['crash_rate_long'])}.")
  mix = result["mix"]
  if mix:
    lines.append(f"\nMixes of two classes: {mix['clips']} clips; the two "
                 f"likeliest classes are the mixed pair: plain "
                 f"{_fmt(mix['plain'])}, robust {_fmt(mix['robust'])} "
                 f"(chance {_fmt(mix['chance'])}).")
    for key, p in mix["pairs"].items():
      heard = ", ".join(f"{n} {k}" for n, k in p["likeliest"].items())
      lines.append(f"- {key.replace('+', ' + ')}: {p['clips']} clips, plain "
                   f"{_fmt(p['plain'])}, robust {_fmt(p['robust'])}; "
                   f"likeliest class (plain): {heard}")
  lines.append(f"\nRobust judge: trained with copies at "
               f"{', '.join(map(str, result['noise_levels']))} levels of "
               "sampling noise; its noisy ceiling is on test copies with the "
               "same noise.")
  return "\n".join(lines)


def load_dataset_clips(dataset_dir, split: str, q_levels: int = 256,
                       quantization: str = "linear",
                       preemphasis: float = 0.0,
                       as_model_hears: bool = True) -> list[Clip]:
  """A prepared dataset's chunks of one split, as the model hears them
  (``audio.encode`` and ``decode``: quantised, with the model's pre-emphasis,
  and back), or as they are on disk (``as_model_hears=False``)."""
  clips = []
  for chunk in dataset_lib.split_chunks(
      dataset_lib.read_manifest(dataset_dir), split):
    wave_T, _ = sf.read(pathlib.Path(dataset_dir) / chunk["path"],
                        dtype="float32")
    if as_model_hears:
      wave_T = audio.decode(
          audio.encode(wave_T, q_levels, quantization, preemphasis),
          q_levels, quantization, preemphasis)
    clips.append(Clip(chunk["path"], wave_T, chunk["label"]))
  return clips


def _condition(meta: dict, class_names, path: str):
  """(label, mix) of a generated clip from its sidecar: the class it was
  generated as (None for a mix) and, for a mix of two classes, the pair
  (likelier first). The mix comes from "cond_mix" ({class: weight}) when
  there, else from "condition_vector" (in the run's class order) when exactly
  two of its entries are non-zero."""
  name = meta.get("condition_name")
  if name in class_names:
    return name, None
  if "cond_mix" in meta:
    weights = {k: float(v) for k, v in meta["cond_mix"].items() if v}
    unknown = sorted(set(weights) - set(class_names))
    if unknown:
      raise ValueError(f"{path}: cond_mix names {unknown}, not classes of this "
                       f"run ({list(class_names)}); evaluate with the run "
                       "that generated it")
  else:
    vector = meta.get("condition_vector") or []
    weights = ({n: float(v) for n, v in zip(class_names, vector) if v}
               if len(vector) == len(class_names) else {})
  if len(weights) == 1:
    return next(iter(weights)), None
  if len(weights) == 2:
    return None, tuple(sorted(weights, key=lambda n: -weights[n]))
  return None, None


def load_generated(folder, sample_rate: int, class_names) -> list[Clip]:
  """Every ``*.wav`` in ``folder`` that has a JSON sidecar (as sample.py
  writes them), with its class or mix (``_condition``)."""
  clips = []
  for path in sorted(glob.glob(os.path.join(folder, "*.wav"))):
    sidecar = path[:-4] + ".json"
    if not os.path.isfile(sidecar):
      continue
    with open(sidecar) as f:
      label, mix = _condition(json.load(f), class_names, sidecar)
    clips.append(Clip(os.path.basename(path),
                      audio.load_audio(path, sample_rate), label, mix))
  if not clips:
    raise FileNotFoundError(f"{folder}: no wav files with JSON sidecars")
  return clips


def evaluate_folder(generated_dir: str, dataset_dir: str, class_names=None,
                    q_levels: int = 256, quantization: str = "linear",
                    preemphasis: float = 0.0) -> dict:
  """Evaluates the wav files in ``generated_dir`` against a prepared dataset
  (class order: ``class_names``, default the manifest's; the quantisation
  the model's); writes ``audio_eval.json`` and ``audio_eval.md`` there and
  returns the result."""
  manifest = dataset_lib.read_manifest(dataset_dir)
  class_names = list(class_names or manifest["class_names"])
  if len(class_names) < 2:
    raise ValueError("the audio evaluation needs at least two classes")
  sample_rate = manifest["sample_rate"]
  real = {s: load_dataset_clips(dataset_dir, s, q_levels, quantization,
                                preemphasis)
          for s in ("train", "test")}
  generated = load_generated(generated_dir, sample_rate, class_names)
  result = evaluate_clips(
      generated, real["train"], real["test"], class_names, sample_rate,
      q_levels=q_levels, quantization=quantization, preemphasis=preemphasis,
      test_original=load_dataset_clips(dataset_dir, "test",
                                       as_model_hears=False))
  result["generated_dir"] = os.path.abspath(generated_dir)
  with open(os.path.join(generated_dir, "audio_eval.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(generated_dir, "audio_eval.md"), "w") as f:
    f.write(format_markdown(result) + "\n")
  return result


def evaluate_generated_dir(config, generated_dir: str) -> dict:
  """``evaluate_folder`` with a run's resolved config: its dataset, class
  order and quantisation."""
  m = config.model
  return evaluate_folder(generated_dir, config.data.dataset_dir,
                         list(config.data.class_names), m.q_levels,
                         m.quantization, m.preemphasis)
