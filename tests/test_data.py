"""BatchStream over a real prepared dataset: layout, determinism, resume,
multi-host shares, ordered evaluation and the TBPTT window layout.

``tiny_dataset`` is the session fixture from audio_fixtures (via conftest)."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import CLASSES, make_vector_csv
from csrnn_jax import audio, data, prepare
from csrnn_jax import dataset as dataset_lib

SEQ_LEN, LOOKBACK = 1000, 64  # 0.5 s chunks of 8000 samples: 8 windows.


def make_stream(dataset, **options):
  settings = dict(split="train", batch_size=4, seq_len=SEQ_LEN,
                  lookback=LOOKBACK)
  settings.update(options)
  return data.BatchStream(dataset, **settings)


def take(stream, n):
  batches = [next(stream) for _ in range(n)]
  stream.close()
  return batches


def assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    for field_a, field_b in zip(a, b):
      np.testing.assert_array_equal(field_a, field_b)


def chunk_levels(dataset, chunk, q_levels=256, method="linear"):
  x_T, _ = sf.read(dataset / chunk["path"], dtype="float32")
  return audio.quantize(x_T, q_levels, method)


@pytest.mark.parametrize("method", ["linear", "mu-law"])
def test_batch_layout(tiny_dataset, method):
  manifest = dataset_lib.read_manifest(tiny_dataset)
  stream = make_stream(tiny_dataset, quantization=method)
  assert (stream.num_chunks, stream.batches_per_epoch, stream.n_windows) == (
      27, 6, 8)
  assert stream.class_names == list(CLASSES) and stream.cond_dim == 3
  batch = take(stream, 1)[0]
  assert batch.x_BxT.shape == (4, LOOKBACK + 8 * SEQ_LEN)
  assert batch.x_BxT.dtype == np.int32 and batch.cond_BxC.dtype == np.float32
  assert batch.label_B.dtype == np.int32 and batch.mask_B.dtype == np.float32
  assert (batch.x_BxT[:, :LOOKBACK] == audio.q_zero(256)).all()
  np.testing.assert_array_equal(batch.cond_BxC, np.eye(3)[batch.label_B])
  np.testing.assert_array_equal(batch.mask_B, np.ones(4))
  # Rows hold the quantised chunk files (eval order is manifest order).
  first = next(stream.eval_batches())
  train = [c for c in manifest["chunks"] if c["split"] == "train"]
  for row, chunk in zip(first.x_BxT, train):
    want = chunk_levels(tiny_dataset, chunk, 256, method)
    np.testing.assert_array_equal(row[LOOKBACK:], want)


def test_preemphasis_batches_hold_the_encoded_chunks(tiny_dataset):
  """The stream's rows are audio.encode of each chunk file (filter from
  silence at the chunk's start, then quantise); 0.0 is plain quantisation."""
  train = [c for c in dataset_lib.read_manifest(tiny_dataset)["chunks"]
           if c["split"] == "train"]
  plain = next(make_stream(tiny_dataset, preemphasis=0.0).eval_batches())
  shaped = next(make_stream(tiny_dataset, quantization="mu-law",
                            preemphasis=0.85).eval_batches())
  for plain_row, row, chunk in zip(plain.x_BxT, shaped.x_BxT, train):
    x_T, _ = sf.read(tiny_dataset / chunk["path"], dtype="float32")
    np.testing.assert_array_equal(plain_row[LOOKBACK:],
                                  chunk_levels(tiny_dataset, chunk))
    np.testing.assert_array_equal(
        row[LOOKBACK:], audio.encode(x_T, 256, "mu-law", 0.85))
    assert not np.array_equal(row[LOOKBACK:], chunk_levels(
        tiny_dataset, chunk, 256, "mu-law"))
  assert (shaped.x_BxT[:, :LOOKBACK] == audio.q_zero(256)).all()
  with pytest.raises(ValueError, match=r"preemphasis=1.0 must be in \[0, 1\)"):
    make_stream(tiny_dataset, preemphasis=1.0)


def test_same_seed_same_batches_regardless_of_prefetch(tiny_dataset):
  a = take(make_stream(tiny_dataset, seed=5, prefetch=0), 8)
  b = take(make_stream(tiny_dataset, seed=5, prefetch=3), 8)
  assert_same(a, b)
  c = take(make_stream(tiny_dataset, seed=6), 8)
  assert not np.array_equal(np.stack([x.x_BxT for x in a]),
                            np.stack([x.x_BxT for x in c]))


def test_epochs_are_fresh_permutations(tiny_dataset):
  stream = make_stream(tiny_dataset)
  batches = take(stream, 13)
  assert stream.position() == {"epoch": 2, "batch": 1}
  def rows(epoch_batches):
    return [row.tobytes() for b in epoch_batches for row in b.x_BxT]
  epoch0, epoch1 = rows(batches[:6]), rows(batches[6:12])
  assert len(set(epoch0)) == len(set(epoch1)) == 24  # no chunk twice
  assert epoch0 != epoch1


def test_restore_mid_epoch_continues_exactly(tiny_dataset):
  uninterrupted = take(make_stream(tiny_dataset, seed=2), 9)
  first = make_stream(tiny_dataset, seed=2)
  take(first, 4)
  position = json.loads(json.dumps(first.position()))
  assert position == {"epoch": 0, "batch": 4}
  resumed = make_stream(tiny_dataset, seed=2)
  resumed.restore(position)
  assert_same(take(resumed, 5), uninterrupted[4:])
  # Restoring a running stream drops what its prefetch thread had queued.
  running = make_stream(tiny_dataset, seed=2, prefetch=4)
  take(running, 7)
  running.restore(position)
  assert_same(take(running, 5), uninterrupted[4:])
  with pytest.raises(dataset_lib.DatasetError, match="outside this stream"):
    running.restore({"epoch": 0, "batch": 6})


def test_two_hosts_concatenate_to_the_single_host_batch(tiny_dataset):
  single = make_stream(tiny_dataset, seed=1)
  hosts = [make_stream(tiny_dataset, seed=1, process_index=p, process_count=2)
           for p in range(2)]
  shares = [take(h, 7) for h in hosts]
  assert shares[0][0].x_BxT.shape == (2, LOOKBACK + 8 * SEQ_LEN)
  joined = [data.Batch(*(np.concatenate(fields) for fields in zip(a, b)))
            for a, b in zip(*shares)]
  assert_same(joined, take(single, 7))
  evals = [list(make_stream(tiny_dataset, split="valid", process_index=p,
                            process_count=2).eval_batches()) for p in range(2)]
  joined = [data.Batch(*(np.concatenate(fields) for fields in zip(a, b)))
            for a, b in zip(*evals)]
  assert_same(joined, list(make_stream(tiny_dataset,
                                       split="valid").eval_batches()))
  with pytest.raises(dataset_lib.DatasetError,
                     match="batch_size 3 must be a positive multiple of "
                           "process_count 2"):
    make_stream(tiny_dataset, batch_size=3, process_count=2)


def test_eval_batches_cover_the_split_once(tiny_dataset):
  valid = [c for c in dataset_lib.read_manifest(tiny_dataset)["chunks"]
           if c["split"] == "valid"]
  batches = list(make_stream(tiny_dataset, split="valid").eval_batches())
  assert len(valid) == 9 and len(batches) == 3
  masks = np.concatenate([b.mask_B for b in batches])
  np.testing.assert_array_equal(masks, [1] * 9 + [0] * 3)
  real = np.concatenate([b.x_BxT for b in batches])[:9, LOOKBACK:]
  np.testing.assert_array_equal(
      real, np.stack([chunk_levels(tiny_dataset, c) for c in valid]))
  labels = np.concatenate([b.label_B for b in batches])[:9]
  np.testing.assert_array_equal(
      labels, [CLASSES.index(c["label"]) for c in valid])
  last = batches[-1]  # padded by repeating its rows
  np.testing.assert_array_equal(last.x_BxT[1:], last.x_BxT[:1].repeat(3, 0))


def test_windows_layout(tiny_dataset):
  x_BxT = np.arange(2 * 23).reshape(2, 23)  # lookback 3 + 4 windows of 5
  w_NxBxW = data.windows(x_BxT, seq_len=5, lookback=3)
  assert w_NxBxW.shape == (4, 2, 8) and w_NxBxW.dtype == np.int32
  for i in range(4):
    np.testing.assert_array_equal(w_NxBxW[i], x_BxT[:, 5 * i:5 * i + 8])
  np.testing.assert_array_equal(w_NxBxW[1:, :, :3], w_NxBxW[:-1, :, -3:])
  jitted = jax.jit(lambda x: data.windows(x, 5, 3))(jnp.asarray(x_BxT))
  np.testing.assert_array_equal(jitted, w_NxBxW)
  with pytest.raises(ValueError, match="not lookback 3 plus a positive "
                                       "multiple of seq_len 6"):
    data.windows(x_BxT, seq_len=6, lookback=3)
  batch = take(make_stream(tiny_dataset), 1)[0]
  w_NxBxW = data.windows(batch.x_BxT, SEQ_LEN, LOOKBACK)
  assert w_NxBxW.shape == (8, 4, LOOKBACK + SEQ_LEN)
  assert (w_NxBxW[0, :, :LOOKBACK] == audio.q_zero(256)).all()
  np.testing.assert_array_equal(w_NxBxW[-1, :, -SEQ_LEN:],
                                batch.x_BxT[:, -SEQ_LEN:])


def test_vector_labels(tmp_path):
  vectors = [[0.0, 1.0], [0.5, 0.25], [1.0, 0.0], [0.75, 3.0]]
  csv_path = make_vector_csv(tmp_path / "src", vectors)
  prepare.prepare_dataset(tmp_path / "src", tmp_path / "ds",
                          labels_csv=csv_path, chunk_seconds=0.5,
                          verbose=False)
  stream = make_stream(tmp_path / "ds", batch_size=2)
  assert stream.class_names == [] and stream.cond_dim == 2
  batch = take(stream, 1)[0]
  np.testing.assert_array_equal(batch.label_B, [-1, -1])
  assert all(list(v) in vectors for v in batch.cond_BxC.tolist())


def test_stream_errors(tiny_dataset, tmp_path):
  with pytest.raises(dataset_lib.DatasetError,
                     match=r"split 'dev' has no chunks \(splits with chunks: "
                           r"test, train, valid\)"):
    make_stream(tiny_dataset, split="dev")
  with pytest.raises(dataset_lib.DatasetError,
                     match="seq_len 9000 .* does not fit the chunks of 8000"):
    make_stream(tiny_dataset, seq_len=9000)
  with pytest.raises(dataset_lib.DatasetError,
                     match="split 'valid' has 9 chunks, fewer than batch_size "
                           "16, so no full training batch"):
    take(make_stream(tiny_dataset, split="valid", batch_size=16), 1)
  # A chunk lost from disk surfaces from the prefetch thread, with its name.
  shutil.copytree(tiny_dataset, tmp_path / "ds")
  lost = next((tmp_path / "ds" / "train").rglob("*.wav"))
  lost.unlink()
  with pytest.raises(dataset_lib.DatasetError, match=f"{lost.name}: cannot be read"):
    take(make_stream(tmp_path / "ds", batch_size=27), 1)
