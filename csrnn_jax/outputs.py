"""Generate a batch to files: one 16-bit wav per row, a JSON sidecar per wav,
and one PNG of the batch's spectrograms. Used by ``sample.py`` and by the
trainer's periodic samples.

Long audio is generated in segments and appended to the open wav files as it
comes (each flushed after every segment), so memory stays at one segment and
a stopped run keeps what it wrote.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import soundfile as sf
from tqdm import tqdm

from csrnn_jax import audio
from csrnn_jax import plots
from csrnn_jax import sampling


@dataclasses.dataclass(frozen=True)
class Row:
  """One output: its name (a class or "mix"), condition vector, seed and
  temperature."""
  name: str
  cond: tuple[float, ...]
  seed: int
  temperature: float

  @property
  def stem(self) -> str:
    return f"{self.name}_seed{self.seed}_t{self.temperature:g}"


def generate_to_files(generator: sampling.Generator, rows: list[Row],
                      seconds: float, sample_rate: int, out_dir: str,
                      options=sampling.SamplingOptions(), prime_P=None,
                      start: str = "h0", segment_seconds: float = 4.0,
                      metadata: dict | None = None,
                      progress: bool = True, guard=None) -> list[str]:
  """Writes the rows' audio to ``out_dir``; returns the wav paths.

  guard: a ``crash_guard.CrashGuard`` to generate with rewinds (then its own
  segment length applies); its rewinds go into the sidecars.
  """
  cfg = generator.cfg
  os.makedirs(out_dir, exist_ok=True)
  num_samples = max(1, int(round(seconds * sample_rate)))
  cond_BxC = np.array([r.cond for r in rows], np.float32).reshape(
      len(rows), cfg.cond_dim)
  prime_BxP = None if prime_P is None else np.tile(prime_P, (len(rows), 1))
  paths = [os.path.join(out_dir, r.stem + ".wav") for r in rows]
  files = [sf.SoundFile(p, "w", sample_rate, 1, "PCM_16") for p in paths]
  loglik_B = np.zeros(len(rows))
  clips = [[] for _ in rows]
  started = time.perf_counter()
  args = (cond_BxC, [r.seed for r in rows], num_samples,
          [r.temperature for r in rows], options, prime_BxP, start)
  segments = (guard.segments(generator, *args) if guard else
              generator.segments(
                  *args, segment_samples=int(segment_seconds * sample_rate)))
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
        for f, wave, clip in zip(files, wave_BxS, clips):
          f.write(wave)
          f.flush()
          clip.append(wave)
        loglik_B += logp_BxS.sum(axis=1)
        bar.update(samples_BxS.shape[1])
  finally:
    for f in files:
      f.close()
  wall = time.perf_counter() - started
  for b, (path, row, loglik) in enumerate(zip(paths, rows, loglik_B)):
    sidecar = {**(metadata or {}), "condition_name": row.name,
               "condition_vector": list(row.cond), "seed": row.seed,
               "temperature": row.temperature, "top_k": options.top_k,
               "top_p": options.top_p, "start": start,
               "primed": prime_P is not None, "seconds": seconds,
               "sample_rate": sample_rate, "log_likelihood_nats": loglik,
               "bits_per_sample": -loglik / num_samples / np.log(2),
               "wall_seconds": wall,
               "crash_guard": None if guard is None else {
                   "rewinds": guard.rewinds[b], "crashes": guard.crashes[b]}}
    with open(path[:-4] + ".json", "w") as f:
      json.dump(sidecar, f, indent=2)
  plots.spectrograms([np.concatenate(c) for c in clips],
                     [r.stem for r in rows], sample_rate,
                     os.path.join(out_dir, "spectrograms.png"))
  return paths
