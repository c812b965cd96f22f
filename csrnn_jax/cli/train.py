"""``python train.py --config configs/ambient.py`` (console script
``csrnn-train``): flags -> ``trainer.train_and_evaluate``.

``--config`` takes a config file, or a bare name (``ambient``, ``ambient.py``)
looked up in ./configs, in the configs shipped inside the package and in the
configs/ folder beside this package's checkout; ``--config.train.batch_size=16``
style flags override its values. ``--help`` lists the flags and every config
key with its value and meaning (``config_doc``); ``--print_config`` shows the
resolved config and exits.

Training is data parallel over every visible device. ``--multihost`` joins
several processes (one per host) first: ``jax.distributed.initialize`` with
``--coordinator_address``/``--num_processes``/``--process_id``, or where
those are not given, what JAX detects (JAX_COORDINATOR_ADDRESS, SLURM, Open
MPI, Cloud TPU, Kubernetes). See docs/scaling.md.

Exit status: 0 finished, 2 an error (one line on stderr), 75 (EX_TEMPFAIL)
interrupted by SIGINT/SIGTERM after saving a checkpoint: rerun to resume.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from csrnn_jax.cli import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "a config file (configs/*.py) or its bare name",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "run directory (default: the config's workdir, else "
    "runs/<name>); an existing run there is resumed")

_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "several processes: call jax.distributed.initialize() "
    "before anything touches the devices")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (with --multihost)")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "number of processes (with --multihost)")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "this process's index, 0 .. num_processes - 1 (with "
    "--multihost)")
_ACCEPT_DATASET_CHANGE = flags.DEFINE_bool(
    "accept_dataset_change", False, "resume even though the dataset's "
    "manifest differs from the one the run was trained on")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "print the config (after the --config.KEY=VALUE "
    "overrides) as JSON and exit without training")

EXIT_INTERRUPTED = os.EX_TEMPFAIL  # 75: stopped by a signal, resumable

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ./configs, the copy installed inside the package, the checkout's configs/.
CONFIG_DIRS = ("configs", os.path.join(_PACKAGE, "configs"),
               os.path.join(os.path.dirname(_PACKAGE), "configs"))
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort")


def known_configs() -> list[str]:
  """The bare config names that --config resolves."""
  return sorted({f[:-3] for d in CONFIG_DIRS if os.path.isdir(d)
                 for f in os.listdir(d)
                 if f.endswith(".py") and not f.startswith("_")})


def resolve_config_path(value: str) -> str:
  """A bare config name -> its file; a path is returned unchanged."""
  path, _, override = value.partition(":")
  if os.path.exists(path):
    return value
  name = path if path.endswith(".py") else path + ".py"
  for folder in CONFIG_DIRS:
    candidate = os.path.join(folder, os.path.basename(name))
    if os.path.exists(candidate):
      return candidate + (":" + override if override else "")
  common.usage_error(f"no config file {value!r}; known configs: "
                     f"{', '.join(known_configs())}")


def _config_value(argv: list[str]) -> str | None:
  """The --config flag's value in ``argv``, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config_file(path: str):
  spec = importlib.util.spec_from_file_location("config_file",
                                                path.partition(":")[0])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def help_text(config_path: str | None = None) -> str:
  """The flags and every config key, with ``config_path``'s values (default:
  ``configlib.base_config()``'s)."""
  from csrnn_jax import config_doc  # pylint: disable=import-outside-toplevel
  module_flags = flags.FLAGS.module_help(sys.modules[__name__])
  keys_of = (f"the values of {config_path}" if config_path
             else "the defaults of configlib.base_config()")
  config = _load_config_file(config_path) if config_path else None
  return "\n".join([
      "usage: python train.py --config CONFIG [--workdir DIR] "
      "[--config.KEY=VALUE ...]",
      "",
      "Trains a Conditional SampleRNN run, or resumes the one in --workdir.",
      f"CONFIG: a config file or one of {', '.join(known_configs())}.",
      "Exit status: 0 finished, 2 an error, 75 stopped by Ctrl-C or SIGTERM "
      "(rerun to resume).",
      "",
      "flags (absl's own: --helpfull):",
      module_flags.split("\n", 2)[2].rstrip(),
      "",
      f"config keys, set with --config.KEY=VALUE ({keys_of}):",
      config_doc.describe(config), ""])


def _rewrite_config_flag(argv: list[str]) -> list[str]:
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + resolve_config_path(arg.split("=", 1)[1])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = resolve_config_path(out[i + 1])
  return out


def _check_overrides(argv: list[str]) -> None:
  """Each ``--config.<key>=<value>`` names a key and a value of its type
  (``configlib.check_override``), before ml_collections parses them."""
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  if not overrides:
    return
  from csrnn_jax import configlib  # pylint: disable=import-outside-toplevel
  for override in overrides:
    key, eq, text = override.partition("=")
    try:
      configlib.check_override(key, text if eq else None)
    except configlib.ConfigError as e:
      common.usage_error(str(e))


def _silence_stderr():
  """Points fd 2 at /dev/null and returns a file on the real stderr, for the
  error line to be the last one: a failed checkpoint leaves tensorstore
  callbacks that print tracebacks from other threads until the process
  ends, so the line is written after they are silenced, not before. The
  file starts a new line, since a thread may have written part of one
  (a traceback's indent) when fd 2 was switched."""
  real = os.fdopen(os.dup(2), "w")
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  real.write("\n")
  return real


def _main(argv):
  del argv
  if _PRINT_CONFIG.value:
    from csrnn_jax import configlib  # pylint: disable=import-outside-toplevel
    print(f"config file: {flags.FLAGS['config'].config_filename}",
          file=sys.stderr)
    print(configlib.validate(_CONFIG.value).to_json(indent=2, sort_keys=True))
    return 0
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  import jax  # after flags: keeps --help fast
  if _MULTIHOST.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  from csrnn_jax import configlib
  from csrnn_jax import rundir
  from csrnn_jax import trainer
  try:
    result = trainer.train_and_evaluate(
        configlib.resolve(_CONFIG.value), _WORKDIR.value,
        accept_dataset_change=_ACCEPT_DATASET_CHANGE.value)
  except (ValueError, FileNotFoundError, FloatingPointError,
          rundir.WorkdirBusy, trainer.StorageError) as e:
    # Orbax's writer threads still report each failure after a StorageError.
    return common.fail(e, _silence_stderr()
                       if isinstance(e, trainer.StorageError) else None)
  if result["interrupted"]:
    return EXIT_INTERRUPTED
  print(f"Finished at step {result['step']}: "
        + ", ".join(f"{k}={v:.4g}" for k, v in result.items()
                    if k != "step" and isinstance(v, float)))
  return 0


def main(argv: list[str] | None = None):
  """The command line (``argv``: its arguments, default sys.argv[1:]); exits
  with its status. Each call parses its flags afresh, so that it can run
  more than once in a process."""
  if argv is None:
    _run(sys.argv)
    return
  saved, sys.argv = sys.argv, ["train.py", *argv]  # config_flags reads it
  try:
    _run(sys.argv)
  finally:
    sys.argv = saved


def _run(argv: list[str]):
  flags.FLAGS.unparse_flags()
  argv = _rewrite_config_flag(argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_text(_config_value(argv)))
    sys.exit(0)
  if _config_value(argv) is None:
    common.usage_error(
        "give --config CONFIG: a config file or one of "
        f"{', '.join(known_configs())} (python train.py --help lists the "
        "flags and every config key)")
  _check_overrides(argv)
  app.run(_main, argv=argv)
