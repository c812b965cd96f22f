"""The run directory's files: atomic writes, config.json and its errors,
the provenance log (a broken one set aside), evaluation files named and
parsed in one place, ``load``, and the workdir lock. Real files, no
training."""
import json
import os
import subprocess
import sys

import pytest

from csrnn_jax import configlib
from csrnn_jax import rundir
from helpers import HOLD_LOCK


def test_write_json_is_atomic_and_leaves_no_temporary_file(tmp_path):
  path = str(tmp_path / "x.json")
  rundir.write_json(path, {"b": 1, "a": [1.5]})
  rundir.write_json(path, {"b": 2})
  assert json.loads((tmp_path / "x.json").read_text()) == {"b": 2}
  assert os.listdir(tmp_path) == ["x.json"]


def test_config_round_trip_and_what_is_not_a_run(tmp_path):
  with pytest.raises(rundir.RunDirError, match="no such folder, so not a run "
                                               "directory; pass the --workdir"):
    rundir.read_config(str(tmp_path / "missing"))
  with pytest.raises(rundir.RunDirError,
                     match=r"is not a run directory \(no config.json\); pass "
                           r"the --workdir of a training run"):
    rundir.read_config(str(tmp_path))
  config = configlib.RunConfig(name="mine", seed=7)
  rundir.write_config(str(tmp_path), config)
  rundir.check(str(tmp_path))
  assert rundir.read_config(str(tmp_path)) == config
  (tmp_path / "config.json").write_text('{"model": ')
  with pytest.raises(configlib.ConfigError,
                     match=r"config.json is not valid JSON .*restore it"):
    rundir.read_config(str(tmp_path))


def test_sessions_append_and_a_broken_log_is_set_aside(tmp_path, capsys):
  workdir = str(tmp_path)
  assert rundir.read_sessions(workdir) == ([], None)
  rundir.append_session(workdir, {"seed": 0})
  rundir.append_session(workdir, {"seed": 1})
  assert rundir.read_sessions(workdir) == ([{"seed": 0}, {"seed": 1}], None)
  (tmp_path / "provenance.json").write_text('{"sessions": {}}')
  sessions, problem = rundir.read_sessions(workdir)
  assert sessions == [] and "'sessions' is not a list" in problem
  (tmp_path / "provenance.json").write_text('{"sessions": [')
  rundir.append_session(workdir, {"seed": 2})
  assert "provenance.json cannot be read" in capsys.readouterr().err
  assert (tmp_path / "provenance.json.broken").read_text() == '{"sessions": ['
  assert json.loads((tmp_path / "provenance.json").read_text()) == {
      "sessions": [{"seed": 2}]}


def test_eval_files_are_named_and_parsed_here_and_load_reads_a_run(tmp_path):
  workdir = str(tmp_path)
  rundir.write_config(workdir, configlib.RunConfig())
  assert rundir.write_eval(workdir, "test", 31, {"bits": 5.0}) == (
      rundir.eval_path(workdir, "test", 31))
  rundir.write_eval(workdir, "test", 62, {"bits": 4.0})
  rundir.write_eval(workdir, "valid", 7, {"bits": 6.0})
  (tmp_path / "eval_test_stepx.json").write_text("not one of ours")
  assert sorted(os.listdir(tmp_path)) == [
      "config.json", "eval_test_step31.json", "eval_test_step62.json",
      "eval_test_stepx.json", "eval_valid_step7.json"]
  rundir.append_session(workdir, {"code_revision": "abc"})
  run = rundir.load(workdir)
  assert run.evals == {"test": {31: {"bits": 5.0}, 62: {"bits": 4.0}},
                       "valid": {7: {"bits": 6.0}}}
  assert run.newest_eval("test") == {"bits": 4.0}
  assert run.newest_eval("train") is None
  assert run.sessions == [{"code_revision": "abc"}]
  assert run.config.name == configlib.RunConfig().name


def test_paths_of_samples_metrics_and_checkpoints(tmp_path):
  w = str(tmp_path)
  assert rundir.samples_dir(w, 3) == os.path.join(w, "samples", "step3")
  assert rundir.train_samples_dir(w, 3) == os.path.join(w, "train_samples",
                                                        "step3")
  assert rundir.metrics_path(w) == os.path.join(w, "metrics.jsonl")
  assert rundir.checkpoints_dir(w) == os.path.join(os.path.abspath(w),
                                                   "checkpoints")


@pytest.mark.slow
def test_workdir_lock_is_exclusive_and_released_by_kill_9(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(rundir.WorkdirBusy,
                       match=rf"{tmp_path} is in use by another trainer \(pid "
                             rf"{holder.pid} on .*\); wait for it"):
      with rundir.lock(str(tmp_path)):
        pass
  finally:
    holder.kill()  # SIGKILL: no cleanup runs in the holder
    holder.wait()
  with rundir.lock(str(tmp_path)):  # free again
    contents = (tmp_path / rundir.LOCK).read_text()
    assert contents.startswith(f"pid {os.getpid()} ")
