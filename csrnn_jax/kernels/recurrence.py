"""An RNN layer's recurrence over a window as one tiled Pallas kernel (the
``pallas`` backend of the GRU and the LSTM): one launch per window.

Given every step's input projection ``x W_ih + b_ih`` (T, B, Z), the kernel
runs the T steps of h_t = cell(xp_t, h_{t-1} W_hh + b_hh, state_{t-1}). Each
program owns ``BATCH_BLOCK`` rows (rows are independent, so programs never
wait for each other) and loops over the steps; per step, over column tiles
of the state, and per column tile over the tiles of h_{t-1}: the gates'
tiles of h_{t-1} W_hh accumulate tile by tile, W_hh streamed from memory in
(tile, tile) blocks (a whole (D, Z) weight is neither a power of 2 nor small
enough to sit on chip), and the cell updates that column tile.

The state's history is the kernel's output, (T + 1, B, D) per part of the
state (h; h and c for the LSTM), slot 0 the initial state: step t reads slot
t and writes slot t + 1, and a barrier after each step makes its writes
visible to the whole program before the next step reads them.

Sizes are padded inside (``pallas_gpu``): rows to a multiple of
BATCH_BLOCK, each gate's D columns to a multiple of the tile. A padded state
column has zero weights and biases and starts at 0, and a cell maps zero
pre-activations and a zero state to a zero state (GRU: n = tanh(0) = 0, so
h' = z * 0; LSTM: g = 0, so c' = f * 0 and h' = o tanh(0)), so it stays 0;
its W_hh rows are 0 too, so it never reaches a real column either way.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from csrnn_jax import numerics
from csrnn_jax.kernels import pallas_gpu


def recurrence(xp_TxBxZ, state0, w_hh, b_hh, cell, compute_dtype: str):
  """The states after each of T steps: a tuple of (T, B, D) arrays, one per
  part of ``state0`` (a tuple of (B, D) arrays, h first).

  ``cell(xp_tiles, hp_tiles, state_tiles)`` is one step on one column tile:
  the G gates' input projection tiles, hidden projection tiles (``b_hh``
  included) and the state's tiles, each (rows, tile), to the new state's
  tiles. ``compute_dtype``: the operands of ``h W_hh`` (``numerics``).
  """
  return pallas_gpu.run(
      functools.partial(_recurrence, cell=cell, compute_dtype=compute_dtype),
      xp_TxBxZ, tuple(state0), w_hh, b_hh)


def _recurrence(xp_TxBxZ, state0, w_hh, b_hh, *, cell, compute_dtype,
                compiled):
  t_len, b, _ = xp_TxBxZ.shape
  h = state0[0].shape[1]
  gates = w_hh.shape[1] // h
  tile = pallas_gpu.tile_size(h)
  hp = pallas_gpu.round_up(h, tile)
  bp = pallas_gpu.round_up(b, pallas_gpu.BATCH_BLOCK)
  rows, tiles, parts = pallas_gpu.BATCH_BLOCK, hp // tile, len(state0)
  xp_TxBxZ = pallas_gpu.pad_to(pallas_gpu.pad_gates(xp_TxBxZ, h, hp),
                                (t_len, bp, gates * hp))
  w_DxZ = pallas_gpu.pad_to(pallas_gpu.pad_gates(w_hh, h, hp),
                             (hp, gates * hp))
  # Rounded once here, as numerics.matmul would round each tile.
  w_DxZ = w_DxZ.astype(numerics.operand_dtype(compute_dtype))
  b_1xZ = pallas_gpu.pad_gates(b_hh, h, hp)[None]
  state0 = [pallas_gpu.pad_to(s_BxD, (bp, hp)) for s_BxD in state0]

  def cols(j):
    return pl.ds(j * tile, tile)

  def gate_cols(gate, j):
    return pl.ds(gate * hp + j * tile, tile)

  def kernel(xp_ref, w_ref, b_ref, *refs):
    state0_refs, out_refs = refs[:parts], refs[parts:]

    def copy_initial(j, carry):
      for s0_ref, out_ref in zip(state0_refs, out_refs):
        out_ref[0, :, cols(j)] = s0_ref[:, cols(j)]
      return carry

    jax.lax.fori_loop(0, tiles, copy_initial, 0)
    pallas_gpu.barrier(compiled)

    def step(t, carry):
      def column(j, carry):
        def k_tile(k, acc):
          h_tile = out_refs[0][t, :, cols(k)]
          return tuple(
              a + numerics.matmul(h_tile, w_ref[cols(k), gate_cols(g, j)],
                                  compute_dtype)
              for g, a in enumerate(acc))

        zeros = tuple(jnp.zeros((rows, tile), jnp.float32)
                      for _ in range(gates))
        acc = jax.lax.fori_loop(0, tiles, k_tile, zeros)
        hp_tiles = [a + b_ref[:, gate_cols(g, j)] for g, a in enumerate(acc)]
        xp_tiles = [xp_ref[t, :, gate_cols(g, j)] for g in range(gates)]
        state = tuple(out_ref[t, :, cols(j)] for out_ref in out_refs)
        for out_ref, s in zip(out_refs, cell(xp_tiles, hp_tiles, state)):
          out_ref[t + 1, :, cols(j)] = s
        return carry

      jax.lax.fori_loop(0, tiles, column, 0)
      pallas_gpu.barrier(compiled)
      return carry

    jax.lax.fori_loop(0, t_len, step, 0)

  history = jax.ShapeDtypeStruct((t_len + 1, bp, hp), jnp.float32)
  history_spec = pl.BlockSpec((t_len + 1, rows, hp), lambda i: (0, i, 0))
  outs = pallas_gpu.call(
      kernel, compiled=compiled, grid=(bp // rows,),
      out_shape=(history,) * parts,
      in_specs=[pl.BlockSpec((t_len, rows, gates * hp), lambda i: (0, i, 0)),
                pl.BlockSpec((hp, gates * hp), lambda i: (0, 0)),
                pl.BlockSpec((1, gates * hp), lambda i: (0, 0))]
               + [pl.BlockSpec((rows, hp), lambda i: (i, 0))] * parts,
      out_specs=(history_spec,) * parts)(xp_TxBxZ, w_DxZ, b_1xZ, *state0)
  return tuple(out[1:, :b, :h] for out in outs)
