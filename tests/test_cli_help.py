"""What the command lines tell a user: train.py --help lists the flags and
every config key with its value and comment, a missing --config is one line
naming the fix, sample.py --help gives the condition vector's order."""
import pathlib
import subprocess
import sys

from csrnn_jax import config_doc
from csrnn_jax import configlib

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


def test_train_help_with_a_config_shows_its_values():
  done = run(REPO / "train.py", "--config", "tiny", "--help")
  assert done.returncode == 0, done.stderr
  assert "configs/tiny.py" in done.stdout
  lines = [l.split()[:3] for l in done.stdout.splitlines()]
  assert ["model.dim", "=", "32"] in lines
  assert ["train.batch_size", "=", "4"] in lines


def test_train_without_config_names_the_fix(tmp_path):
  done = run(REPO / "train.py", "--workdir", tmp_path / "run", cwd=tmp_path)
  assert done.returncode == 2
  assert "Traceback" not in done.stderr
  assert done.stderr.startswith("error: give --config CONFIG")
  assert "ambient" in done.stderr and "--help" in done.stderr
  assert not (tmp_path / "run").exists()


def test_print_config_applies_overrides_and_trains_nothing(tmp_path):
  done = run(REPO / "train.py", "--config", "ambient",
             "--config.train.batch_size=16", "--print_config",
             "--workdir", tmp_path / "run", cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  config = configlib.from_json(done.stdout)
  assert config.name == "ambient" and config.train.batch_size == 16
  assert config.model.dim == 1024
  assert "configs/ambient.py" in done.stderr
  assert not (tmp_path / "run").exists()


def test_sample_help_gives_the_condition_vector_order(tmp_path):
  general = run(REPO / "sample.py", "--help")
  assert general.returncode == 0, general.stderr
  assert "data.class_names in RUN/config.json" in " ".join(
      general.stdout.split())
  assert "sample.py --workdir RUN --help prints RUN's condition vector order" \
      in general.stdout
  config = configlib.base_config()  # a run directory's config.json is enough
  config.data.class_names = ("creepy", "happy", "sad", "space")
  (tmp_path / "config.json").write_text(configlib.to_json(config))
  of_run = run(REPO / "sample.py", "--workdir", tmp_path, "--help")
  assert of_run.returncode == 0, of_run.stderr
  assert ("This run's condition vector order: creepy, happy, sad, space."
          in of_run.stdout)
