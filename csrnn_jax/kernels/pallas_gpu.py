"""What the Pallas kernels share: the sizes Triton accepts, the padding to
them, and where a kernel is compiled.

Pallas's Triton lowering (NVIDIA GPUs, any generation) takes only arrays
whose sizes are powers of 2, and a Triton dot needs at least 16 rows,
columns and terms. So every kernel works on tiles: ``BATCH_BLOCK`` rows
per program and square weight tiles of ``tile_size`` (16 or 32) columns,
looped over inside the kernel; the arrays around them (padded only to a
multiple of the tile) may have any size. Zeros pad everything, so padded
rows and columns add nothing to the real ones, and the wrappers slice them
off.

``run`` stages a kernel out for the platform the program is lowered for
(``jax.lax.platform_dependent``), not for the machine that traces it: the
compiled Triton kernel for ``cuda``, Pallas's interpret mode (the same
kernel body as plain XLA ops) everywhere else, so a program traced on a
CPU machine and lowered for a GPU gets the real kernel
(``tests/test_gpu_lowering.py``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

BATCH_BLOCK = 16  # rows per program: the fewest a Triton dot takes
MAX_TILE = 32  # columns (and terms) of a weight tile


def tile_size(n: int) -> int:
  """The tile for a dimension of n: the power of 2 in [16, MAX_TILE] nearest
  above min(n, MAX_TILE)."""
  tile = 16
  while tile < min(n, MAX_TILE):
    tile *= 2
  return tile


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def pad_to(x, shape):
  """``x`` zero-padded at the end of each axis to ``shape``."""
  if x.shape == tuple(shape):
    return x
  return jnp.pad(x, [(0, n - m) for m, n in zip(x.shape, shape)])


def pad_gates(x, hidden: int, padded: int):
  """Pads each gate's block of the last axis to ``padded`` columns:
  (..., gates * hidden) -> (..., gates * padded)."""
  gates = x.shape[-1] // hidden
  x = x.reshape(x.shape[:-1] + (gates, hidden))
  x = pad_to(x, x.shape[:-1] + (padded,))
  return x.reshape(x.shape[:-2] + (gates * padded,))


def barrier(compiled: bool):
  """Waits until every thread of the program has written what it wrote
  (a CTA barrier); nothing to wait for in interpret mode, which runs one
  program at a time."""
  return pl_triton.debug_barrier() if compiled else None


def call(kernel, *, compiled: bool, **kwargs):
  """``pl.pallas_call`` compiled by Triton, or in interpret mode."""
  if not compiled:
    return pl.pallas_call(kernel, interpret=True, **kwargs)
  return pl.pallas_call(kernel, compiler_params=pl_triton.CompilerParams(),
                        **kwargs)


def run(kernel_fn, *args):
  """``kernel_fn(*args, compiled=...)``: compiled (Triton) when lowered for
  cuda, interpret mode on every other platform."""
  return jax.lax.platform_dependent(
      *args, cuda=functools.partial(kernel_fn, compiled=True),
      default=functools.partial(kernel_fn, compiled=False))
