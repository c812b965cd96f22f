"""Orbax checkpoints of a run directory (docs/design.md §4).

``<workdir>/checkpoints/<step>/`` (``rundir``) holds three items: ``params``
and ``opt_state`` (array trees) and ``meta`` (JSON: step, data-stream
position, early-stopping state, validation NLL, whether sampled). Saves
happen at chunk-batch boundaries; Orbax writes to a temporary folder and
renames it when complete, so a run killed mid-save leaves the previous
checkpoint intact. Kept: the last ``keep``, the best by the validation NLL
and every step the trainer wrote samples at, as each checkpoint's ``meta``
records them (``KeepLatestBestAndSampled``), so the best survives any number
of restarts and the checkpoint behind a sample one liked is there to use.
A checkpoint that cannot be read is named; "latest" then falls back to the
newest intact one. ``load_run`` restores from the workdir alone: its
config.json gives the shapes.

With several processes (``sharding``) every process calls ``save`` and
``restore`` on a shared workdir; Orbax writes each replicated array once.
Arrays restore into the shardings of the targets given, so a checkpoint moves
between device counts and hosts.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from csrnn_jax import model as model_lib
from csrnn_jax import rundir

BEST_METRIC = "valid_bits"
SAMPLED = "sampled"  # meta: the trainer wrote samples from this checkpoint
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(FileNotFoundError):
  pass


def _to_orbax(tree):
  """Orbax wants string keys; our params use ints for lists of layers."""
  if isinstance(tree, dict):
    return {str(k): _to_orbax(v) for k, v in tree.items()}
  return tree


def _from_orbax(tree, like):
  if isinstance(like, dict):
    return {k: _from_orbax(tree[str(k)], v) for k, v in like.items()}
  return tree


def _abstract(tree):
  """Restore targets: the leaves' shardings, else this process's first device
  (not the saved one, which a run on other devices or hosts cannot use)."""
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(
          np.shape(x), x.dtype, sharding=getattr(x, "sharding", None) or local),
      tree)


def best_of(valid_bits: dict) -> int | None:
  """The step with the lowest validation NLL of {step: bits or None}."""
  scored = [(bits, step) for step, bits in valid_bits.items()
            if bits is not None]
  return min(scored)[1] if scored else None


class KeepLatestBestAndSampled:
  """Orbax preservation policy: the last ``keep`` steps on disk, the one with
  the lowest validation NLL and the sampled ones, read from ``valid_bits``
  ({step: bits or None}) and ``sampled`` (a set of steps), which the
  Checkpointer keeps from every checkpoint's meta, not from Orbax's
  in-memory metrics, which a restart forgets."""

  def __init__(self, keep: int, valid_bits: dict, sampled: set):
    self.keep, self.valid_bits, self.sampled = max(keep, 1), valid_bits, sampled

  def should_preserve(self, checkpoints, *, context):
    del context
    steps = [c.step for c in checkpoints]
    latest = set(sorted(steps)[-self.keep:])
    best = best_of({s: self.valid_bits.get(s) for s in steps})
    return [s in latest or s == best or s in self.sampled for s in steps]


def _reason(error: Exception) -> str:
  """One short line for an exception (tensorstore's run to kilobytes)."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  return f"{type(error).__name__}: {text[:200]}"


class Checkpointer:
  """The checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = rundir.checkpoints_dir(workdir)
    self.valid_bits = {}  # step -> the validation NLL its meta records
    self.sampled = set()  # steps whose meta says samples were written
    self.damaged = []  # steps that ``restore`` skipped
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_names=("params", "opt_state", "meta"),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=KeepLatestBestAndSampled(
                keep, self.valid_bits, self.sampled),
            enable_async_checkpointing=False, create=True))
    for step in self.manager.all_steps():
      try:
        meta = self.read_meta(step)
      except Exception:  # pylint: disable=broad-except
        meta = {}  # an unreadable meta ranks nowhere (restore names it)
      self.valid_bits[step] = meta.get(BEST_METRIC)
      if meta.get(SAMPLED):
        self.sampled.add(step)

  def save(self, step: int, params, opt_state, meta: dict,
           valid_bits: float | None = None, sampled: bool = False):
    """Writes one checkpoint (blocking). ``valid_bits`` ranks it for "best";
    ``sampled`` keeps it for good (samples are written from it)."""
    valid_bits = None if valid_bits is None else float(valid_bits)
    meta = {**meta, "step": int(step), BEST_METRIC: valid_bits,
            SAMPLED: bool(sampled)}
    args = {"params": ocp.args.StandardSave(_to_orbax(params)),
            "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
      args["opt_state"] = ocp.args.StandardSave(opt_state)
    self.valid_bits[int(step)] = valid_bits
    if sampled:
      self.sampled.add(int(step))
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    self.manager.reload()
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.steps()
    return max(steps) if steps else None

  def best_step(self) -> int | None:
    """The step with the lowest validation NLL (latest if none has one)."""
    best = best_of({s: self.valid_bits.get(s) for s in self.steps()})
    return self.latest_step() if best is None else best

  def read_meta(self, step: int) -> dict:
    restored = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def resolve(self, step) -> int:
    """None/"latest" -> latest, "best" -> best, an int -> itself; checked."""
    available = self.steps()
    if not available:
      raise CheckpointError(
          f"no checkpoint in {self.directory}; train first "
          "(python train.py --config ... --workdir ...)")
    if step in (None, "latest"):
      return max(available)
    if step == "best":
      return self.best_step()
    if int(step) not in available:
      raise CheckpointError(
          f"no checkpoint at step {step} in {self.directory}; available: "
          f"{', '.join(map(str, sorted(available)))}, 'latest' or 'best'")
    return int(step)

  def restore(self, step, params_like, opt_state_like=None):
    """(params, opt_state or None, meta) at ``step`` (see ``resolve``).

    ``params_like``/``opt_state_like`` give the tree structure and shapes
    (arrays or ShapeDtypeStructs, with the shardings to restore into).
    A checkpoint that cannot be read raises CheckpointError naming it; for
    "latest" (or None) the newest intact one is restored instead, with a
    warning on stderr, and the skipped steps are added to ``damaged``.
    """
    wanted = self.resolve(step)
    fallback = step in (None, "latest")
    candidates = ([s for s in sorted(self.steps(), reverse=True)
                   if s <= wanted] if fallback else [wanted])
    args = {"params": ocp.args.StandardRestore(_abstract(_to_orbax(
        params_like))), "meta": ocp.args.JsonRestore()}
    if opt_state_like is not None:
      args["opt_state"] = ocp.args.StandardRestore(_abstract(opt_state_like))
    for candidate in candidates:
      try:
        restored = self.manager.restore(candidate,
                                        args=ocp.args.Composite(**args))
      except Exception as e:  # pylint: disable=broad-except
        where = os.path.join(self.directory, str(candidate))
        if not fallback:
          raise CheckpointError(
              f"the checkpoint at step {candidate} ({where}) is damaged "
              f"({_reason(e)}); use another step (available: "
              f"{', '.join(map(str, sorted(self.steps())))}) or move "
              f"{where} away") from e
        print(f"warning: skipping the damaged checkpoint at step {candidate}"
              f" ({where}: {_reason(e)})", file=sys.stderr)
        self.damaged.append(candidate)
        continue
      params = _from_orbax(restored["params"], params_like)
      opt_state = restored["opt_state"] if opt_state_like is not None else None
      return params, opt_state, dict(restored["meta"])
    raise CheckpointError(
        f"no checkpoint in {self.directory} can be read (damaged: "
        f"{', '.join(map(str, self.damaged))}); move the folder away and "
        "train again")

  def set_aside_damaged(self) -> None:
    """Renames each checkpoint ``restore`` skipped to <step>.damaged (kept
    for inspection, out of Orbax's way: the step can be saved again)."""
    if jax.process_index() == 0:
      for step in self.damaged:
        where = os.path.join(self.directory, str(step))
        target, n = where + DAMAGED_SUFFIX, 1
        while os.path.exists(target):
          target, n = f"{where}{DAMAGED_SUFFIX}{n}", n + 1
        os.rename(where, target)
        print(f"The damaged checkpoint {where} is now {target}.",
              file=sys.stderr)
    self.damaged = []
    self.manager.reload()

  def close(self):
    self.manager.close()


def save_params(workdir: str, params, step: int = 0) -> None:
  """A checkpoint of parameters alone (an imported model: no optimizer
  state, no data position)."""
  ckpt = Checkpointer(workdir)
  ckpt.save(step, params, None, {"source": "params only"})
  ckpt.close()


def load_run(workdir: str, step=None):
  """(config, model_config, graphdef, params, step) of a run's checkpoint
  (``step`` as in ``Checkpointer.resolve``); the config gives the shapes."""
  config = rundir.read_config(workdir)
  mcfg = config.model
  graphdef, params_like = model_lib.abstract(mcfg)
  ckpt = Checkpointer(workdir)
  try:
    params, _, meta = ckpt.restore(step, params_like)
  finally:
    ckpt.close()
  return config, mcfg, graphdef, params, int(meta["step"])
