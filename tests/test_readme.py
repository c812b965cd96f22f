"""Every command block of the README runs and leaves the files it names.

The commands run as written in a tiny copy of the world the README
describes: a temporary folder that is the current folder and $HOME, with
~/audio/ambient/{happy,sad,space,creepy}/ and ~/audio/emotify/ratings.csv
(synthesized audio: three 8.5 s files per class, one chunk each for train,
valid and test), intro.wav, links to the checkout's train.py and sample.py,
and configs/ambient.py: configs/tiny.py's model under the ambient config's
name and classes, one chunk batch long (the paper's model would take hours
on 2 cores). ``--config ambient`` and ``configs/ambient.py`` both find it, as
./configs comes first. Two things change in the commands: sample.py's
lengths are cut to SECONDS, and the import's sizes become the tiny model's
(SIZES). ``python train.py``, ``python sample.py``, ``python -m
csrnn_jax.*`` and the console scripts run in this process through the
main(argv) their entry points call (one interpreter and JAX import for
all), the rest (``tail``) as a process. NOT_RUN lists what is not run, and
why.
"""
import glob
import importlib
import importlib.util
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

from audio_fixtures import synth, write_audio

pytestmark = pytest.mark.slow  # subprocesses end to end

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SECONDS = "0.1"  # per generated clip
SIZES = {"--frame-sizes 16 4 --dim 1024": "--frame-sizes 4 4 --dim 32"}
NOT_RUN = {
    "make demo": "tests/test_demo.py runs it with a tiny model",
    "make test": "it runs this test suite",
    'pip install -e . "jax[cuda12]"': "needs the network and a GPU",
    "tensorboard --logdir runs/ambient/tensorboard": "a server that runs "
                                                     "until stopped",
}
CLASSES = {"happy": "bells", "sad": "organ", "space": "wind",
           "creepy": "organ"}
TINY_AMBIENT = '''
from csrnn_jax import configlib

def get_config():
  config = configlib.base_config()
  config.name = "ambient"
  config.model.frame_sizes = (4, 4, 16)
  config.model.dim = 32
  config.data.dataset_dir = "data/ambient"
  config.data.class_names = ("happy", "sad", "space", "creepy")
  config.train.batch_size = 4
  config.train.seq_len = 256
  config.train.num_steps = 1  # one chunk batch: 500 windows of 8 s chunks
  config.train.eval_every = 1
  config.train.checkpoint_every = 1
  config.train.sample_every = 1
  config.train.sample_seconds = 0.05
  return config
'''


def command_blocks(text: str) -> list[list[str]]:
  """The commands of each ```sh block, continuation lines joined and
  comments dropped."""
  blocks = []
  for body in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
    lines = re.sub(r"\\\n\s*", " ", body).splitlines()
    blocks.append([shlex.join(shlex.split(line, comments=True))
                   for line in lines if shlex.split(line, comments=True)])
  return blocks


def named_outputs(text: str) -> list[str]:
  """The files the README names under the folders its commands write."""
  paths = re.findall(r"`((?:runs/(?:ambient|imported)|data/(?:ambient|"
                     r"emotify)|study|out)/[^`\s]*)`", text)
  return sorted(set(paths))


def entry_points() -> dict:
  """Console script name -> its "module:function", from pyproject.toml."""
  return tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
      "scripts"]


def in_process(argv: list[str]):
  """The main(argv) that runs ``argv`` and its arguments, or None when it
  runs in a shell."""
  if argv[:2] == ["python", "sample.py"]:
    return "csrnn_jax.cli.sample:main", argv[2:]
  if argv[:2] == ["python", "train.py"]:
    return "csrnn_jax.cli.train:main", argv[2:]
  if argv[:2] == ["python", "-m"] and argv[2].startswith("csrnn_jax."):
    return argv[2] + ":main", argv[3:]
  if argv[0] in entry_points():
    return entry_points()[argv[0]], argv[1:]
  return None


def shorter(argv: list[str]) -> list[str]:
  """sample.py's --seconds set to SECONDS."""
  if argv[:2] != ["python", "sample.py"] or "--help" in argv:
    return argv
  if "--seconds" in argv:
    argv = list(argv)
    argv[argv.index("--seconds") + 1] = SECONDS
    return argv
  return argv + ["--seconds", SECONDS]


def run_in_process(target: str, args: list[str]) -> int:
  module, _, function = target.partition(":")
  main = getattr(importlib.import_module(module), function)
  args = [os.path.expanduser(a) for a in args]  # what the shell does to ~
  try:
    return main(args)
  except SystemExit as e:  # argparse's --help, a usage error
    return 0 if e.code is None else e.code


@pytest.fixture
def world(tmp_path, monkeypatch):
  home = tmp_path
  for c, (name, kind) in enumerate(CLASSES.items()):
    for j in range(3):
      write_audio(home / "audio" / "ambient" / name / f"{name}{j}.wav",
                  synth(kind, 8.5, 16000, seed=10 * c + j), 16000)
  rows = ["path,valence,arousal"]
  for j, vector in enumerate(((0.1, 0.9), (0.5, 0.5), (0.9, 0.2))):
    write_audio(home / "audio" / "emotify" / f"clip{j}.wav",
                synth("wind", 8.5, 16000, seed=j), 16000)
    rows.append(f"clip{j}.wav,{vector[0]},{vector[1]}")
  (home / "audio" / "emotify" / "ratings.csv").write_text(
      "\n".join(rows) + "\n")
  write_audio(home / "intro.wav", synth("organ", 1.0, 16000, seed=7), 16000)
  (home / "configs").mkdir()
  (home / "configs" / "ambient.py").write_text(TINY_AMBIENT)
  for script in ("train.py", "sample.py"):
    (home / script).symlink_to(REPO / script)
  monkeypatch.chdir(home)
  monkeypatch.setenv("HOME", str(home))
  return home


def test_the_readme_holds_what_this_test_leaves_out_or_changes():
  commands = [c for block in command_blocks(README) for c in block]
  for command in NOT_RUN:
    assert shlex.join(shlex.split(command)) in commands, command
  for sizes in SIZES:
    assert sum(sizes in c for c in commands) == 1, sizes


def test_every_readme_command_runs_and_leaves_what_it_names(world):
  path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
  torch = importlib.util.find_spec("torch") is not None
  skipped = {shlex.join(shlex.split(c)) for c in NOT_RUN}
  for block in command_blocks(README):
    for command in block:
      if command in skipped:
        continue
      for big, tiny in SIZES.items():
        command = command.replace(big, tiny)
      words = shlex.split(command)
      assigned = {}  # VAR=value words before the command, as in a shell
      while "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        assigned[name] = value
      argv = shorter(words)
      if not torch and ("torch" in argv[0] or "runs/imported" in argv):
        continue  # the torch extra is not installed
      where = in_process(argv)
      if where:
        with pytest.MonkeyPatch.context() as patch:
          for name, value in assigned.items():  # GPU allocator settings:
            patch.setenv(name, value)  # the CPU backend ignores them
          code = run_in_process(*where)
        assert code == 0, command
      else:
        program = (sys.executable if argv[0] == "python"
                   else shutil.which(argv[0], path=path))
        done = subprocess.run(
            [program] + [os.path.expanduser(a) for a in argv[1:]], cwd=world,
            env={**os.environ, "PATH": path, **assigned},
            capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 0, (
            f"{command}\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
  for named in named_outputs(README):
    if not torch and named.startswith("runs/imported"):
      continue
    pattern = re.sub(r"<[^>]*>", "*", named)
    assert glob.glob(pattern), f"the README names {named}; nothing is there"
