"""What a training run leaves for its user: the checkpoint of every sampled
step kept, the trainer's samples apart from sample.py's (named with their
step), TensorBoard scalars, audio and images (or one warning without
tensorboardX), a config.json that finds its dataset from any folder, and no
run directory after a failed start."""
import hashlib
import json
import os
import struct
import sys

import numpy as np
import pytest

import helpers
from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import dataset as dataset_lib
from csrnn_jax import metrics as metrics_lib
from csrnn_jax.cli import evaluate as evaluate_cli
from csrnn_jax.cli import sample as sample_cli

CHUNK = helpers.WINDOWS_PER_BATCH  # steps per chunk batch
CLASSES = ("bells", "organ", "wind")


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
  """4 chunk batches, samples every 2, a checkpoint after each, keep 1,
  TensorBoard on; started from another folder with a relative dataset path."""
  home = tmp_path_factory.mktemp("home")
  config = helpers.tiny_config(
      tiny_dataset, num_steps=4 * CHUNK, eval_every=0, checkpoint_every=CHUNK,
      keep_checkpoints=1, sample_every=2 * CHUNK, sample_seconds=0.05,
      tensorboard=True)
  cwd = os.getcwd()
  os.chdir(home)
  try:
    config.data.dataset_dir = os.path.relpath(tiny_dataset)
    helpers.train_run(config, "run")
  finally:
    os.chdir(cwd)
  return home / "run"


def test_the_checkpoint_of_every_sampled_step_is_kept(run):
  # keep_checkpoints=1 keeps only the latest of the others.
  assert checkpoint_lib.Checkpointer(str(run)).steps() == [2 * CHUNK,
                                                           4 * CHUNK]
  for step in (2 * CHUNK, 4 * CHUNK):
    assert sorted(p.name for p in (run / "train_samples" / f"step{step}")
                  .glob("*.wav")) == [
                      f"step{step}_{name}_seed{i}_t1.wav"
                      for i, name in enumerate(CLASSES)]


def test_keep_policy_holds_sampled_best_and_latest_across_restarts(tmp_path):
  params = {"w": np.zeros(3, np.float32)}
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), keep=1)
  bits = {3: 1.0, 5: 2.0}  # step 3 is the best
  for step in range(1, 7):
    ckpt.save(step, params, None, {}, bits.get(step), sampled=step in (2, 4))
  assert ckpt.steps() == [2, 3, 4, 6]
  ckpt.close()
  reopened = checkpoint_lib.Checkpointer(str(tmp_path), keep=1)
  reopened.save(7, params, None, {})
  assert reopened.steps() == [2, 3, 4, 7]
  reopened.close()


def digests(folder):
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
          for p in folder.iterdir()}


def test_sample_py_defaults_do_not_touch_the_trainers_samples(run, capsys):
  step = 2 * CHUNK
  trainers = run / "train_samples" / f"step{step}"
  before = digests(trainers)
  assert sample_cli.main(["--workdir", str(run), "--step", str(step),
                          "--seconds", "0.05"]) == 0
  written = capsys.readouterr().out.split()
  assert written and all(p.startswith(str(run / "samples" / f"step{step}"))
                         for p in written)
  assert digests(trainers) == before


def read_events(folder):
  """Every Event of the TensorBoard event files in ``folder``."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  events = []
  for path in folder.glob("events.out.tfevents.*"):
    data, i = path.read_bytes(), 0
    while i < len(data):  # records: length, its CRC, data, the data's CRC
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12:i + 12 + length])
      events.append(event)
      i += 12 + length + 4
  return events


def test_tensorboard_holds_scalars_audio_and_spectrograms(run):
  pytest.importorskip("tensorboardX")
  values = [(e.step, v) for e in read_events(run / "tensorboard")
            for v in e.summary.value]
  scalars = {(s, v.tag) for s, v in values if v.HasField("simple_value")}
  assert {(c * CHUNK, "train/bits") for c in (1, 2, 3, 4)} <= scalars
  audio = {(s, v.tag): v.audio for s, v in values if v.HasField("audio")}
  assert set(audio) == {(s, f"samples/{name}_seed{i}_t1")
                        for s in (2 * CHUNK, 4 * CHUNK)
                        for i, name in enumerate(CLASSES)}
  assert all(a.sample_rate == 16000 and a.length_frames == 800
             for a in audio.values())
  images = [(s, v.image) for s, v in values if v.HasField("image")]
  assert [s for s, _ in images] == [2 * CHUNK, 4 * CHUNK]
  assert all(v.tag == "samples/spectrograms" for s, v in values
             if v.HasField("image"))
  assert all(image.encoded_image_string.startswith(b"\x89PNG")
             for _, image in images)


def test_tensorboard_without_tensorboardx_warns_once(tmp_path, monkeypatch,
                                                     capsys):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  monkeypatch.setattr(metrics_lib, "_warned", [])
  for _ in range(2):
    metrics_lib.MetricsWriter(str(tmp_path), 0, tensorboard=True).close()
  metrics_lib.MetricsWriter(str(tmp_path), 0, tensorboard=False).close()
  err = capsys.readouterr().err
  assert err.count("warning: train.tensorboard is on but tensorboardX is not "
                   "installed") == 1
  assert "train.tensorboard=False" in err and "tensorboard" in err
  assert not (tmp_path / "tensorboard").exists()


def test_config_json_finds_the_dataset_from_another_folder(
    run, tiny_dataset, tmp_path, monkeypatch, capsys):
  saved = json.loads((run / "config.json").read_text())
  assert saved["data"]["dataset_dir"] == str(tiny_dataset)
  monkeypatch.chdir(tmp_path)  # nowhere near the relative path it was given
  assert evaluate_cli.main(["--workdir", str(run), "--split", "test"]) == 0
  assert "| **all** |" in capsys.readouterr().out


def test_a_failed_start_leaves_no_run_directory(tiny_dataset, tmp_path):
  config = helpers.tiny_config(tmp_path / "no_dataset_here")
  with pytest.raises(dataset_lib.DatasetError):
    helpers.train_run(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  config.data.dataset_dir = ""
  with pytest.raises(ValueError, match="data.dataset_dir is not set: give "
                     "--config.data.dataset_dir=DATA"):
    helpers.train_run(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  # A run directory that exists stays, even when the start fails.
  (tmp_path / "kept").mkdir()
  config.data.dataset_dir = str(tmp_path / "no_dataset_here")
  with pytest.raises(dataset_lib.DatasetError):
    helpers.train_run(config, tmp_path / "kept")
  assert (tmp_path / "kept").is_dir()
