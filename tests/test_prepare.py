"""prepare: real files in mixed formats become a dataset; bad input is
reported or refused with a message that names the file and the fix."""
import collections
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import (CHUNK_SECONDS, CLASSES, CORRUPT, EMPTY,
                            make_class_folders, make_vector_csv, synth,
                            write_audio)
from csrnn_jax import audio, dataset, prepare
from csrnn_jax.cli import prepare as prepare_cli

RATE = 16000
CHUNK = round(CHUNK_SECONDS * RATE)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """(root, good files) of the class folders, written once for this module."""
  root = tmp_path_factory.mktemp("folders")
  return root, make_class_folders(root)


def run_prepare(src, out, **options):
  options.setdefault("verbose", False)
  return prepare.prepare_dataset(src, out, chunk_seconds=CHUNK_SECONDS,
                                 **options)


def sources_by_split(manifest):
  sources = collections.defaultdict(set)
  for c in manifest["chunks"]:
    sources[c["split"]].add(c["source"])
  return sources


def test_load_audio_downmixes_and_resamples(tmp_path):
  t = np.arange(44100) / 44100
  x_T = 0.5 * np.sin(2 * np.pi * 440 * t)
  write_audio(tmp_path / "a.flac", x_T, 44100, channels=2)  # right = 0.8 left
  y_T = audio.load_audio(tmp_path / "a.flac", RATE)
  assert y_T.dtype == np.float32 and y_T.shape == (RATE,)
  want_T = 0.9 * 0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
  np.testing.assert_allclose(y_T[1000:-1000], want_T[1000:-1000], atol=2e-3)


def test_load_audio_errors_name_the_file(tmp_path):
  (tmp_path / "empty.wav").write_bytes(b"")
  (tmp_path / "junk.ogg").write_bytes(b"OggS not really" * 10)
  sf.write(tmp_path / "zero.wav", np.zeros((0, 2), np.float32), 44100)
  for name, message in (("missing.wav", "no such file"),
                        ("empty.wav", "the file is empty"),
                        ("junk.ogg", "cannot be decoded"),
                        ("zero.wav", "holds no samples")):
    with pytest.raises(audio.AudioError, match=message) as error:
      audio.load_audio(tmp_path / name, RATE)
    assert str(tmp_path / name) in str(error.value)


def test_write_wav_is_16_bit_clipped_and_makes_folders(tmp_path):
  path = tmp_path / "a" / "b" / "x.wav"
  audio.write_wav(path, np.array([0.5, 2.0, -3.0], np.float32), RATE)
  info = sf.info(path)
  assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
  np.testing.assert_allclose(sf.read(path)[0], [0.5, 1.0, -1.0], atol=1e-4)


def test_mixed_folder_becomes_dataset(folders, tmp_path, capsys):
  src, files = folders
  assert {(f.path.suffix, f.sample_rate, f.channels) for f in files} >= {
      (".wav", 44100, 2), (".flac", 16000, 1), (".ogg", 44100, 2),
      (".wav", 16000, 1)}
  out = tmp_path / "out"
  manifest = run_prepare(src, out, verbose=True)
  printed = capsys.readouterr().out

  assert manifest["sample_rate"] == RATE and manifest["chunk_samples"] == CHUNK
  assert manifest["class_names"] == list(CLASSES) == manifest["cond_names"]
  assert manifest["cond_dim"] == 3
  assert manifest["split_by"] == {c: "file" for c in CLASSES}
  assert manifest == json.loads((out / "manifest.json").read_text())

  # Chunks per source: every whole 0.5 s, at the right offsets.
  offsets = collections.defaultdict(list)
  for c in manifest["chunks"]:
    offsets[c["source"]].append(c["offset_seconds"])
  want = {f.path.relative_to(src).as_posix():
          [k * CHUNK_SECONDS for k in range(round(f.seconds * RATE) // CHUNK)]
          for f in files}
  assert {s: sorted(o) for s, o in offsets.items()} == want

  # The manifest matches the files on disk, and each file its entry.
  on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.wav")}
  assert on_disk == {c["path"] for c in manifest["chunks"]}
  assert sorted(p.name for p in out.iterdir()) == [
      "manifest.json", "test", "train", "valid"]
  decoded = {}
  for c in manifest["chunks"]:
    info = sf.info(out / c["path"])
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        RATE, 1, CHUNK, "PCM_16")
    assert c["duration_seconds"] == CHUNK_SECONDS
    assert c["path"].startswith(f"{c['split']}/{c['label']}/")
    assert c["vector"] == [float(n == c["label"]) for n in CLASSES]
    assert c["source"].split("/")[0] == c["label"]
    if c["source"] not in decoded:
      decoded[c["source"]] = audio.load_audio(src / c["source"], RATE)
    start = round(c["offset_seconds"] * RATE)
    np.testing.assert_allclose(sf.read(out / c["path"])[0],
                               decoded[c["source"]][start:start + CHUNK],
                               atol=1 / 32768 + 1e-6)

  # Splits share no source file, and each gets files of every class.
  by_split = sources_by_split(manifest)
  assert not (by_split["train"] & by_split["valid"])
  assert not (by_split["train"] & by_split["test"])
  assert not (by_split["valid"] & by_split["test"])
  assert [len(by_split[s]) for s in dataset.SPLITS] == [9, 3, 3]

  # The corrupt and the empty file are skipped, in the manifest and summary.
  skipped = {s["source"]: s["reason"] for s in manifest["skipped"]}
  assert set(skipped) == {CORRUPT, EMPTY}
  assert "cannot be decoded" in skipped[CORRUPT]
  assert "empty (0 bytes)" in skipped[EMPTY]
  assert "class  split  files  chunks   minutes" in printed
  assert "bells  train      3       9      0.07" in printed
  assert "skipped 2 file(s)" in printed
  assert "dropped 0 chunks quieter than -50 dBFS" in printed
  assert str(src / CORRUPT) in printed and str(src / EMPTY) in printed


def test_balance_gives_every_class_the_same_duration(folders, tmp_path):
  src, _ = folders
  plain = run_prepare(src, tmp_path / "plain")
  balanced = run_prepare(src, tmp_path / "balanced", balance=True)
  count = collections.Counter((c["split"], c["label"])
                              for c in balanced["chunks"])
  for split in dataset.SPLITS:
    # organ (1.1 s files) is the smallest class: 2 chunks per file.
    assert [count[(split, c)] for c in CLASSES] == [count[(split, "organ")]] * 3
  seconds = collections.Counter()
  for c in balanced["chunks"]:
    seconds[c["label"]] += c["duration_seconds"]
  assert len(set(seconds.values())) == 1 and seconds["organ"] == 5.0
  # Balancing keeps the split by file and keeps every file represented.
  assert sources_by_split(balanced) == sources_by_split(plain)
  assert balanced["balance_dropped_chunks"] == (
      len(plain["chunks"]) - len(balanced["chunks"])) == 15
  assert {p.relative_to(tmp_path / "balanced").as_posix()
          for p in (tmp_path / "balanced").rglob("*.wav")} == {
              c["path"] for c in balanced["chunks"]}


def test_split_is_seeded(folders, tmp_path):
  src, _ = folders
  def split_of(seed, name):
    manifest = run_prepare(src, tmp_path / name, seed=seed)
    return {c["source"]: c["split"] for c in manifest["chunks"]}
  assert split_of(0, "a") == split_of(0, "b")
  assert split_of(0, "a") != split_of(1, "c")


def test_few_files_fall_back_to_split_by_chunk(tmp_path, capsys):
  make_class_folders(tmp_path / "src", classes=("bells", "organ"),
                     files_per_class=2, bad_files=False)
  manifest = run_prepare(tmp_path / "src", tmp_path / "out", verbose=True)
  assert manifest["split_by"] == {"bells": "chunk", "organ": "chunk"}
  assert "'bells' has 2 usable file(s), fewer than the 3 splits" in (
      capsys.readouterr().out)
  count = collections.Counter((c["label"], c["split"])
                              for c in manifest["chunks"])
  assert [count[("bells", s)] for s in dataset.SPLITS] == [4, 1, 1]


def test_split_counts_keep_every_item_and_fill_every_split():
  split_counts = prepare._split_counts  # pylint: disable=protected-access
  for fractions in ((0.8, 0.1, 0.1), (0.1, 0.45, 0.45), (0.5, 0.5, 0.0)):
    wanted = [f > 0 for f in fractions]
    for n in range(12):
      counts = split_counts(n, fractions)
      assert sum(counts) == n and min(counts) >= 0
      if n >= sum(wanted):
        assert all(c >= 1 for c, w in zip(counts, wanted) if w)
  assert split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]


def test_silence_overlap_and_peak_normalize(tmp_path):
  t = np.arange(RATE) / RATE
  tone_T = 0.25 * np.sin(2 * np.pi * 330 * t)
  x_T = np.concatenate([tone_T, np.zeros(RATE), tone_T])
  write_audio(tmp_path / "src" / "a" / "gap.wav", x_T, RATE)
  manifest = run_prepare(tmp_path / "src", tmp_path / "out", overlap=0.5,
                         peak_normalize=True, split=(1.0, 0.0, 0.0))
  # Starts every 0.25 s; the three chunks inside the silent second go.
  assert [c["offset_seconds"] for c in manifest["chunks"]] == [
      0.0, 0.25, 0.5, 0.75, 1.75, 2.0, 2.25, 2.5]
  assert manifest["silent_chunks_dropped"] == 3
  assert {c["split"] for c in manifest["chunks"]} == {"train"}
  peaks = [np.abs(sf.read(tmp_path / "out" / c["path"])[0]).max()
           for c in manifest["chunks"]]
  np.testing.assert_allclose(max(peaks), prepare.PEAK, atol=1e-3)


def test_trim_db_cuts_the_quiet_ends_and_keeps_source_offsets(tmp_path,
                                                              capsys):
  rng = np.random.default_rng(0)
  quiet_T = 10 ** (-45 / 20) * rng.standard_normal(2 * RATE)  # -45 dBFS
  tone_T = 0.25 * np.sin(2 * np.pi * 330 * np.arange(2 * RATE) / RATE)
  x_T = np.concatenate([quiet_T[:RATE], tone_T, quiet_T])
  write_audio(tmp_path / "src" / "a" / "tail.wav", x_T, RATE)
  source_T = sf.read(tmp_path / "src" / "a" / "tail.wav")[0]
  whole = run_prepare(tmp_path / "src", tmp_path / "whole",
                      split=(1.0, 0.0, 0.0))
  # Without trimming the -45 dBFS ends stay: louder than silence_db (-50).
  assert len(whole["chunks"]) == 10
  assert whole["options"]["trim_db"] is None
  trimmed = run_prepare(tmp_path / "src", tmp_path / "trimmed",
                        split=(1.0, 0.0, 0.0), trim_db=-36, verbose=True)
  assert "trimmed 2.9 s of quiet ends (below -36 dBFS)" in (
      capsys.readouterr().out)
  # The kept span starts under one 64-ms frame before the tone: four chunks
  # of the tone, each the source's audio at its recorded offset.
  offsets = [c["offset_seconds"] for c in trimmed["chunks"]]
  assert len(offsets) == 4 and 1.0 - 0.064 < offsets[0] <= 1.0
  for c in trimmed["chunks"]:
    start = round(c["offset_seconds"] * RATE)
    np.testing.assert_array_equal(sf.read(tmp_path / "trimmed" / c["path"])[0],
                                  source_T[start:start + CHUNK])
  assert trimmed["options"]["trim_db"] == -36.0
  with pytest.raises(prepare.PrepareError, match="quieter than -10 dBFS "
                     r"throughout \(--trim-db\)"):
    run_prepare(tmp_path / "src", tmp_path / "loud", trim_db=-10)


def test_csv_vectors(tmp_path):
  vectors = [[0.0, 1.0], [0.5, 0.25], [1.0, 0.0], [0.75, 3.0]]
  csv_path = make_vector_csv(tmp_path / "emotify", vectors)
  manifest = run_prepare(tmp_path / "emotify", tmp_path / "out",
                         labels_csv=csv_path)
  assert manifest["class_names"] == []
  assert manifest["cond_names"] == ["valence", "arousal"]
  assert manifest["cond_dim"] == 2
  assert manifest["split_by"] == {"all": "file"}
  want = {f"audio/clip{i}.flac": v for i, v in enumerate(vectors)}
  assert len(manifest["chunks"]) == 8  # two 0.5 s chunks of each 1.1 s file
  for c in manifest["chunks"]:
    assert c["vector"] == want[c["source"]] and c["label"] is None
    assert c["path"].startswith(f"{c['split']}/all/")


def test_csv_class_labels(folders, tmp_path):
  src, files = folders
  label = {"bells": "tonal", "organ": "tonal", "wind": "noise"}
  rows = ["path,label"] + [
      f"{os.path.relpath(f.path, tmp_path)},{label[f.label]}" for f in files]
  (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
  manifest = run_prepare(src, tmp_path / "out",
                         labels_csv=tmp_path / "labels.csv")
  assert manifest["class_names"] == ["noise", "tonal"]
  for c in manifest["chunks"]:
    assert c["vector"] == ([1.0, 0.0] if c["label"] == "noise" else [0.0, 1.0])
    assert (c["label"] == "noise") == c["source"].startswith("wind/")


def test_error_empty_source_folder(tmp_path):
  (tmp_path / "src").mkdir()
  with pytest.raises(prepare.PrepareError,
                     match="no audio files .* put each class's files in a "
                           "sub-folder named for the class"):
    run_prepare(tmp_path / "src", tmp_path / "out")
  write_audio(tmp_path / "src" / "loose.wav", synth("organ", 1.0, RATE), RATE)
  with pytest.raises(prepare.PrepareError,
                     match="1 audio files lie directly in .*move them into "
                           "class sub-folders"):
    run_prepare(tmp_path / "src", tmp_path / "out")


def test_error_class_without_usable_chunk(tmp_path):
  src = tmp_path / "src"
  write_audio(src / "bells" / "a.wav", synth("bells", 1.0, RATE), RATE)
  write_audio(src / "quiet" / "hush.wav", np.zeros(RATE), RATE)
  write_audio(src / "quiet" / "blip.wav", synth("organ", 0.3, RATE), RATE)
  with pytest.raises(prepare.PrepareError) as error:
    run_prepare(src, tmp_path / "out")
  message = str(error.value)
  assert "class 'quiet' has no usable chunk" in message
  assert str(src / "quiet") in message
  assert "hush.wav: all 2 chunks are quieter than -50 dBFS" in message
  assert "blip.wav: shorter than one chunk (0.30 s < 0.5 s)" in message
  assert "or remove the class" in message
  assert not (tmp_path / "out" / prepare.STAGING).exists()


def test_error_csv_row_whose_file_does_not_exist(tmp_path):
  csv_path = make_vector_csv(tmp_path, [[0.0, 1.0]])
  with open(csv_path, "a") as f:
    f.write("audio/missing.wav,1,0\n")
  with pytest.raises(prepare.PrepareError,
                     match=r"labels.csv:3: .*audio/missing.wav does not exist; "
                           r"fix the path \(relative paths are read from the "
                           r"CSV's folder"):
    run_prepare(tmp_path, tmp_path / "out", labels_csv=csv_path)


def test_error_csv_vector_of_wrong_length(tmp_path):
  csv_path = make_vector_csv(tmp_path, [[0.0, 1.0], [1.0, 0.0]])
  csv_path.write_text(csv_path.read_text().replace("clip1.flac,1.0,0.0",
                                                   "clip1.flac,1.0"))
  with pytest.raises(prepare.PrepareError,
                     match=r"labels.csv:3: audio/clip1.flac has a vector of 1 "
                           r"values, but the header names 2 \(valence,arousal\)"
                           r"; give every row exactly 2 values"):
    run_prepare(tmp_path, tmp_path / "out", labels_csv=csv_path)


def test_error_out_holds_another_dataset(tmp_path):
  make_class_folders(tmp_path / "src", classes=("bells", "organ"),
                     files_per_class=3, bad_files=False)
  out = tmp_path / "out"
  first = run_prepare(tmp_path / "src", out)
  assert run_prepare(tmp_path / "src", out) == first  # same options: rebuilt
  with pytest.raises(prepare.PrepareError,
                     match=r"already holds a different dataset \(made with "
                           r"chunk_seconds: 0.5 -> 0.25\); pass --overwrite"):
    prepare.prepare_dataset(tmp_path / "src", out, chunk_seconds=0.25,
                            verbose=False)
  second = prepare.prepare_dataset(tmp_path / "src", out, chunk_seconds=0.25,
                                   overwrite=True, verbose=False)
  assert {p.relative_to(out).as_posix() for p in out.rglob("*.wav")} == {
      c["path"] for c in second["chunks"]}
  assert len(second["chunks"]) > len(first["chunks"])
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(prepare.PrepareError,
                     match="is not empty and holds no dataset .*notes.txt"):
    run_prepare(tmp_path / "src", tmp_path / "other")


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity"])
def test_error_csv_vector_with_a_non_finite_value_names_the_row(tmp_path,
                                                                 cell):
  csv_path = make_vector_csv(tmp_path, [[0.0, 1.0], [1.0, 0.0]])
  csv_path.write_text(csv_path.read_text().replace("clip1.flac,1.0,0.0",
                                                   f"clip1.flac,{cell},0.0"))
  with pytest.raises(prepare.PrepareError,
                     match=rf"labels.csv:3: audio/clip1.flac has a non-finite "
                           rf"value in its vector \({cell},0.0\); give finite "
                           rf"numbers"):
    run_prepare(tmp_path, tmp_path / "out", labels_csv=csv_path)
  assert not (tmp_path / "out").exists()


def test_warns_about_audio_beyond_full_scale_and_clipped_audio(tmp_path,
                                                              capsys):
  src = tmp_path / "src"
  tone_T = np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE).astype(np.float32)
  for folder in ("a", "b"):
    (src / folder).mkdir(parents=True)
  sf.write(src / "a" / "loud.wav", 50 * tone_T, RATE, subtype="FLOAT")
  sf.write(src / "b" / "clipped.wav", np.clip(3 * tone_T, -1, 1), RATE,
           subtype="PCM_16")
  sf.write(src / "b" / "clean.wav", 0.5 * tone_T, RATE, subtype="PCM_16")
  manifest = run_prepare(src, tmp_path / "out", split=(1.0, 0.0, 0.0))
  err = capsys.readouterr().err
  loud, clipped = manifest["warnings"]
  assert loud.startswith(f"{src / 'a' / 'loud.wav'}: peaks at 50, beyond full "
                         "scale") and "--peak-normalize" in loud
  assert clipped.startswith(f"{src / 'b' / 'clipped.wav'}: ") and (
      "neighbouring samples sit at full scale: the file was clipped" in clipped)
  assert "--peak-normalize" in clipped
  assert err.count("warning: ") == 2 and "clean.wav" not in err
  manifest = run_prepare(src, tmp_path / "normalized", peak_normalize=True,
                         split=(1.0, 0.0, 0.0))
  assert [w.split(":")[0] for w in manifest["warnings"]] == [
      str(src / "b" / "clipped.wav")]  # clipping stays clipping


def dataset_files(out: pathlib.Path) -> dict:
  return {p.relative_to(out).as_posix(): p.read_bytes()
          for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_rebuild_keeps_the_old_dataset_until_the_new_one_is_complete(
    tmp_path):
  make_class_folders(tmp_path / "src", classes=("bells", "organ"),
                     files_per_class=3, bad_files=False)
  out = tmp_path / "out"
  run_prepare(tmp_path / "src", out)
  before = dataset_files(out)
  # A rebuild that fails after staging (a class with no usable chunk) ...
  write_audio(tmp_path / "src" / "quiet" / "hush.wav", np.zeros(RATE), RATE)
  with pytest.raises(prepare.PrepareError, match="class 'quiet'"):
    run_prepare(tmp_path / "src", out, overwrite=True)
  assert dataset_files(out) == before  # ... leaves the old one as it was
  shutil.rmtree(tmp_path / "src" / "quiet")
  # A rebuild killed (SIGKILL) while it decodes leaves it too.
  for j in range(12):  # more files: the rebuild takes a few seconds
    write_audio(tmp_path / "src" / "organ" / f"more{j}.wav",
                synth("organ", 3.0, 44100, seed=j), 44100)
  proc = subprocess.Popen(
      [sys.executable, "-m", "csrnn_jax.cli.prepare", str(tmp_path / "src"),
       str(out), "--chunk-seconds", str(CHUNK_SECONDS), "--overwrite"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      cwd=pathlib.Path(prepare.__file__).parents[1])
  deadline = time.time() + 60
  while time.time() < deadline and proc.poll() is None and not any(
      (out / prepare.STAGING).glob("*.wav")):
    time.sleep(0.01)
  assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  left = dataset_files(out)
  assert {k: v for k, v in left.items() if not k.startswith(".")} == before
  # The next run clears what the killed one left and swaps its dataset in.
  manifest = run_prepare(tmp_path / "src", out, overwrite=True)
  assert sorted(p for p in dataset_files(out) if p != "manifest.json") == (
      sorted(c["path"] for c in manifest["chunks"]))


def test_error_out_holds_an_invalid_manifest(tmp_path):
  make_class_folders(tmp_path / "src", classes=("bells", "organ"),
                     files_per_class=3, bad_files=False)
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "manifest.json").write_text("{not json")
  with pytest.raises(prepare.PrepareError,
                     match=r"out/manifest.json is not a valid manifest \(.*\);"
                           r" pass --overwrite to prepare the dataset again"):
    run_prepare(tmp_path / "src", tmp_path / "out")
  assert run_prepare(tmp_path / "src", tmp_path / "out", overwrite=True)


@pytest.mark.slow
def test_cli(tmp_path, capsys):
  make_class_folders(tmp_path / "src", classes=("bells", "organ"),
                     files_per_class=3, bad_files=False)
  assert prepare_cli.main([str(tmp_path / "src"), str(tmp_path / "out"),
                       "--chunk-seconds", "0.5", "--split", "0.6,0.2,0.2",
                       "--balance", "--seed", "3", "--trim-db", "-60",
                       "--quiet"]) == 0
  options = json.loads((tmp_path / "out" / "manifest.json").read_text())[
      "options"]
  assert (options["split"], options["balance"], options["seed"],
          options["trim_db"]) == ([0.6, 0.2, 0.2], True, 3, -60.0)
  (tmp_path / "none").mkdir()
  assert prepare_cli.main([str(tmp_path / "none"), str(tmp_path / "o2")]) == 2
  assert capsys.readouterr().err.startswith("error: ")
  run = subprocess.run(
      [sys.executable, "-m", "csrnn_jax.cli.prepare", str(tmp_path / "none"),
       str(tmp_path / "o3")], capture_output=True, text=True, check=False,
      cwd=pathlib.Path(prepare.__file__).parents[1])
  assert run.returncode == 2 and "no audio files" in run.stderr
