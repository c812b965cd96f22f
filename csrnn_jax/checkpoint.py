"""Orbax checkpoints of a run directory (DESIGN §4).

A run directory holds ``config.json`` (the resolved config), ``provenance.json``
and ``checkpoints/<step>/`` with three items: ``params`` and ``opt_state``
(array trees) and ``meta`` (JSON: step, RNG key, data-stream position). Saves
happen at chunk-batch boundaries; Orbax writes to a temporary folder and
renames it when complete, so a run killed mid-save leaves the previous
checkpoint intact. Kept: the last ``keep`` and the best by validation NLL.
Everything is restored from the workdir alone: the config gives the shapes.

With several processes (``sharding``) every process calls ``save`` and
``restore`` on a shared workdir; Orbax writes each replicated array once.
Arrays restore into the shardings of the targets given, so a checkpoint moves
between device counts and hosts.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from csrnn_jax import configlib
from csrnn_jax import model as model_lib

BEST_METRIC = "valid_bits"


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


class Checkpointer:
  """The checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        # BestN keeps the end of the sorted order: reverse so lowest NLL wins.
        policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                       reverse=True, keep_checkpoints_without_metrics=False),
    ])
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_names=("params", "opt_state", "meta"),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=False,
            create=True))

  def save(self, step: int, params, opt_state, meta: dict,
           valid_bits: float | None = None):
    """Writes one checkpoint (blocking). ``valid_bits`` ranks it for "best"."""
    metrics = None if valid_bits is None else {BEST_METRIC: float(valid_bits)}
    meta = {**meta, "step": int(step), BEST_METRIC: metrics and valid_bits}
    args = {"params": ocp.args.StandardSave(_to_orbax(params)),
            "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
      args["opt_state"] = ocp.args.StandardSave(opt_state)
    self.manager.save(step, args=ocp.args.Composite(**args), metrics=metrics,
                      force=True)
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    self.manager.reload()
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.steps()
    return max(steps) if steps else None

  def best_step(self) -> int | None:
    """The step with the lowest validation NLL (latest if none has one)."""
    scored = [(m[BEST_METRIC], s) for s in self.steps()
              if (m := self.read_meta(s)).get(BEST_METRIC) is not None]
    return min(scored)[1] if scored else self.latest_step()

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
    """
    step = self.resolve(step)
    args = {"params": ocp.args.StandardRestore(_abstract(_to_orbax(
        params_like))), "meta": ocp.args.JsonRestore()}
    if opt_state_like is not None:
      args["opt_state"] = ocp.args.StandardRestore(_abstract(opt_state_like))
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    params = _from_orbax(restored["params"], params_like)
    opt_state = restored["opt_state"] if opt_state_like is not None else None
    return params, opt_state, dict(restored["meta"])

  def close(self):
    self.manager.close()


def read_config(workdir: str):
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(
        f"{workdir} is not a run directory (no config.json); pass the "
        "--workdir of a training run or of csrnn-import-torch")
  with open(path) as f:
    return configlib.from_json(f.read())


def write_json(path: str, obj) -> None:
  """Write JSON atomically (a kill never leaves half a file)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


def write_run(workdir: str, config, params, provenance: dict,
              step: int = 0) -> None:
  """A run directory holding only parameters (e.g. an imported model)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(configlib.to_json(config))
  write_json(os.path.join(workdir, "provenance.json"), provenance)
  ckpt = Checkpointer(workdir)
  ckpt.save(step, params, None, {"source": "params only"})
  ckpt.close()


def load_run(workdir: str, step=None):
  """(config, model_config, graphdef, params, step) of a run's checkpoint."""
  config = read_config(workdir)
  mcfg = configlib.model_config(config)
  graphdef, params_like = model_lib.abstract(mcfg)
  ckpt = Checkpointer(workdir)
  try:
    params, _, meta = ckpt.restore(step, params_like)
  finally:
    ckpt.close()
  return config, mcfg, graphdef, params, int(meta["step"])
