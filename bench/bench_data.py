"""Throughput of the data path: `prepare` and the training BatchStream.

    python bench/bench_data.py [--minutes 20] [--batches 100]

Writes `minutes` of generated audio (4 classes of harmonic tones and noise, as
64 s files alternating 44.1 kHz stereo wav and flac, as users bring them) to a
temp folder, then times:

- prepare_dataset (16 kHz, 8 s chunks, balance): minutes of audio per second;
- BatchStream over train (batch 16, seq_len 1024, lookback 64): samples per
  second delivered by next(), cold (the first epoch decodes the chunks) and
  warm (cached), and how long next() blocks when the consumer is busy with a
  50 ms train step per batch, with and without the prefetch thread.
"""
import argparse
import os
import pathlib
import platform
import tempfile
import time

import numpy as np
import soundfile as sf

from csrnn_jax import data, prepare

FILE_SECONDS = 64  # 8 whole chunks of 8 s
IN_RATE = 44100


def write_sources(root: pathlib.Path, minutes: float, n_classes: int = 4):
  """Harmonic notes with per-class timbre and envelopes, plus a noise bed."""
  rng = np.random.default_rng(0)
  n_files = n_classes * max(3, round(minutes * 60 / FILE_SECONDS / n_classes))
  t = np.arange(FILE_SECONDS * IN_RATE) / IN_RATE
  for i in range(n_files):
    c = i % n_classes
    f0_T = rng.choice([110.0, 146.8, 196.0, 261.6]) * (2 ** (c / 12)) * (
        1 + 0.01 * np.sin(2 * np.pi * 4 * t))
    phase_T = 2 * np.pi * np.cumsum(f0_T) / IN_RATE
    tone_T = sum(np.sin(h * phase_T) / h ** (1 + c / 2) for h in range(1, 8))
    envelope_T = np.exp(-(1 + c) * (t % (0.5 + 0.25 * c)))
    x_T = 0.4 * tone_T * envelope_T + 0.02 * rng.standard_normal(len(t))
    x_T = (0.8 * x_T / np.abs(x_T).max()).astype(np.float32)
    ext = ("wav", "flac")[i % 2]
    path = root / f"class{c}" / f"take{i:03d}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x_T, 0.9 * x_T], axis=1), IN_RATE)
  return n_files * FILE_SECONDS / 60


def make_stream(dataset, prefetch):
  return data.BatchStream(dataset, "train", batch_size=16, seq_len=1024,
                          lookback=64, prefetch=prefetch)


def delivery_rates(dataset, batches, prefetch):
  """Samples per second from next(): cold (the first epoch decodes the chunks
  from disk) and warm (cached), with nothing else running."""
  stream = make_stream(dataset, prefetch)
  per_batch = 16 * stream.n_windows * stream.seq_len
  rates = []
  for n in (stream.batches_per_epoch, batches):
    start = time.perf_counter()
    for _ in range(n):
      next(stream)
    rates.append(n * per_batch / (time.perf_counter() - start))
  stream.close()
  return rates


def mean_wait(dataset, prefetch, step_seconds):
  """Mean seconds that next() blocks over a cold epoch (after its first
  batch) when the consumer spends step_seconds on each batch, as a train
  step on the device would."""
  stream = make_stream(dataset, prefetch)
  next(stream)
  waits = []
  for _ in range(stream.batches_per_epoch - 1):
    time.sleep(step_seconds)
    start = time.perf_counter()
    next(stream)
    waits.append(time.perf_counter() - start)
  stream.close()
  return float(np.mean(waits))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--minutes", type=float, default=20.0)
  parser.add_argument("--batches", type=int, default=100)
  args = parser.parse_args()
  cpu = next((line.split(":", 1)[1].strip()
              for line in open("/proc/cpuinfo", encoding="utf-8")
              if line.startswith("model name")), platform.processor())
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    minutes = write_sources(root / "src", args.minutes)
    start = time.perf_counter()
    manifest = prepare.prepare_dataset(root / "src", root / "out",
                                       balance=True, verbose=False)
    seconds = time.perf_counter() - start
    print(f"machine: {cpu}, {len(os.sched_getaffinity(0))} cores usable")
    print(f"prepare: {minutes:.1f} min of 44.1 kHz stereo wav/flac -> "
          f"{len(manifest['chunks'])} chunks of 8 s in {seconds:.2f} s = "
          f"{minutes / seconds:.2f} min of audio per s")
    stream = make_stream(root / "out", 0)
    print(f"stream: batch 16 x {stream.n_windows} windows x 1024 (+64 "
          f"lookback) = {16 * stream.n_windows * 1024 / 1e6:.2f} M samples, "
          f"{stream.num_chunks} train chunks")
    for prefetch in (0, 2):
      cold, warm = delivery_rates(root / "out", args.batches, prefetch)
      print(f"  prefetch={prefetch}: cold {cold / 1e6:.0f} M samples/s, "
            f"warm {warm / 1e6:.0f} M samples/s; next() waits "
            f"{1e3 * mean_wait(root / 'out', prefetch, 0.05):.2f} ms per "
            "batch behind a 50 ms train step (cold)")


if __name__ == "__main__":
  main()
