"""Small real audio datasets for tests, written with soundfile.

Three classes with different timbre, so that a model can tell them apart:
``bells`` (struck inharmonic partials that decay), ``organ`` (sustained odd
harmonics with vibrato) and ``wind`` (band-passed noise that swells). Files mix
wav/flac/ogg/aiff at 44.1 kHz stereo and 16 kHz mono; one corrupt and one empty
file sit among them. Everything is a few seconds long so tests stay fast.

Plain helpers (``make_class_folders``, ``make_tiny_dataset``,
``make_vector_csv``) and the session fixture ``tiny_dataset`` that wraps them.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import soundfile as sf

from csrnn_jax import prepare

CLASSES = ("bells", "organ", "wind")
# Seconds per file for each class: unequal, so that balancing has work to do.
# Each is a whole number of samples at 16 kHz and 44.1 kHz.
FILE_SECONDS = {"bells": 1.6, "organ": 1.1, "wind": 2.1}
FILES_PER_CLASS = 5
# (extension, sample rate, channels) of file j in every class.
LAYOUTS = (("wav", 44100, 2), ("flac", 16000, 1), ("ogg", 44100, 2),
           ("wav", 16000, 1), ("aiff", 44100, 2))
CORRUPT = "bells/broken.wav"  # relative to the class folders' root.
EMPTY = "organ/empty.ogg"
CHUNK_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class FixtureFile:
  path: pathlib.Path
  label: str
  seconds: float
  sample_rate: int
  channels: int


def synth(kind: str, seconds: float, sample_rate: int, seed: int = 0):
  """float32 (T,) audio of one class, peak about 0.5, never silent."""
  rng = np.random.default_rng(seed)
  t = np.arange(round(seconds * sample_rate)) / sample_rate
  if kind == "bells":
    x = np.zeros_like(t)
    for start in np.arange(0.0, seconds, 0.4):
      f0 = rng.choice([392.0, 440.0, 523.3, 587.3, 659.3])
      tail, struck = np.maximum(t - start, 0.0), t >= start
      for ratio, gain in ((1.0, 1.0), (2.76, 0.5), (5.40, 0.25), (8.93, 0.1)):
        x += struck * gain * np.sin(2 * np.pi * f0 * ratio * tail) * np.exp(
            -4.0 * ratio ** 0.5 * tail)
  elif kind == "organ":
    f0 = rng.choice([110.0, 130.8, 146.8])
    phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5.0 * t)
    x = sum(np.sin(h * phase) / h for h in (1, 3, 5, 7, 9))
    x *= np.minimum(1.0, t / 0.05)
  elif kind == "wind":
    noise = rng.standard_normal(len(t) + 64)
    band = np.convolve(noise, np.hanning(64), mode="valid")[:len(t)]
    x = band * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
  else:
    raise ValueError(f"unknown kind {kind!r}; one of {CLASSES}")
  return (0.5 * x / np.abs(x).max()).astype(np.float32)


def write_audio(path, x_T, sample_rate: int, channels: int = 1) -> None:
  """Writes mono audio to any soundfile format (by extension); stereo copies
  a slightly quieter right channel."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  data = x_T if channels == 1 else np.stack([x_T, 0.8 * x_T], axis=1)
  sf.write(path, data, sample_rate)


def make_class_folders(root, classes=CLASSES, files_per_class=FILES_PER_CLASS,
                       bad_files=True) -> list[FixtureFile]:
  """Writes root/<class>/... audio (one file per class in a sub-folder) and,
  with bad_files, the CORRUPT and EMPTY files. Returns the good files."""
  root = pathlib.Path(root)
  files = []
  for c, label in enumerate(classes):
    for j in range(files_per_class):
      ext, rate, channels = LAYOUTS[j % len(LAYOUTS)]
      folder = root / label / ("live" if j == 1 else "")
      path = folder / f"{label}{j}.{ext}"
      seconds = FILE_SECONDS[label]
      write_audio(path, synth(label, seconds, rate, seed=10 * c + j), rate,
                  channels)
      files.append(FixtureFile(path, label, seconds, rate, channels))
  if bad_files:
    (root / CORRUPT).parent.mkdir(parents=True, exist_ok=True)
    (root / CORRUPT).write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" * 8)
    (root / EMPTY).parent.mkdir(parents=True, exist_ok=True)
    (root / EMPTY).write_bytes(b"")
  return files


def make_vector_csv(root, vectors, cond_names=("valence", "arousal")):
  """Writes one 16 kHz organ/wind file per vector and root/labels.csv with
  rows path,v1,...; returns the CSV's path."""
  root = pathlib.Path(root)
  lines = [",".join(("path",) + tuple(cond_names))]
  for i, vector in enumerate(vectors):
    kind = CLASSES[1 + i % 2]
    write_audio(root / "audio" / f"clip{i}.flac",
                synth(kind, 1.1, 16000, seed=i), 16000)
    lines.append(",".join([f"audio/clip{i}.flac"] + [str(v) for v in vector]))
  csv_path = root / "labels.csv"
  csv_path.write_text("\n".join(lines) + "\n")
  return csv_path


def make_tiny_dataset(root) -> pathlib.Path:
  """Prepares the class folders into root/dataset: 16 kHz, 0.5 s chunks,
  3 classes; 27 train, 9 valid, 9 test chunks. Returns the dataset folder."""
  root = pathlib.Path(root)
  make_class_folders(root / "src")
  prepare.prepare_dataset(root / "src", root / "dataset",
                          chunk_seconds=CHUNK_SECONDS, verbose=False)
  return root / "dataset"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> pathlib.Path:
  """A prepared dataset folder shared by the whole session (read it only)."""
  return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
