"""The manifest schema: written by ``new_manifest``/``write_manifest``, read
back checked by ``read_manifest`` (errors that name the fix), the options a
rebuild compares and the chunks of a split. Real files, no audio."""
import json

import pytest

from csrnn_jax import dataset


def written(folder, **changes):
  chunks = [dataset.chunk_record(f"{split}/all/c{i}.wav", f"src{i}.wav",
                                 0.5 * i, split, None, [0.1 * i, 1.0], 0.5)
            for i, split in enumerate(("train", "valid", "train", "test"))]
  manifest = dataset.new_manifest(
      options={"seed": 3}, sample_rate=16000, chunk_samples=8000,
      class_names=[], cond_names=["valence", "arousal"],
      split_by={"all": "file"}, silent_chunks_dropped=1,
      balance_dropped_chunks=0, skipped=[], warnings=[], chunks=chunks)
  manifest.update(changes)
  folder.mkdir(exist_ok=True)
  dataset.write_manifest(folder, manifest)
  return manifest


def test_a_written_manifest_reads_back_with_its_splits(tmp_path):
  manifest = written(tmp_path)
  assert dataset.read_manifest(tmp_path) == manifest
  assert manifest["format_version"] == dataset.FORMAT_VERSION
  assert manifest["cond_dim"] == 2 and manifest["sample_rate"] == 16000
  assert [c["path"] for c in dataset.split_chunks(manifest, "train")] == [
      "train/all/c0.wav", "train/all/c2.wav"]
  assert dataset.split_chunks(manifest, "dev") == []
  assert dataset.recorded_options(tmp_path) == {"seed": 3}
  assert dataset.manifest_path(tmp_path) == tmp_path / "manifest.json"


def test_read_manifest_errors(tmp_path):
  with pytest.raises(dataset.DatasetError, match="no such dataset folder"):
    dataset.read_manifest(tmp_path / "nope")
  with pytest.raises(dataset.DatasetError,
                     match="manifest.json: missing.*csrnn-prepare SRC OUT"):
    dataset.read_manifest(tmp_path)
  (tmp_path / "manifest.json").write_text('{"format_version": 1, "chun')
  with pytest.raises(dataset.DatasetError,
                     match=r"manifest.json is not valid JSON \(.*line 1.*\): "
                           r"damaged .*csrnn-prepare SRC OUT --overwrite"):
    dataset.read_manifest(tmp_path)
  with pytest.raises(json.JSONDecodeError):
    dataset.recorded_options(tmp_path)
  (tmp_path / "manifest.json").write_text("[1, 2]")
  with pytest.raises(dataset.DatasetError, match="holds no manifest object"):
    dataset.read_manifest(tmp_path)


def test_another_version_or_missing_keys_name_the_fix(tmp_path):
  written(tmp_path, format_version=0)
  with pytest.raises(dataset.DatasetError,
                     match="format_version 0, this code reads 1; re-run "
                           "csrnn-prepare"):
    dataset.read_manifest(tmp_path)
  manifest = written(tmp_path)
  del manifest["chunks"], manifest["cond_dim"]
  dataset.write_manifest(tmp_path, manifest)
  with pytest.raises(dataset.DatasetError,
                     match="lacks cond_dim, chunks; prepare the dataset again"):
    dataset.read_manifest(tmp_path)
