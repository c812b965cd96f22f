"""What the command lines tell a user: train.py --help lists the flags and
every config key with its value and comment, a missing --config is one line
naming the fix, sample.py --help gives the condition vector's order; every
command is a csrnn_jax.cli main with one error format."""
import importlib
import json
import pathlib
import subprocess
import sys
import tomllib

import pytest

from csrnn_jax import config_doc
from csrnn_jax import configlib
from csrnn_jax.cli import common

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd=REPO):
  return subprocess.run([sys.executable, *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, timeout=120)


def leaves(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from leaves(value, prefix + key + ".")
    else:
      yield prefix + key, value


@pytest.mark.slow
def test_train_help_lists_flags_and_every_config_key():
  done = run(REPO / "train.py", "--help")
  assert done.returncode == 0, done.stderr
  for flag in ("config", "workdir", "coordinator_address", "num_processes",
               "process_id"):
    assert f"  --{flag}: " in done.stdout
  for flag in ("multihost", "accept_dataset_change", "print_config"):
    assert f"  --[no]{flag}: " in done.stdout
  docs, _ = config_doc.key_docs()
  undocumented = [key for key, doc in docs.items() if not doc]
  assert not undocumented, ("give these keys a one-line comment in "
                            f"configlib.base_config(): {undocumented}")
  lines = done.stdout.splitlines()
  for key, value in leaves(configlib.base_config()):
    line = [l for l in lines if l.strip().startswith(f"{key} = ")]
    assert line, f"{key} is not in train.py --help"
    assert line[0].split(" = ", 1)[1].startswith(repr(value))
    assert line[0].rstrip().endswith(docs[key])
  # Comments do reach the listing (continued lines joined into one).
  assert "TBPTT window (samples); one Adam step per window" in done.stdout
  assert ("Adam steps; training stops at the first chunk-batch boundary at "
          "or after this") in done.stdout


@pytest.mark.slow
def test_train_help_with_a_config_shows_its_values():
  done = run(REPO / "train.py", "--config", "tiny", "--help")
  assert done.returncode == 0, done.stderr
  assert "configs/tiny.py" in done.stdout
  lines = [l.split()[:3] for l in done.stdout.splitlines()]
  assert ["model.dim", "=", "32"] in lines
  assert ["train.batch_size", "=", "4"] in lines


@pytest.mark.slow
def test_train_without_config_names_the_fix(tmp_path):
  done = run(REPO / "train.py", "--workdir", tmp_path / "run", cwd=tmp_path)
  assert done.returncode == 2
  assert "Traceback" not in done.stderr
  assert done.stderr.startswith("error: give --config CONFIG")
  assert "ambient" in done.stderr and "--help" in done.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_print_config_applies_overrides_and_trains_nothing(tmp_path):
  done = run(REPO / "train.py", "--config", "ambient",
             "--config.train.batch_size=16", "--print_config",
             "--workdir", tmp_path / "run", cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  config = json.loads(done.stdout)  # the config file's, before the dataset
  assert config["name"] == "ambient" and config["train"]["batch_size"] == 16
  assert config["model"]["dim"] == 1024
  assert "configs/ambient.py" in done.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sample_help_gives_the_condition_vector_order(tmp_path):
  general = run(REPO / "sample.py", "--help")
  assert general.returncode == 0, general.stderr
  assert "data.class_names in RUN/config.json" in " ".join(
      general.stdout.split())
  assert "sample.py --workdir RUN --help prints RUN's condition vector order" \
      in general.stdout
  config = configlib.RunConfig(  # a run directory's config.json is enough
      data=configlib.DataConfig(class_names=("creepy", "happy", "sad",
                                             "space")))
  (tmp_path / "config.json").write_text(configlib.to_json(config))
  of_run = run(REPO / "sample.py", "--workdir", tmp_path, "--help")
  assert of_run.returncode == 0, of_run.stderr
  assert ("This run's condition vector order: creepy, happy, sad, space."
          in of_run.stdout)


def test_every_console_script_is_a_cli_main_and_only_there():
  scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
      "scripts"]
  assert sorted(scripts) == [
      "csrnn-evaluate", "csrnn-export-torch", "csrnn-import-torch",
      "csrnn-prepare", "csrnn-report", "csrnn-sample", "csrnn-train"]
  for target in scripts.values():
    module, _, function = target.partition(":")
    assert module.startswith("csrnn_jax.cli.") and function == "main"
    assert callable(importlib.import_module(module).main)
  for path in (REPO / "csrnn_jax").rglob("*.py"):
    if "cli" not in path.relative_to(REPO / "csrnn_jax").parts:
      text = path.read_text()
      assert "def main(" not in text and "csrnn_jax.cli" not in text, path


def test_one_error_format_and_one_step_syntax(tmp_path, capsys):
  from csrnn_jax.cli import report  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as usage:
    report.main([])
  assert usage.value.code == common.EXIT_ERROR
  err = capsys.readouterr().err
  assert err.startswith("error: the following arguments are required: "
                        "--workdir") and err.count("\n") == 1
  assert report.main(["--workdir", str(tmp_path / "none")]) == 2
  assert capsys.readouterr().err.startswith(
      f"error: {tmp_path / 'none'}: no such folder, so not a run directory")
  assert [common.parse_step(t) for t in (" 12 ", "latest", "best")] == [
      12, "latest", "best"]
  with pytest.raises(ValueError, match=r"--step '-1': give N \(a step "
                                       r"number\), 'latest' or 'best'"):
    common.parse_step("-1")
