"""Bad input, answered: every case a new user hits (two trainers on one
workdir, another dataset at the run's path, a moved dataset, a damaged or
unwritable run directory, broken JSON files, sample.py's arguments) ends in
a message that names the problem and the fix, and never in lost data. Each
test asserts the message and the state on disk, not only the exit status."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import evaluate
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import provenance
from csrnn_jax import rundir
from csrnn_jax.cli import evaluate as evaluate_cli
from csrnn_jax.cli import sample as sample_cli
import helpers
from helpers import HOLD_LOCK, REPO, WINDOWS_PER_BATCH, tiny_config

W = WINDOWS_PER_BATCH

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def train(dataset, workdir, steps, **train_keys):
  config = tiny_config(dataset, num_steps=steps, eval_every=0,
                       checkpoint_every=WINDOWS_PER_BATCH, **train_keys)
  return helpers.train_run(config, workdir)


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
  """A dataset of this module's own and two runs on it: one checkpoint
  (step W), and two (W and 2 W)."""
  root = tmp_path_factory.mktemp("reliability")
  dataset = root / "dataset"
  shutil.copytree(tiny_dataset, dataset)
  train(dataset, root / "run1", WINDOWS_PER_BATCH)
  shutil.copytree(root / "run1", root / "run2")
  train(dataset, root / "run2", 2 * WINDOWS_PER_BATCH)
  return dataset, root / "run1", root / "run2"


def copied(runs, tmp_path, which=1):
  """A copy of a run and of its dataset, the run's config pointing at the
  copy (the manifest, so its hash, unchanged): free to damage."""
  dataset, run = tmp_path / "dataset", tmp_path / "run"
  shutil.copytree(runs[0], dataset)
  shutil.copytree(runs[which], run)
  config = configlib.replace(rundir.read_config(str(run)),
                             **{"data.dataset_dir": str(dataset)})
  (run / "config.json").write_text(configlib.to_json(config))
  return dataset, run


def sessions(run) -> int:
  return len(json.loads((run / "provenance.json").read_text())["sessions"])


# BAD 3: two trainers on one workdir.

@pytest.mark.slow
def test_bad3_second_trainer_on_a_workdir_is_refused_until_kill_9(runs,
                                                                  tmp_path):
  dataset, run = copied(runs, tmp_path)
  before = (run / "metrics.jsonl").read_text(), sessions(run)
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)],
                            stdout=subprocess.PIPE, text=True, env=ENV)
  try:
    assert holder.stdout.readline().strip() == "locked"
    second = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config=tiny",
         f"--config.data.dataset_dir={dataset}", f"--workdir={run}",
         f"--config.train.num_steps={WINDOWS_PER_BATCH}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  finally:
    holder.kill()
    holder.wait()
  assert second.returncode == 2
  assert (f"error: {run} is in use by another trainer (pid {holder.pid} on "
          in second.stderr and "train in another --workdir" in second.stderr)
  assert ((run / "metrics.jsonl").read_text(), sessions(run)) == before
  # The kill released the lock: the run resumes (already finished).
  assert train(dataset, run, WINDOWS_PER_BATCH)["step"] == WINDOWS_PER_BATCH
  assert sessions(run) == before[1] + 1


# BAD 4 and the moved dataset: the manifest's hash decides.

def prepare_again_differently(dataset: pathlib.Path):
  """What re-running prepare with other options at the same path does to
  the manifest: training files end up in "test"."""
  manifest = json.loads((dataset / "manifest.json").read_text())
  for chunk in manifest["chunks"]:
    chunk["split"] = {"train": "test", "test": "train"}.get(chunk["split"],
                                                            chunk["split"])
  (dataset / "manifest.json").write_text(json.dumps(manifest))


def test_bad4_evaluate_refuses_another_dataset_at_the_runs_path(runs,
                                                                tmp_path,
                                                                capsys):
  dataset, run = copied(runs, tmp_path)
  prepare_again_differently(dataset)
  args = ["--workdir", str(run), "--split", "test"]
  assert evaluate_cli.main(args) == 2
  err = capsys.readouterr().err
  assert (f"{dataset / 'manifest.json'} is not the dataset {run} was trained "
          "on" in err and "Point --dataset-dir at the dataset the run was "
          "trained on, or pass --accept-dataset-change" in err)
  assert not list(run.glob("eval_*.json"))
  assert evaluate_cli.main(args + ["--accept-dataset-change"]) == 0
  assert "using it, as --accept-dataset-change asks" in capsys.readouterr().err


def test_bad4_resume_refuses_a_changed_dataset(runs, tmp_path):
  dataset, run = copied(runs, tmp_path)
  prepare_again_differently(dataset)
  before = sessions(run)
  with pytest.raises(provenance.DatasetChanged,
                     match=r"is not the dataset .* was trained on.*Point "
                           r"data.dataset_dir at .*--accept_dataset_change"):
    train(dataset, run, WINDOWS_PER_BATCH)
  assert sessions(run) == before
  config = tiny_config(dataset, num_steps=WINDOWS_PER_BATCH)
  helpers.train_run(config, run, accept_dataset_change=True)
  recorded = provenance.recorded_manifest_sha256(
      rundir.read_sessions(str(run))[0])
  assert recorded == provenance.sha256(str(dataset / "manifest.json"))
  train(dataset, run, WINDOWS_PER_BATCH)  # the new hash is the run's now


def test_moved_dataset_is_accepted_by_hash_for_evaluate_and_resume(runs,
                                                                   tmp_path,
                                                                   capsys):
  dataset, run = copied(runs, tmp_path)
  moved = tmp_path / "moved"
  dataset.rename(moved)
  assert evaluate_cli.main(["--workdir", str(run)]) == 2
  assert "no such dataset folder" in capsys.readouterr().err
  assert evaluate_cli.main(["--workdir", str(run), "--dataset-dir",
                        str(moved)]) == 0
  written = json.loads((run / f"eval_valid_step{W}.json").read_text())
  assert written["dataset_dir"] == str(moved)
  result = train(moved, run, 2 * WINDOWS_PER_BATCH)
  assert result["step"] == 2 * WINDOWS_PER_BATCH
  assert rundir.read_config(str(run)).data.dataset_dir == str(moved)
  # A moved dataset whose manifest differs is refused.
  prepare_again_differently(moved)
  with pytest.raises(provenance.DatasetChanged, match="is not the dataset"):
    evaluate.evaluate_run(str(run), "valid", dataset_dir=str(moved))


# Damaged, unreadable and unwritable run directories.

def test_damaged_latest_checkpoint_resumes_from_the_one_before(runs,
                                                               tmp_path,
                                                               capfd):
  dataset, run = copied(runs, tmp_path, which=2)
  latest = run / "checkpoints" / str(2 * WINDOWS_PER_BATCH)
  shutil.rmtree(latest / "params")
  result = train(dataset, run, 2 * WINDOWS_PER_BATCH)
  out, err = capfd.readouterr()
  assert (f"skipping the damaged checkpoint at step {2 * WINDOWS_PER_BATCH}"
          in err and f"is now {latest}.damaged" in err)
  assert f"Resuming {run} from step {WINDOWS_PER_BATCH}." in out
  assert result["step"] == 2 * WINDOWS_PER_BATCH
  assert (run / "checkpoints" / f"{latest.name}.damaged").is_dir()
  assert checkpoint_lib.Checkpointer(str(run)).steps() == [
      WINDOWS_PER_BATCH, 2 * WINDOWS_PER_BATCH]


def test_sample_names_a_damaged_step(runs, tmp_path, capsys):
  _, run = copied(runs, tmp_path, which=2)
  (run / "checkpoints" / str(2 * W) / "meta").rename(run / "meta.away")
  assert sample_cli.main([f"--workdir={run}", "--step", str(2 * W)]) == 2
  err = capsys.readouterr().err
  assert f"the checkpoint at step {2 * W}" in err and "is damaged" in err
  assert f"use another step (available: {W}, {2 * W})" in err


def test_broken_json_files_are_named_and_provenance_never_blocks(runs,
                                                                 tmp_path,
                                                                 capsys):
  dataset, run = copied(runs, tmp_path)
  (run / "provenance.json").write_text('{"sessions": [')
  train(dataset, run, WINDOWS_PER_BATCH)  # resumes
  assert "provenance.json cannot be read" in capsys.readouterr().err
  assert (run / "provenance.json.broken").read_text() == '{"sessions": ['
  assert sessions(run) == 1
  (run / "config.json").write_text('{"model": ')
  assert sample_cli.main([f"--workdir={run}"]) == 2
  err = capsys.readouterr().err
  assert f"{run / 'config.json'} is not valid JSON" in err and (
      "restore it" in err)
  assert "Traceback" not in err


# Runs a script (argv[2:]) with files limited to argv[1] bytes: the tiny
# model's checkpoint arrays are 470 KB and more, configs and logs a few KB.
LIMITED = """
import resource, runpy, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_unwritable_workdir_says_what_is_kept_and_resumes(runs, tmp_path):
  """A file size limit (RLIMIT_FSIZE, as a full disk) makes the next
  checkpoint's array files fail to write; config and logs (a few KB) fit."""
  dataset, run = copied(runs, tmp_path)
  cmd = [sys.executable, str(REPO / "train.py"), "--config=tiny",
         f"--config.data.dataset_dir={dataset}", f"--workdir={run}",
         "--config.train.seq_len=1024",  # tiny_config's
         f"--config.train.num_steps={2 * WINDOWS_PER_BATCH}",
         "--config.train.eval_every=0"]
  limited = [sys.executable, "-c", LIMITED, str(100_000)] + cmd[1:]
  full = subprocess.run(limited, cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=300)
  assert full.returncode == 2, full.stderr[-2000:]
  last = full.stderr.strip().splitlines()[-1]
  assert last == (
      f"error: cannot write to {run} (File too large); the run stopped and "
      f"its checkpoint at step {WINDOWS_PER_BATCH} is intact. Free some "
      "space or make the folder writable, then rerun the same command to "
      "resume")
  assert checkpoint_lib.Checkpointer(str(run)).steps() == [WINDOWS_PER_BATCH]
  done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"Resuming {run} from step {WINDOWS_PER_BATCH}" in done.stdout
  assert checkpoint_lib.Checkpointer(str(run)).latest_step() == (
      2 * WINDOWS_PER_BATCH)
  records = metrics_lib.read(str(run / "metrics.jsonl"))
  steps = [r["step"] for r in records if r["kind"] == "train"]
  assert steps == [WINDOWS_PER_BATCH, 2 * WINDOWS_PER_BATCH]


def test_storage_error_line_starts_its_own_line_after_a_partial_one():
  """A writer thread can be half-way through a traceback line (its indent
  written, the rest not) when the CLI silences stderr: the error line must
  still be a line of its own, the last one, and nothing written after the
  switch may follow it."""
  script = ("import sys; from csrnn_jax.cli import common, train\n"
            "sys.stderr.write('    ')\n"
            "real = train._silence_stderr()  # pylint: disable=protected-access\n"
            "common.fail(OSError('disk full'), real)\n"
            "sys.stderr.write('late traceback\\n')\n")
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stderr.splitlines() == ["    ", "error: disk full"]


# sample.py: every argument checked before anything is generated.

@pytest.mark.parametrize("args,message", [
    # BAD 5: a non-finite condition vector, with the range trained on.
    (["--cond-vector", "nan,1,0"],
     r"--cond-vector nan,1,0 has a non-finite value; give finite numbers "
     r"\(this run was trained on bells in \[0, 1\], organ in \[0, 1\], "
     r"wind in \[0, 1\]\)"),
    (["--temperature", "-1"], r"--temperature -1: give finite values > 0"),
    (["--temperature", "nan"], r"--temperature nan: give finite values > 0"),
    (["--temperature", "0"], r"--temperature 0: give finite values > 0 "
                             r"\(--top-k 1 samples greedily\)"),
    (["--guidance", "inf", "--cond", "bells"],
     r"--guidance inf: give finite values"),
    (["--seconds", "0"], r"--seconds 0: give a length > 0 in seconds"),
    (["--seconds", "-3"], r"--seconds -3: give a length > 0 in seconds"),
    (["--seconds", "1e9"], r"--seconds 1e\+09 is more than one generation "
                           r"makes \(18.6 h at 16000 Hz\)"),
    (["--num", "0"], r"--num 0: give at least 1 output per condition"),
    (["--denoise", "-1"], r"--denoise -1: give a strength >= 0 \(0 keeps "
                          r"the audio as drawn\)"),
    (["--denoise", "nan"], r"--denoise nan: give a strength >= 0"),
    (["--step", "foo"], r"--step 'foo': give N \(a step number\), 'latest' "
                        r"or 'best'"),
    (["--segment-seconds", "nan"], r"--segment-seconds nan: give a length"),
])
def test_sample_refuses_bad_arguments_before_generating(runs, tmp_path,
                                                        capsys, args,
                                                        message):
  out = tmp_path / "out"
  code = sample_cli.main([f"--workdir={runs[1]}", "--out", str(out)] + args)
  err = capsys.readouterr().err
  assert code == 2 and pytest.importorskip("re").search(message, err), err
  assert err.count("\n") == 1  # one line
  assert not out.exists()  # nothing written, no empty wavs


def test_sample_out_pointing_at_a_file(runs, tmp_path, capsys):
  (tmp_path / "taken.wav").write_bytes(b"mine")
  assert sample_cli.main([f"--workdir={runs[1]}", "--out",
                          str(tmp_path / "taken.wav")]) == 2
  assert (f"--out {tmp_path / 'taken.wav'} is a file; give a folder"
          in capsys.readouterr().err)
  assert (tmp_path / "taken.wav").read_bytes() == b"mine"


def test_sample_vector_outside_the_trained_range_warns(runs, tmp_path,
                                                       capsys):
  assert sample_cli.main([f"--workdir={runs[1]}", "--cond-vector", "2,0,0",
                          "--seconds", "0.04", "--out",
                          str(tmp_path)]) == 0
  assert ("warning: --cond-vector 2,0,0 lies outside what this run was "
          "trained on (bells in [0, 1]" in capsys.readouterr().err)


def test_outputs_of_another_step_in_the_same_out_are_not_overwritten(
    runs, tmp_path, capsys):
  out = tmp_path / "out"
  sample = lambda *extra: sample_cli.main(
      [f"--workdir={runs[2]}", "--cond", "bells", "--seconds", "0.04",
       "--out", str(out), *extra])
  assert sample("--step", str(W)) == 0
  wav = out / "bells_seed0_t1.wav"
  first = wav.read_bytes()
  assert sample("--step", str(W)) == 0  # the same settings: the same audio
  assert wav.read_bytes() == first
  capsys.readouterr()
  assert sample("--step", str(2 * W)) == 2
  err = capsys.readouterr().err
  assert (f"{wav} holds audio of other settings (checkpoint_step: {W} -> "
          f"{2 * W}" in err and "give another --out, or pass --overwrite"
          in err)
  assert wav.read_bytes() == first
  assert sample("--step", str(2 * W), "--overwrite") == 0
  assert json.loads(wav.with_suffix(".json").read_text())[
      "checkpoint_step"] == 2 * W
  (out / "bells_seed5_t1.wav").write_bytes(b"someone else's")
  assert sample("--seed", "5") == 2
  assert ("bells_seed5_t1.wav exists and has no readable sidecar"
          in capsys.readouterr().err)
  assert (out / "bells_seed5_t1.wav").read_bytes() == b"someone else's"


@pytest.mark.slow
def test_a_killed_generation_leaves_no_file_under_the_final_name(runs,
                                                                 tmp_path):
  out = tmp_path / "out"
  proc = subprocess.Popen(
      [sys.executable, str(REPO / "sample.py"), f"--workdir={runs[1]}",
       "--cond", "bells", "--seconds", "600", "--segment-seconds", "0.05",
       "--out", str(out)], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE)
  partial = out / "bells_seed0_t1.wav.partial"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None and not (
      partial.exists() and partial.stat().st_size > 10_000):
    time.sleep(0.05)
  assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not list(out.glob("*.wav")) and not list(out.glob("*.json"))
  assert partial.stat().st_size > 10_000  # what it wrote is kept


# Config errors on the command line: one line, the nearest key.

@pytest.mark.parametrize("flag,message", [
    ("--config.train.bach_size=3",
     "error: config key 'train.bach_size' does not exist; did you mean "
     "'train.batch_size'?"),
    ("--config.train.learning_rate=fast",
     "error: --config.train.learning_rate=fast: expected float (like the "
     "default 0.001)"),
])
@pytest.mark.slow
def test_train_cli_config_errors_are_one_line(tmp_path, flag, message):
  done = subprocess.run(
      [sys.executable, str(REPO / "train.py"), "--config=tiny", flag,
       f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip() == message
  assert not (tmp_path / "run").exists()
