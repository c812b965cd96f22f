"""A prepared dataset (``prepare``, ``dataset``) read back as TBPTT training
batches.

A batch is B chunks of one split (docs/design.md §3). Each chunk is cut to
a multiple of ``seq_len`` samples, encoded (``audio.encode``: the optional
pre-emphasis, then quantisation; each chunk starts after silence), and
left-padded with ``lookback`` samples of ``q_zero`` (silence), so that every
TBPTT window, the first included, has ``lookback`` samples of context:
``windows`` cuts a batch into them.

Training order: epoch e visits the split's chunks in the permutation drawn from
(seed, e), B at a time, and drops the last partial batch; epochs follow each
other forever. Batch (e, i) depends only on (seed, e, i), so a stream restored
from ``position()`` continues exactly where the saved one was, prefetch or not.
With several hosts, every host walks the same global order and keeps its rows
[p * B/P, (p+1) * B/P) of each global batch.

Decoded chunks are cached in memory as quantised levels (one byte a sample for
Q <= 256): a prepared dataset is small next to the host's memory.
"""
from __future__ import annotations

import pathlib
import queue
import threading
from typing import Iterator, NamedTuple

import numpy as np
import soundfile as sf

from csrnn_jax import audio
from csrnn_jax import dataset


class Batch(NamedTuple):
  """One host's share of a batch of chunks (a pytree: NamedTuple)."""
  x_BxT: np.ndarray  # int32 (B, lookback + n_windows * seq_len) levels.
  cond_BxC: np.ndarray  # float32 (B, C) condition vectors.
  label_B: np.ndarray  # int32 (B,) class index; -1 for vector labels.
  mask_B: np.ndarray  # float32 (B,) 1 for real rows, 0 for padding rows.


def windows(x_BxT, seq_len: int, lookback: int):
  """(B, lookback + n*seq_len) -> int32 (n, B, lookback + seq_len).

  Window i is x[:, i*seq_len : i*seq_len + lookback + seq_len]: its last
  seq_len samples are the ones it predicts, the lookback before them context.
  Works on numpy and jax arrays (the trainer scans over axis 0).
  """
  n_windows, rest = divmod(x_BxT.shape[1] - lookback, seq_len)
  if rest or n_windows < 1:
    raise ValueError(
        f"x_BxT has length {x_BxT.shape[1]}, not lookback {lookback} plus a "
        f"positive multiple of seq_len {seq_len}")
  idx_NxW = (np.arange(n_windows)[:, None] * seq_len
             + np.arange(lookback + seq_len)[None, :])
  return x_BxT[:, idx_NxW].transpose(1, 0, 2).astype(np.int32)


class BatchStream:
  """Endless shuffled training batches of one split, prefetched in a thread.

  batch_size is global: this host gets batch_size / process_count rows. Use
  ``next(stream)`` (or iterate), ``position()``/``restore()`` around
  checkpoints, ``eval_batches()`` for one ordered pass, ``close()`` at the end.
  """

  def __init__(self, dataset_dir, split: str, batch_size: int, seq_len: int,
               lookback: int, q_levels: int = 256, quantization: str = "linear",
               seed: int = 0, process_index: int = 0, process_count: int = 1,
               prefetch: int = 2, preemphasis: float = 0.0):
    audio.check_quantization(quantization)
    audio.check_preemphasis(preemphasis)
    self.dataset_dir = pathlib.Path(dataset_dir)
    manifest = dataset.read_manifest(dataset_dir)
    chunks = dataset.split_chunks(manifest, split)
    if not chunks:
      present = sorted({c["split"] for c in manifest["chunks"]})
      raise dataset.DatasetError(
          f"{self.dataset_dir}: split {split!r} has no chunks (splits with "
          f"chunks: {', '.join(present)}); pick one of them or prepare more "
          "audio")
    if batch_size < 1 or batch_size % process_count:
      raise dataset.DatasetError(
          f"batch_size {batch_size} must be a positive multiple of "
          f"process_count {process_count}: every host takes an equal share")
    if not 0 <= process_index < process_count:
      raise dataset.DatasetError(f"process_index {process_index} is not in "
                         f"[0, process_count={process_count})")
    self.n_windows = manifest["chunk_samples"] // seq_len
    if self.n_windows < 1 or lookback < 0:
      raise dataset.DatasetError(
          f"seq_len {seq_len} (lookback {lookback}) does not fit the chunks of "
          f"{manifest['chunk_samples']} samples; lower seq_len, or prepare "
          "longer chunks")
    self.split, self.batch_size, self.seed = split, batch_size, seed
    self.seq_len, self.lookback = seq_len, lookback
    self.q_levels, self.quantization = q_levels, quantization
    self.preemphasis = preemphasis
    self.sample_rate = manifest["sample_rate"]
    self.class_names = list(manifest["class_names"])
    self.cond_names = list(manifest["cond_names"])
    self.cond_dim = manifest["cond_dim"]
    self.num_chunks = len(chunks)
    self.batches_per_epoch = self.num_chunks // batch_size
    self._paths = [self.dataset_dir / c["path"] for c in chunks]
    self._cond_NxC = np.array([c["vector"] for c in chunks],
                              np.float32).reshape(self.num_chunks, -1)
    self._label_N = np.array(
        [self.class_names.index(c["label"]) if c["label"] is not None else -1
         for c in chunks], np.int32)
    host_rows = batch_size // process_count
    self._share = slice(process_index * host_rows,
                        (process_index + 1) * host_rows)
    self._cache = {}
    self._epoch_order = (None, None)
    self._cache_dtype = np.uint8 if q_levels <= 256 else np.int32
    self._prefetch = prefetch
    self._thread = None
    self._epoch, self._batch = 0, 0

  # Chunks and batches, as pure functions of their indices.

  def _levels(self, i: int) -> np.ndarray:
    """Chunk i as encoded levels, (n_windows * seq_len,), cached."""
    if i not in self._cache:
      path = self._paths[i]
      try:
        x_T, rate = sf.read(path, dtype="float32")
      except (sf.LibsndfileError, RuntimeError) as e:
        raise dataset.DatasetError(f"{path}: cannot be read ({e}); re-run "
                           "csrnn-prepare to rebuild the dataset") from e
      length = self.n_windows * self.seq_len
      if rate != self.sample_rate or x_T.ndim != 1 or len(x_T) < length:
        raise dataset.DatasetError(
            f"{path}: {rate} Hz, shape {x_T.shape}; the manifest wants mono "
            f"{self.sample_rate} Hz of at least {length} samples; re-run "
            "csrnn-prepare to rebuild the dataset")
      self._cache[i] = audio.encode(
          x_T[:length], self.q_levels, self.quantization,
          self.preemphasis).astype(self._cache_dtype)
    return self._cache[i]

  def _assemble(self, rows_B, mask_B) -> Batch:
    """This host's share of the global rows (chunk indices) and mask."""
    rows_B, mask_B = rows_B[self._share], mask_B[self._share]
    length = self.lookback + self.n_windows * self.seq_len
    x_BxT = np.full((len(rows_B), length), audio.q_zero(self.q_levels),
                    np.int32)
    for r, i in enumerate(rows_B):
      x_BxT[r, self.lookback:] = self._levels(i)
    return Batch(x_BxT, self._cond_NxC[rows_B], self._label_N[rows_B],
                 mask_B.astype(np.float32))

  def _order(self, epoch: int) -> np.ndarray:
    """The chunk permutation of an epoch, kept for the epoch in progress."""
    cached_epoch, order_N = self._epoch_order
    if cached_epoch != epoch:
      order_N = np.random.default_rng([self.seed, epoch]).permutation(
          self.num_chunks)
      self._epoch_order = (epoch, order_N)
    return order_N

  def batch_at(self, epoch: int, index: int) -> Batch:
    """Training batch `index` of `epoch` (the same on every call)."""
    if self.batches_per_epoch == 0:
      raise dataset.DatasetError(
          f"split {self.split!r} has {self.num_chunks} chunks, fewer than "
          f"batch_size {self.batch_size}, so no full training batch; lower "
          "batch_size or prepare more audio")
    start = index * self.batch_size
    rows_B = self._order(epoch)[start:start + self.batch_size]
    return self._assemble(rows_B, np.ones(self.batch_size, np.float32))

  def _after(self, epoch: int, index: int) -> tuple[int, int]:
    index += 1
    return (epoch + 1, 0) if index == self.batches_per_epoch else (epoch, index)

  # Iteration, prefetch and position.

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self._prefetch <= 0:
      batch = self.batch_at(self._epoch, self._batch)
    else:
      if self._thread is None:
        self._start_prefetch()
      batch = self._queue.get()
      if isinstance(batch, Exception):
        self._stop_prefetch()
        raise batch
    self._epoch, self._batch = self._after(self._epoch, self._batch)
    return batch

  def _start_prefetch(self) -> None:
    self._stop = threading.Event()
    self._queue = queue.Queue(maxsize=self._prefetch)
    self._thread = threading.Thread(
        target=self._produce, args=(self._epoch, self._batch), daemon=True,
        name="BatchStream-prefetch")
    self._thread.start()

  def _produce(self, epoch: int, index: int) -> None:
    stop, out = self._stop, self._queue
    try:
      while not stop.is_set():
        out.put(self.batch_at(epoch, index))
        epoch, index = self._after(epoch, index)
    except Exception as e:  # pylint: disable=broad-except
      out.put(e)  # raised again by __next__ in the consumer's thread.

  def _stop_prefetch(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    while self._thread.is_alive():  # drain, so that a blocked put returns.
      try:
        self._queue.get(timeout=0.01)
      except queue.Empty:
        pass
    self._thread = None

  def position(self) -> dict:
    """The next batch's place, {"epoch": e, "batch": i}, for checkpoints."""
    return {"epoch": self._epoch, "batch": self._batch}

  def restore(self, position: dict) -> None:
    """Continues from a position() of a stream with the same settings."""
    epoch, index = int(position["epoch"]), int(position["batch"])
    if epoch < 0 or not 0 <= index < max(1, self.batches_per_epoch):
      raise dataset.DatasetError(
          f"position {position} is outside this stream "
          f"({self.batches_per_epoch} batches per epoch); was it saved with "
          "another batch_size or dataset?")
    self._stop_prefetch()
    self._epoch, self._batch = epoch, index

  def close(self) -> None:
    """Stops the prefetch thread."""
    self._stop_prefetch()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def eval_batches(self) -> Iterator[Batch]:
    """Every chunk of the split once, in manifest order, batch_size at a time;
    the last batch repeats rows to fill up, with mask 0 on the repeats."""
    for start in range(0, self.num_chunks, self.batch_size):
      real = min(self.batch_size, self.num_chunks - start)
      rows_B = np.resize(np.arange(start, start + real), self.batch_size)
      yield self._assemble(rows_B, np.arange(self.batch_size) < real)
