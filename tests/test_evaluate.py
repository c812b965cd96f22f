"""evaluate without training: an untrained tiny model scored on the tiny
dataset's splits (every chunk once, per class), the result written where
rundir names it, the table, and the dataset check of a moved dataset."""
import shutil

import numpy as np
import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import dataset
from csrnn_jax import evaluate
from csrnn_jax import model as model_lib
from csrnn_jax import provenance
from csrnn_jax import rundir

CLASSES = ("bells", "organ", "wind")


def untrained_run(dataset, workdir):
  """A params-only run of a tiny untrained model on ``dataset``."""
  config = configlib.base_config()
  config.model.frame_sizes = (4, 4, 16)
  config.model.dim = 8
  config.data.dataset_dir = str(dataset)
  config.train.seq_len = 256
  config.train.eval_batch_size = 4
  config = configlib.resolve(config)  # its classes: CLASSES
  assert config.data.class_names == CLASSES
  _, params = model_lib.build(config.model, 0)
  workdir.mkdir()
  rundir.write_config(str(workdir), config)
  checkpoint_lib.save_params(str(workdir), params)
  return str(workdir)


def test_a_split_is_scored_once_per_chunk_and_written(tiny_dataset, tmp_path):
  workdir = untrained_run(tiny_dataset, tmp_path / "run")
  result = evaluate.evaluate_run(workdir, "valid")
  labels = [c["label"] for c in dataset.split_chunks(
      dataset.read_manifest(tiny_dataset), "valid")]
  assert result["chunks"] == len(labels) == 9 and result["step"] == 0
  assert list(result["per_class"]) == list(CLASSES)
  # Chunks are equally long: the overall figure is the chunk-weighted mean.
  assert result["bits"] == pytest.approx(np.average(
      [result["per_class"][k] for k in CLASSES],
      weights=[labels.count(k) for k in CLASSES]))
  assert abs(result["bits"] - 8.0) < 1.5  # untrained: near log2(256) bits
  assert rundir.load(workdir).evals == {"valid": {0: result}}
  table = evaluate.format_table(result, "valid", 0).splitlines()
  assert table[0] == "| valid (step 0) | bits/sample |"
  assert table[2].startswith("| bells | ") and len(table) == 6
  assert table[-1] == f"| **all** | **{result['bits']:.4f}** |"


def test_a_moved_dataset_without_a_recorded_hash_needs_a_yes(tiny_dataset,
                                                             tmp_path):
  workdir = untrained_run(tiny_dataset, tmp_path / "run")
  moved = tmp_path / "moved"
  shutil.copytree(tiny_dataset, moved)
  with pytest.raises(provenance.DatasetChanged,
                     match=r"cannot tell whether .*moved is the dataset"):
    evaluate.on_dataset(rundir.read_config(workdir), workdir, str(moved))
  config = evaluate.on_dataset(rundir.read_config(workdir), workdir,
                               str(moved), accept_dataset_change=True)
  assert config.data.dataset_dir == str(moved)
