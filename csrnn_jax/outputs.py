"""Generate a batch to files: one 16-bit wav per row, a JSON sidecar per wav,
and one PNG of the batch's spectrograms. Used by ``sample.py`` and by the
trainer's periodic samples.

Long audio is generated in segments and appended to the open wav files as it
comes (each flushed after every segment), so memory stays at one segment (the
spectrograms show each clip's first ``SPECTROGRAM_SECONDS``). A wav is written
as ``<name>.wav.partial`` and renamed when complete, after its sidecar, so a
stopped run keeps what it wrote under a name that no reader takes for a
finished file. An existing output is replaced only when its sidecar records
the same settings (the same audio), or with ``overwrite``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time

import numpy as np
import soundfile as sf
from tqdm import tqdm

from csrnn_jax import audio
from csrnn_jax import crash_guard
from csrnn_jax import plots
from csrnn_jax import postfilter
from csrnn_jax import rundir
from csrnn_jax import sampling

SPECTROGRAM_SECONDS = 30.0
PARTIAL = ".partial"
# Sidecar entries that describe a result or a location, not what the audio
# is: outputs that differ only in these are the same audio.
RESULT_KEYS = ("log_likelihood_nats", "bits_per_sample", "wall_seconds",
               "crash_guard", "workdir", "prime")
# The name of the output of a run without classes to name: unconditional,
# or conditioned on vectors (then on the zero vector).
UNCONDITIONAL = "uncond"


class OutputExists(FileExistsError):
  """An output file of other settings is in the way."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One output: its name (a class or a mix), condition vector, seed,
  temperature and guidance scale. ``mix``: a product of experts of several
  conditions, one (class name, weight, vector) per component; the generator
  reads the components, and ``cond`` holds their weighted sum (the sidecar's
  condition_vector)."""
  name: str
  cond: tuple[float, ...]
  seed: int
  temperature: float
  guidance: float = 1.0
  mix: tuple[tuple[str, float, tuple[float, ...]], ...] = ()
  # A morph: (seconds, condition vector) keyframes in time order; the
  # condition between them is interpolated ("linear") or held ("step").
  schedule: tuple[tuple[float, tuple[float, ...]], ...] = ()
  morph: str = "linear"
  # How a morph combines the entries of its condition vectors: as the vector
  # itself ("vector"), or as a product of experts ("experts"), one expert
  # per entry j (the basis vector e_j, a class) weighted by entry j.
  morph_mix: str = "vector"

  @property
  def experts_morph(self) -> bool:
    return bool(self.schedule) and self.morph_mix == "experts"

  @property
  def guided(self) -> bool:
    """Whether the row needs the guided program; if not, its audio is plain
    sampling's, bit for bit."""
    return self.guidance != 1.0 or bool(self.mix) or self.experts_morph

  @property
  def null_weight(self) -> float:
    """The null condition's coefficient in the guided sum, ``1 - s sum_i
    w_i`` (for an experts morph the largest in size over its keyframes, where
    the extremes lie): 0 when it cancels (plain rows, and mixes whose weights
    sum to 1 at s = 1), so the audio does not depend on the null
    condition."""
    if self.experts_morph:
      sums = [sum(v) for _, v in self.schedule]
    else:
      sums = [sum(w for _, w, _ in self.mix) if self.mix else 1.0]
    return max((1.0 - self.guidance * w for w in sums), key=abs)


def one_hot(index: int, cond_dim: int) -> tuple[float, ...]:
  """The condition vector (cond_dim,) of class ``index``."""
  return tuple(float(j == index) for j in range(cond_dim))


def per_class_conditions(class_names, cond_dim: int):
  """[(name, condition vector (cond_dim,))]: one per class, in one-hot
  order; a run without classes to name (unconditional, or conditioned on
  vectors) gets one, UNCONDITIONAL on the zero vector."""
  if not cond_dim or len(class_names) != cond_dim:
    return [(UNCONDITIONAL, (0.0,) * cond_dim)]
  return [(name, one_hot(i, cond_dim)) for i, name in enumerate(class_names)]


def file_stem(row: Row, options: sampling.SamplingOptions, prime_P=None,
              start: str = "h0", guarded: bool = False,
              redraw_unfiltered: bool = False, denoise: float = 0.0) -> str:
  """``<name>_seed<seed>_t<temperature>``, then each setting that changes the
  audio, only where it is not the default: g<guidance> for a guided row
  (``cv`` after it when guidance applies to the conditioning vectors),
  k<top_k>, p<top_p>, minp<min_p>, typ<typical_p>, above<truncate_above>
  (when a filter is on), prime<the first 6 hex
  digits of the SHA-1 of the prime's levels>, zeros (``start``), guard (the
  crash guard; guardfull when it redraws without the filters or the
  guidance), dn<denoise> (the post-filter)."""
  o = options
  parts = [row.name, f"seed{row.seed}", f"t{row.temperature:g}"]
  if row.guided:
    parts.append(f"g{row.guidance:g}"
                 + ("cv" if o.guide == "cond_vectors" else ""))
  parts += [f"k{o.top_k}"] if o.top_k else []
  parts += [f"p{o.top_p:g}"] if o.top_p < 1.0 else []
  parts += [f"minp{o.min_p:g}"] if o.min_p > 0.0 else []
  parts += [f"typ{o.typical_p:g}"] if o.typical_p < 1.0 else []
  parts += [f"above{o.truncate_above}"] if o.gated else []
  if prime_P is not None:
    parts.append("prime" + hashlib.sha1(
        np.ascontiguousarray(prime_P, np.int32).tobytes()).hexdigest()[:6])
  parts += [start] if start != "h0" else []
  if guarded:
    full = redraw_unfiltered and crash_guard.redraw_differs(o, row.guidance)
    parts.append("guardfull" if full else "guard")
  parts += [f"dn{denoise:g}"] if denoise else []
  return "_".join(parts)


MORPHS = ("linear", "step")
MORPH_MIXES = ("vector", "experts")


def schedule_vectors(row: Row, n_frames: int, frame_seconds: float):
  """(T, C): the condition of each top frame, at the time of its first
  sample (frame f starts at f * frame_seconds); held before the first
  keyframe and after the last."""
  if not row.schedule:
    return np.tile(np.asarray(row.cond, np.float32), (n_frames, 1))
  times_N = np.array([t for t, _ in row.schedule])
  vectors_NxC = np.array([v for _, v in row.schedule], np.float32)
  t_T = np.arange(n_frames) * frame_seconds
  if row.morph == "step":  # the last keyframe at or before t
    index_T = np.searchsorted(times_N, t_T, side="right") - 1
    return vectors_NxC[np.maximum(index_T, 0)]
  return np.stack([np.interp(t_T, times_N, vectors_NxC[:, j])
                   for j in range(vectors_NxC.shape[1])], 1).astype(np.float32)


def generator_conditions(rows: list[Row], cond_dim: int, n_frames: int = 0,
                         frame_seconds: float = 0.0):
  """``cond`` and ``mix_weights`` for ``Generator.segments``: (B, C) and None
  when no row is a mix; else every row's components (B, M, C) and weights
  (B, M), a row with fewer than M padded with weight 0 (which adds nothing).
  When a row has a schedule of vectors, a schedule for every row (B, N, C);
  when one is an experts morph, the weights per frame (B, M, N); N =
  ``n_frames`` top frames of ``frame_seconds``."""
  if any(r.schedule and not r.experts_morph for r in rows):
    if any(r.mix or r.experts_morph for r in rows):
      raise ValueError("a morph of condition vectors (--cond-schedule) and a "
                       "product of experts (--cond-mix, --morph-mix experts) "
                       "cannot share a batch: generate them in two calls")
    return np.stack([schedule_vectors(r, n_frames, frame_seconds)
                     for r in rows]).reshape(len(rows), n_frames,
                                             cond_dim), None
  if not any(r.mix or r.experts_morph for r in rows):
    return np.array([r.cond for r in rows], np.float32).reshape(
        len(rows), cond_dim), None
  basis = np.eye(cond_dim, dtype=np.float32)
  parts = []  # per row: [(component vector, weight or weights_T)]
  for r in rows:
    if r.experts_morph:
      weights_TxC = schedule_vectors(r, n_frames, frame_seconds)
      used = [j for j in range(cond_dim)
              if any(v[j] != 0 for _, v in r.schedule)] or [0]
      parts.append([(basis[j], weights_TxC[:, j]) for j in used])
    else:
      parts.append([(v, w) for _, w, v in r.mix] or [(r.cond, 1.0)])
  m = max(map(len, parts))
  parts = [p + [(p[0][0], 0.0)] * (m - len(p)) for p in parts]
  cond_BxMxC = np.array([[v for v, _ in p] for p in parts],
                        np.float32).reshape(len(rows), m, cond_dim)
  shape = (m, n_frames) if any(r.experts_morph for r in rows) else (m,)
  weights = np.stack([np.stack([np.broadcast_to(np.float32(w), shape[1:])
                                for _, w in p]) for p in parts])
  return cond_BxMxC, weights


def settings(row: Row, options: sampling.SamplingOptions, start: str,
             primed: bool, seconds: float, sample_rate: int,
             metadata: dict | None = None, denoise: float = 0.0) -> dict:
  """Everything a row's sidecar records before its audio exists."""
  out = {**(metadata or {}), "condition_name": row.name,
         "condition_vector": list(row.cond), "seed": row.seed,
         "temperature": row.temperature, "guidance": row.guidance,
         "guide": options.guide, "top_k": options.top_k,
         "top_p": options.top_p, "min_p": options.min_p,
         "typical_p": options.typical_p,
         "truncate_above": options.truncate_above, "denoise": denoise,
         "start": start,
         "primed": primed,
         "seconds": seconds, "sample_rate": sample_rate}
  if row.mix:
    out["cond_mix"] = {name: weight for name, weight, _ in row.mix}
  if row.schedule:
    out["cond_schedule"] = [[t, list(v)] for t, v in row.schedule]
    out["morph_mix"] = row.morph_mix
    out["morph"] = row.morph
  return out


def check_free(path: str, sidecar: dict, overwrite: bool) -> None:
  """Raises OutputExists unless ``path`` (a wav) is free, or holds an output
  whose sidecar records these settings, or ``overwrite``."""
  if overwrite or not os.path.exists(path):
    return
  json_path = path[:-4] + ".json"
  try:
    with open(json_path, encoding="utf-8") as f:
      old = json.load(f)
  except (OSError, ValueError):
    raise OutputExists(
        f"{path} exists and has no readable sidecar ({json_path}), so it was "
        "not written by this generator; give another --out, or pass "
        "--overwrite to replace it") from None
  same = lambda d: {k: v for k, v in json.loads(json.dumps(d)).items()
                    if k not in RESULT_KEYS}
  new, old = same(sidecar), same(old)
  if new != old:
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
               for k in sorted(set(new) | set(old)) if old.get(k) != new.get(k)]
    raise OutputExists(
        f"{path} holds audio of other settings ({'; '.join(changed)}); give "
        "another --out, or pass --overwrite to replace it")


def generate_to_files(generator: sampling.Generator, rows: list[Row],
                      seconds: float, sample_rate: int, out_dir: str,
                      options=sampling.SamplingOptions(), prime_P=None,
                      start: str = "h0", segment_seconds: float = 4.0,
                      metadata: dict | None = None,
                      progress: bool = True, guard=None,
                      overwrite: bool = False,
                      name_prefix: str = "",
                      denoise: float = 0.0) -> list[str]:
  """Writes the rows' audio to ``out_dir``; returns the wav paths.

  name_prefix: put before every file name (the trainer's ``step<N>_``).

  guard: a ``crash_guard.CrashGuard`` to generate with rewinds (then its own
  segment length applies); its rewinds go into the sidecars.

  denoise: the post-filter's strength (``postfilter``; 0: the audio as
  drawn). The crash guard judges the audio as drawn. Raises
  OutputExists before generating when an output's name holds other audio
  (``check_free``), ValueError for a length under one sample or more audio
  than the disk has room for.
  """
  cfg = generator.cfg
  num_samples = int(round(seconds * sample_rate))
  if not num_samples >= 1:
    raise ValueError(f"seconds={seconds} is no sample at {sample_rate} Hz; "
                     "give a length > 0")
  stems = [name_prefix + file_stem(
      r, options, prime_P, start, guard is not None,
      guard is not None and guard.redraw_unfiltered, denoise) for r in rows]
  paths = [os.path.join(out_dir, stem + ".wav") for stem in stems]
  sidecars = [settings(r, options, start, prime_P is not None, seconds,
                       sample_rate, metadata, denoise) for r in rows]
  post = (postfilter.PostFilter(len(rows), sample_rate, denoise, cfg.q_levels,
                                cfg.quantization, cfg.preemphasis)
          if denoise else None)
  for path, sidecar in zip(paths, sidecars):
    check_free(path, sidecar, overwrite)
  os.makedirs(out_dir, exist_ok=True)
  needed, free = len(rows) * num_samples * 2, shutil.disk_usage(out_dir).free
  if needed > free:  # 16-bit mono
    raise ValueError(
        f"{len(rows)} outputs of {seconds:g} s need {needed / 1e9:.3g} GB in "
        f"{out_dir}, which has {free / 1e9:.3g} GB free; generate fewer or "
        "shorter files, or free some space")
  cond, mix_weights = generator_conditions(
      rows, cfg.cond_dim, -(-num_samples // cfg.lookback),
      cfg.lookback / sample_rate)
  prime_BxP = None if prime_P is None else np.tile(prime_P, (len(rows), 1))
  files = []  # opened at the first segment: a refused input writes nothing
  loglik_B = np.zeros(len(rows))
  clips = [[] for _ in rows]  # the first SPECTROGRAM_SECONDS of each

  def write(wave_BxS):
    if not files:
      files.extend(sf.SoundFile(p + PARTIAL, "w", sample_rate, 1, "PCM_16",
                                format="WAV") for p in paths)
    room = int(SPECTROGRAM_SECONDS * sample_rate) - sum(map(len, clips[0]))
    for f, wave, clip in zip(files, wave_BxS, clips):
      f.write(wave)
      f.flush()
      if room > 0:
        clip.append(wave[:room])

  started = time.perf_counter()
  args = (cond, [r.seed for r in rows], num_samples,
          [r.temperature for r in rows], options, prime_BxP, start)
  guidance = dict(guidance=[r.guidance for r in rows], mix_weights=mix_weights)
  segments = (guard.segments(generator, *args, **guidance) if guard else
              generator.segments(
                  *args, segment_samples=int(segment_seconds * sample_rate),
                  **guidance))
  # The output filter (pre-emphasis) continues from the prime or silence.
  previous_B = None if prime_BxP is None else audio.decode(
      prime_BxP, cfg.q_levels, cfg.quantization, cfg.preemphasis)[:, -1]
  try:
    with tqdm(total=num_samples, unit="sample", unit_scale=True,
              disable=not progress, desc="generating") as bar:
      for samples_BxS, logp_BxS in segments:
        wave_BxS = audio.decode(samples_BxS, cfg.q_levels, cfg.quantization,
                                cfg.preemphasis, previous_B)
        previous_B = wave_BxS[:, -1]
        write(wave_BxS if post is None else post.push(wave_BxS))
        loglik_B += logp_BxS.sum(axis=1)
        bar.update(samples_BxS.shape[1])
      if post is not None:
        write(post.flush())
  finally:
    for f in files:
      f.close()
  wall = time.perf_counter() - started
  for b, (path, sidecar, loglik) in enumerate(zip(paths, sidecars, loglik_B)):
    sidecar.update(
        log_likelihood_nats=loglik,
        bits_per_sample=-loglik / num_samples / np.log(2), wall_seconds=wall,
        crash_guard=None if guard is None else {
            "rewinds": guard.rewinds[b], "crashes": guard.crashes[b],
            "redraw_unfiltered": guard.redraw_unfiltered,
            "max_rewinds": guard.max_rewinds,
            "backoff_seconds": guard.backoff / sample_rate})
    rundir.write_json(path[:-4] + ".json", sidecar)
    os.replace(path + PARTIAL, path)
  plots.spectrograms([np.concatenate(c) for c in clips],
                     stems, sample_rate,
                     os.path.join(out_dir, "spectrograms.png"))
  return paths
