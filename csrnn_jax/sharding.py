"""Data parallelism over a ``('data',)`` mesh of devices (docs/design.md §7).

Parameters and optimizer state are replicated on every device; each chunk
batch (windows N x B x W, cond B x C, mask B) and the TBPTT carry are split on
the batch axis, B / D rows per device. The training and validation programs
run under ``jax.shard_map``: each device runs its own rows, and the only
communication is one all-reduce of the gradient (and two scalars) per window.
shard_map rather than automatic partitioning because custom kernels (Pallas,
custom VJPs) cannot be partitioned automatically.

Several hosts: ``jax.distributed.initialize()`` first (``train.py
--multihost``). ``make_mesh`` orders the devices by process, so process p's
devices hold rows [p * B/P, (p+1) * B/P) of a global batch: the rows its
``BatchStream`` reads, which ``assemble_batch_rows`` turns into global arrays.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"  # the mesh axis that splits the batch
REPLICATED = P()


def make_mesh(devices=None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices`` (default: every device of every
  process), ordered by (process, id) so that each process's rows of a batch
  are one contiguous block, in process order."""
  devices = jax.devices() if devices is None else list(devices)
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(ordered), (DATA,))


def batch_spec(batch_axis: int = 0) -> P:
  """Rows split over ``'data'`` on ``batch_axis``; other axes whole."""
  return P(*(None,) * batch_axis, DATA)


def data_parallel(fn, mesh: Mesh | None, in_specs, out_specs):
  """``fn`` run by every device of ``mesh`` on its share of the arguments
  (``jax.shard_map``); ``fn`` itself unchanged without a mesh.

  check_vma=False: kernels with custom VJPs (and Pallas) need not track which
  values differ per device; ``fn`` sums what must be summed (the gradient)
  with explicit collectives.
  """
  if mesh is None:
    return fn
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                       check_vma=False)


def check_batch_size(batch_size: int, mesh: Mesh,
                     name: str = "train.batch_size") -> None:
  """Every device must take the same number of rows: else a ValueError naming
  the nearest batch sizes that divide."""
  n = mesh.devices.size
  if batch_size % n:
    lower = batch_size // n * n
    nearest = " or ".join(str(b) for b in (lower, lower + n) if b > 0)
    raise ValueError(
        f"{name}={batch_size} does not divide over the {n} devices of the "
        f"data-parallel mesh (each device takes an equal share of the rows); "
        f"set {name}={nearest}, or use fewer devices (see docs/scaling.md)")


def round_up_batch(batch_size: int, mesh: Mesh) -> int:
  """The smallest multiple of the device count >= ``batch_size`` (for
  batches whose extra rows can be padding, e.g. evaluation, generation)."""
  n = mesh.devices.size
  return -(-batch_size // n) * n


def replicate(tree, mesh: Mesh):
  """Every leaf on every device of ``mesh``. The copy on the input's device
  may share its buffer: donate one or the other, not both. With several
  processes each must pass the same values (checked: a one-off collective)."""
  return jax.device_put(tree, NamedSharding(mesh, REPLICATED))


def shard_batch_rows(tree, mesh: Mesh, batch_axis: int = 0):
  """Whole-batch values, the same on every process, as global arrays split
  on ``batch_axis`` (B must divide by the device count).

  Host arrays are sliced per device (no cross-host traffic); jax.Arrays
  (e.g. PRNG keys, a generator's state) are resharded on device.
  """

  def put(x):
    sharding = NamedSharding(mesh, batch_spec(batch_axis))
    if isinstance(x, jax.Array):
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree_util.tree_map(put, tree)


def assemble_batch_rows(tree, mesh: Mesh, batch_axis: int = 0):
  """This process's rows of a global batch (host arrays, B / P rows on
  ``batch_axis``) -> global arrays of B rows split over ``mesh``."""

  def put(x_local):
    shape = list(x_local.shape)
    shape[batch_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, batch_spec(batch_axis)), x_local, tuple(shape))

  return jax.tree_util.tree_map(put, tree)


def local_copy(tree):
  """Replicated arrays -> this process's first shard of each (one device's
  buffer, valid until the arrays are donated), for work that one process does
  alone (writing samples)."""
  return jax.tree_util.tree_map(lambda x: x.addressable_data(0), tree)


def any_process(flag: bool) -> bool:
  """True if ``flag`` is set on any process (e.g. a stop signal that reached
  only some hosts): every process must leave the training loop together."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
