"""The run directory: which files a run holds, where, and what is in them
(docs/design.md §4). Every other module reaches a run's files through here.

    <workdir>/
      config.json              the resolved config (``configlib.to_json``)
      provenance.json          {"sessions": [one record per session]}
      metrics.jsonl            one record a line (``metrics``)
      loss_curve.png           the trainer's plot of metrics.jsonl
      tensorboard/             the same metrics for TensorBoard (optional)
      checkpoints/<step>/      Orbax checkpoints (``checkpoint``)
      eval_<split>_step<N>.json  ``evaluate``'s result for checkpoint N
      samples/step<N>/         sample.py's default output for checkpoint N
      train_samples/step<N>/   the trainer's periodic samples at step N
      train.lock               held by the one trainer of the run

JSON files are written atomically (a temporary file, then ``os.replace``):
a kill never leaves half a file, and a reader on another host sees the old
file or the new one. ``load`` reads what a run records, for ``report``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import socket
import sys

from csrnn_jax import configlib

CONFIG = "config.json"
PROVENANCE = "provenance.json"
METRICS = "metrics.jsonl"
LOSS_CURVE = "loss_curve.png"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
TRAIN_SAMPLES = "train_samples"
LOCK = "train.lock"
BROKEN = ".broken"  # suffix of a provenance.json that could not be read
_EVAL = re.compile(r"eval_(?P<split>\w+?)_step(?P<step>\d+)\.json")


class RunDirError(FileNotFoundError):
  """A folder that is not a run directory; says which folder to pass."""


class WorkdirBusy(RuntimeError):
  """Another trainer holds the run directory's lock."""


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG)


def provenance_path(workdir: str) -> str:
  return os.path.join(workdir, PROVENANCE)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS)


def loss_curve_path(workdir: str) -> str:
  return os.path.join(workdir, LOSS_CURVE)


def tensorboard_dir(workdir: str) -> str:
  return os.path.join(workdir, TENSORBOARD)


def checkpoints_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, CHECKPOINTS))


def eval_path(workdir: str, split: str, step: int) -> str:
  return os.path.join(workdir, f"eval_{split}_step{int(step)}.json")


def samples_dir(workdir: str, step: int) -> str:
  return os.path.join(workdir, SAMPLES, f"step{int(step)}")


def train_samples_dir(workdir: str, step: int) -> str:
  return os.path.join(workdir, TRAIN_SAMPLES, f"step{int(step)}")


def write_text(path: str, text: str) -> None:
  """Writes a file atomically (see the module docstring)."""
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def write_json(path: str, obj) -> None:
  """Writes JSON atomically; values JSON lacks (numpy scalars) as text."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def check(workdir: str) -> None:
  """Raises RunDirError unless ``workdir`` is a run directory (a folder with
  a config.json), naming what is missing and what to pass instead."""
  if not os.path.isdir(workdir):
    raise RunDirError(
        f"{workdir}: no such folder, so not a run directory; pass the "
        "--workdir of a training run (train.py --workdir) or of "
        "csrnn-import-torch")
  if not os.path.isfile(config_path(workdir)):
    raise RunDirError(
        f"{workdir} is not a run directory (no {CONFIG}); pass the --workdir "
        "of a training run (train.py --workdir) or of csrnn-import-torch")


def read_config(workdir: str):
  """The run's resolved config; RunDirError if ``workdir`` is no run,
  ConfigError if its config.json is not valid JSON."""
  check(workdir)
  path = config_path(workdir)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return configlib.from_json(text)
  except json.JSONDecodeError as e:
    raise configlib.ConfigError(
        f"{path} is not valid JSON ({e}); restore it from a copy, or "
        "write it again from the run's config file") from None


def write_config(workdir: str, config) -> None:
  """config.json, atomically (other hosts or a sample.py may be reading
  it)."""
  write_text(config_path(workdir), configlib.to_json(config))


def read_sessions(workdir: str) -> tuple[list[dict], str | None]:
  """(the session records provenance.json holds, oldest first; why it could
  not be read, or None). A missing file is no sessions and no problem."""
  path = provenance_path(workdir)
  if not os.path.exists(path):
    return [], None
  try:
    with open(path, encoding="utf-8") as f:
      sessions = json.load(f).get("sessions", [])
    if not isinstance(sessions, list):
      raise ValueError("'sessions' is not a list")
    return sessions, None
  except (OSError, ValueError, AttributeError) as e:
    return [], f"{path} cannot be read ({type(e).__name__}: {e})"


def append_session(workdir: str, record: dict) -> None:
  """Appends one session's record (``provenance.collect``) to the log. The
  log never stops a run: one that cannot be read is kept as
  provenance.json.broken, with a warning, and a new log begins."""
  path = provenance_path(workdir)
  sessions, problem = read_sessions(workdir)
  if problem:
    os.replace(path, path + BROKEN)
    print(f"warning: {problem}; kept as {path}{BROKEN}, starting a new log",
          file=sys.stderr)
  write_json(path, {"sessions": sessions + [record]})


def write_eval(workdir: str, split: str, step: int, result: dict) -> str:
  """Writes ``evaluate``'s result for a split at a checkpoint; its path."""
  path = eval_path(workdir, split, step)
  write_json(path, result)
  return path


def read_evals(workdir: str) -> dict[str, dict[int, dict]]:
  """{split: {step: result}} of every eval_<split>_step<N>.json."""
  evals = {}
  for name in sorted(os.listdir(workdir)):
    match = _EVAL.fullmatch(name)
    if match:
      with open(os.path.join(workdir, name), encoding="utf-8") as f:
        evals.setdefault(match["split"], {})[int(match["step"])] = json.load(f)
  return evals


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run directory records (``load``); checkpoints and metrics are
  read by their own modules."""
  workdir: str
  config: configlib.RunConfig  # the resolved config (``read_config``)
  sessions: list[dict]  # provenance.json's records, oldest first
  evals: dict[str, dict[int, dict]]  # {split: {step: evaluate's result}}

  def newest_eval(self, split: str) -> dict | None:
    """The result for ``split`` at the largest step, or None."""
    by_step = self.evals.get(split)
    return by_step[max(by_step)] if by_step else None


def load(workdir: str) -> Run:
  """A run's config, provenance sessions and evaluation results. RunDirError
  if ``workdir`` is no run; a provenance.json that cannot be read counts as
  no sessions (it is a log)."""
  config = read_config(workdir)
  sessions, _ = read_sessions(workdir)
  return Run(workdir, config, sessions, read_evals(workdir))


@contextlib.contextmanager
def lock(workdir: str):
  """Holds an exclusive lock (flock) on <workdir>/train.lock while the block
  runs. The OS releases it when the process ends, even by kill -9. Raises
  WorkdirBusy naming the holder (its pid and host, as it wrote them)."""
  path = os.path.join(workdir, LOCK)
  f = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "a process that did not say which"
    f.close()
    raise WorkdirBusy(
        f"{os.path.abspath(workdir)} is in use by another trainer ({holder});"
        " wait for it to finish or stop it, or train in another --workdir"
    ) from None
  try:
    f.truncate(0)
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    yield
  finally:
    f.close()  # releases the lock
