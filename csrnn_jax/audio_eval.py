"""Automatic evaluation of generated audio against a run's real data (issue 10).

The paper could only listen. Three numbers make "does the conditioning work"
measurable, per class:

- condition accuracy: a classifier trained on the real train split labels
  every generated clip; its accuracy against the condition the clip was
  generated with is reported next to its accuracy on the real test split (the
  ceiling) and chance (1 / classes);
- Frechet distance between the MFCC statistics of generated clips of a class
  and the real train clips of that class, next to the same distance from the
  real test clips (the floor: what unseen real audio scores);
- stability: the share of clips that crash (``CrashDetector``) and when.

Features: a clip is cut into ``SEGMENT_SECONDS`` segments (the last partial
one dropped; a shorter clip is one segment); a segment's feature is the mean
and standard deviation over its frames of ``N_MFCC`` MFCCs (64 ms frames, 16
ms hop, 64 mel bands), so 2 * N_MFCC numbers. Segments, not clips, are the
samples of the distributions: a few seconds per class then give tens of
feature vectors. Real clips are first quantised and dequantised as the model
sees them, so that real and generated audio share the same noise floor.

Classifier: scikit-learn's StandardScaler + LogisticRegression on the train
split's segments; a clip's class is the argmax of its segments' summed
log-probabilities. The Frechet distance is computed in the same standardised
space (every feature weighs the same), from a class's generated (or real test)
segments to the real train segments of each class; it grows as the sets get
smaller, so the generated set and the floor are cut to the same size.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import pathlib

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

from csrnn_jax import audio
from csrnn_jax import data as data_lib

SEGMENT_SECONDS = 0.5
N_MFCC = 20
N_MELS = 64
FRAME_SECONDS = 0.064  # MFCC and crash-detector frames: 1024 samples at 16 kHz.
HOP_FRACTION = 0.25  # MFCC hop, a fraction of a frame (16 ms).
FD_DRAWS = 10
CRASH_KINDS = ("constant", "clipped", "noise")


@dataclasses.dataclass(frozen=True)
class Clip:
  """One clip: float32 audio (T,), its class (None: not a class, e.g. a mix)."""
  name: str
  wave_T: np.ndarray
  label: str | None


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
  frames_FxN = np.lib.stride_tricks.sliding_window_view(x_T, n_fft)[::hop]
  window_N = scipy.signal.windows.hann(n_fft, sym=False)
  power_FxK = np.abs(np.fft.rfft(frames_FxN * window_N, axis=1)) ** 2
  db_MxF = 10 * np.log10(np.maximum(_mel_basis(sample_rate, n_fft)
                                    @ power_FxK.T, 1e-10))
  db_MxF = np.maximum(db_MxF, db_MxF.max() - 80.0)
  return scipy.fft.dct(db_MxF, axis=0, norm="ortho")[:N_MFCC]


def segment_features(wave_T, sample_rate: int) -> np.ndarray:
  """(S, 2 * N_MFCC) MFCC means and standard deviations per segment; S is
  the clip's length in whole segments (at least 1), the frames shared out
  evenly."""
  mfcc_MxF = mfcc(wave_T, sample_rate)
  n_segments = max(1, len(wave_T) // int(SEGMENT_SECONDS * sample_rate))
  return np.stack([np.concatenate([seg_MxF.mean(1), seg_MxF.std(1)])
                   for seg_MxF in np.array_split(mfcc_MxF, n_segments, axis=1)])


def frechet_distance(a_NxD, b_MxD) -> float:
  """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).

  The symmetric form needs only eigendecompositions of PSD matrices, so it
  stays real and finite when N < D makes the covariances singular.
  """
  a_NxD, b_MxD = np.asarray(a_NxD, np.float64), np.asarray(b_MxD, np.float64)
  if len(a_NxD) < 2 or len(b_MxD) < 2:
    raise ValueError("the Frechet distance needs at least 2 vectors per set")
  cov_a, cov_b = np.cov(a_NxD, rowvar=False), np.cov(b_MxD, rowvar=False)
  w, v = np.linalg.eigh(cov_a)
  sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
  mean_term = np.sum((a_NxD.mean(0) - b_MxD.mean(0)) ** 2)
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

  def standardize(self, feats_SxD) -> np.ndarray:
    """The space the classifier and the Frechet distance work in."""
    return self.model[0].transform(feats_SxD)

  def clip_log_probs(self, feats) -> np.ndarray:
    """(N, C): per clip, the summed log-probabilities of its segments."""
    return np.stack([self.model.predict_log_proba(f).sum(0) for f in feats])


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
  - noise: spectral flatness (geometric / arithmetic mean of the Hann-windowed
    power spectrum, DC left out) >= ``noise_flatness`` in frames louder than
    ``noise_rms``, for ``noise_seconds``. White noise scores about 0.56
    (exp(-Euler's gamma)); loud demo frames stay below 0.16, and a fricative
    lasts one frame. Quiet frames are left to the constant test: 8-bit
    quantisation noise is white.
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
    n = int(round(FRAME_SECONDS * sample_rate))
    hop = n // 2
    x_T = np.asarray(wave_T, np.float64)
    k = max(1, int(round((self.constant_window * sample_rate - n) / hop)) + 1)
    if len(x_T) < n:
      return hop, {kind: (np.zeros(0, bool), n) for kind in CRASH_KINDS}
    frames_FxN = np.lib.stride_tricks.sliding_window_view(x_T, n)[::hop]
    window_N = scipy.signal.windows.hann(n, sym=False)
    power_FxK = np.abs(np.fft.rfft(frames_FxN * window_N, axis=1)[:, 1:]
                       ) ** 2 + 1e-12
    flatness_F = np.exp(np.log(power_FxK).mean(1)) / power_FxK.mean(1)
    rms_F = np.sqrt((frames_FxN ** 2).mean(1))
    # Mean square around each frame's mean, averaged over k frames.
    var_W = np.convolve(frames_FxN.var(1), np.ones(k) / k, mode="valid")
    return hop, {
        "constant": (np.sqrt(var_W) < self.constant_rms, (k - 1) * hop + n),
        "clipped": ((np.abs(frames_FxN) >= self.clip_level).mean(1)
                    >= self.clip_share, n),
        "noise": ((flatness_F >= self.noise_flatness)
                  & (rms_F >= self.noise_rms), n),
    }

  def detect(self, wave_T, sample_rate: int) -> dict | None:
    """The earliest crash, {"kind", "time": onset in s, "seconds": length of
    the run}, or None."""
    hop, flags = self.window_flags(wave_T, sample_rate)
    need = {"constant": self.constant_seconds, "clipped": self.clip_seconds,
            "noise": self.noise_seconds}
    found = []
    for kind, (flag_W, span) in flags.items():
      for first, count in _runs(flag_W):
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


def evaluate_clips(generated, train, test, class_names, sample_rate: int,
                   detector: CrashDetector = CrashDetector()) -> dict:
  """The whole evaluation of ``generated`` against real ``train``/``test``
  clips (lists of Clip with class labels); see ``format_markdown``."""
  feats = lambda clips: [segment_features(c.wave_T, sample_rate) for c in clips]
  train_f, test_f, gen_f = feats(train), feats(test), feats(generated)
  clf = ConditionClassifier(class_names).fit(train_f, [c.label for c in train])
  per_class = lambda fs, clips: {
      n: clf.standardize(np.concatenate([f for f, c in zip(fs, clips)
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
  out = {"classes": list(class_names), "chance": 1.0 / len(class_names),
         "segment_seconds": SEGMENT_SECONDS, "n_mfcc": N_MFCC,
         "crash_thresholds": dataclasses.asdict(detector),
         "frechet_to_train": frechet, "frechet_segments": sizes,
         "segments": {"train": sum(len(f) for f in train_f),
                      "test": sum(len(f) for f in test_f),
                      "generated": sum(len(f) for f in gen_f)}}
  for key, fs, clips in (("test", test_f, test),
                         ("generated", gen_f, generated)):
    out[key] = _score(clf, fs, clips, class_names, sample_rate, detector)
  return out


def _frechet_subsets(cand_NxD, ref_MxD, size: int) -> float:
  """The Frechet distance of ``size`` of the candidate vectors to the
  reference; the mean over FD_DRAWS seeded draws when there are more. The
  distance grows as a set shrinks, so a generated set and its floor (the real
  test set) are both cut to the smaller one's size."""
  if len(cand_NxD) == size:
    return frechet_distance(cand_NxD, ref_MxD)
  rng = np.random.default_rng(0)
  return float(np.mean([
      frechet_distance(cand_NxD[rng.choice(len(cand_NxD), size, replace=False)],
                       ref_MxD) for _ in range(FD_DRAWS)]))


def _score(clf, feats, clips, class_names, sample_rate, detector) -> dict:
  """Accuracy, crashes and per-clip records of one set of clips."""
  records = []
  logp_NxC = clf.clip_log_probs(feats) if clips else np.zeros((0, 0))
  for clip, logp_C in zip(clips, logp_NxC):
    prob_C = np.exp(logp_C - logp_C.max())
    prob_C /= prob_C.sum()
    records.append({
        "name": clip.name, "condition": clip.label,
        "predicted": class_names[int(np.argmax(logp_C))],
        "p_condition": (float(prob_C[class_names.index(clip.label)])
                        if clip.label in class_names else None),
        "seconds": len(clip.wave_T) / sample_rate,
        "crash": detector.detect(clip.wave_T, sample_rate)})
  per_class = {n: _summary([r for r in records if r["condition"] == n])
               for n in class_names}
  per_class["all"] = _summary(records)
  return {"per_class": per_class, "clips": records}


def _summary(records) -> dict:
  """Accuracy over the clips with a class condition, also over those that did
  not crash (a classifier of real audio labels a crash arbitrarily); crashes
  over all."""
  scored = [r for r in records if r["p_condition"] is not None]
  hit = lambda rs: (float(np.mean([r["predicted"] == r["condition"]
                                   for r in rs])) if rs else None)
  crashes = [r["crash"]["time"] for r in records if r["crash"]]
  return {"clips": len(records), "accuracy": hit(scored),
          "accuracy_not_crashed": hit([r for r in scored if not r["crash"]]),
          "crashed": len(crashes),
          "crash_rate": len(crashes) / len(records) if records else None,
          "mean_crash_time": float(np.mean(crashes)) if crashes else None}


def _fmt(value, spec=".2f", none="–"):
  return none if value is None else format(value, spec)


def format_markdown(result: dict) -> str:
  """One row per class and one for all (Frechet: the mean over classes):
  condition accuracy vs its ceiling, Frechet distance vs its floor, the
  nearest other class's distance, crashes."""
  gen, test = result["generated"]["per_class"], result["test"]["per_class"]
  fd_gen, fd_test = (result["frechet_to_train"]["generated"],
                     result["frechet_to_train"]["test"])
  lines = ["| class | clips | condition acc. | acc. not crashed | "
           "ceiling (real test) | Frechet gen. | floor (real test) | "
           "nearest other class (gen.) | crashed | mean crash time (s) |",
           "|---" * 10 + "|"]
  own, floor = [], []
  for n in result["classes"] + ["all"]:
    if n == "all":
      fd, fl, other = (np.mean(own) if own else None,
                       np.mean(floor) if floor else None, None)
      label = f"**all** (chance {result['chance']:.2f})"
    else:
      fd = fd_gen.get(n, {}).get(n)
      fl = fd_test.get(n, {}).get(n)
      others = [(v, m) for m, v in fd_gen.get(n, {}).items() if m != n]
      other = f"{min(others)[1]} {min(others)[0]:.1f}" if others else "–"
      own += [fd] if fd is not None else []
      floor += [fl] if fl is not None else []
      label = n
    g, t = gen[n], test[n]
    lines.append(
        f"| {label} | {g['clips']} | {_fmt(g['accuracy'])} | "
        f"{_fmt(g['accuracy_not_crashed'])} | {_fmt(t['accuracy'])} | "
        f"{_fmt(fd, '.1f')} | {_fmt(fl, '.1f')} | "
        f"{other or '–'} | {g['crashed']}/{g['clips']} | "
        f"{_fmt(g['mean_crash_time'], '.1f')} |")
  return "\n".join(lines)


def load_dataset_clips(dataset_dir, split: str, q_levels: int = 256,
                       quantization: str = "linear") -> list[Clip]:
  """A prepared dataset's chunks of one split, as the model hears them
  (quantised and back)."""
  manifest = data_lib.load_manifest(dataset_dir)
  clips = []
  for chunk in manifest["chunks"]:
    if chunk["split"] != split:
      continue
    wave_T, _ = sf.read(pathlib.Path(dataset_dir) / chunk["path"],
                        dtype="float32")
    wave_T = audio.dequantize(audio.quantize(wave_T, q_levels, quantization),
                              q_levels, quantization)
    clips.append(Clip(chunk["path"], wave_T, chunk["label"]))
  return clips


def load_generated(folder, sample_rate: int) -> list[Clip]:
  """Every ``*.wav`` in ``folder`` that has a JSON sidecar (as sample.py
  writes them); the class is the sidecar's condition_name."""
  clips = []
  for path in sorted(glob.glob(os.path.join(folder, "*.wav"))):
    sidecar = path[:-4] + ".json"
    if not os.path.isfile(sidecar):
      continue
    with open(sidecar) as f:
      meta = json.load(f)
    clips.append(Clip(os.path.basename(path),
                      audio.load_audio(path, sample_rate),
                      meta.get("condition_name")))
  if not clips:
    raise FileNotFoundError(f"{folder}: no wav files with JSON sidecars")
  return clips


def evaluate_generated_dir(config, generated_dir: str) -> dict:
  """Evaluates the wav files in ``generated_dir`` against the run's dataset
  (config: a run's resolved config); writes ``audio_eval.json`` and
  ``audio_eval.md`` there and returns the result."""
  d, m = config.data, config.model
  class_names = list(d.class_names)
  if len(class_names) < 2:
    raise ValueError("the audio evaluation needs a run with at least two "
                     "classes")
  real = {s: load_dataset_clips(d.dataset_dir, s, m.q_levels, m.quantization)
          for s in ("train", "test")}
  generated = load_generated(generated_dir, d.sample_rate)
  result = evaluate_clips(generated, real["train"], real["test"], class_names,
                          d.sample_rate)
  result["generated_dir"] = os.path.abspath(generated_dir)
  with open(os.path.join(generated_dir, "audio_eval.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(generated_dir, "audio_eval.md"), "w") as f:
    f.write(format_markdown(result) + "\n")
  return result
