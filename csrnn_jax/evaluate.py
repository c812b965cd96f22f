"""Negative log-likelihood of a split, overall and per class: the trainer's
validation (``SplitEvaluator``) and csrnn-evaluate's (``evaluate_run``),
which writes ``RUN/eval_<split>_step<N>.json`` (``rundir``). The dataset is
the run's, checked against the manifest hash recorded at training time
(``provenance.check_dataset``), or the one ``dataset_dir`` names where it
has moved.

Every chunk of the split is scored once: its windows run in order with the
hidden state carried (as in training, without gradients), and the NLL is
summed per chunk, so a class's figure is its mean bits per sample.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import data as data_lib
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import model as model_lib
from csrnn_jax import provenance
from csrnn_jax import rundir
from csrnn_jax import sharding as sharding_lib


def make_chunk_nll(graphdef, lookback: int):
  """jit: (params, windows_NxBxW, cond_BxC) -> summed NLL in nats per row,
  (B,)."""

  @jax.jit
  def chunk_nll(params, windows_NxBxW, cond_BxC):
    m = model_lib.bind(graphdef, params)

    def body(carry, window_BxW):
      logits_BxTxQ, carry = m.forward(window_BxW, cond_BxC, carry)
      nll_BxT = model_lib.token_nll(logits_BxTxQ, window_BxW[:, lookback:])
      return carry, jnp.sum(nll_BxT, axis=1)

    _, nll_NxB = jax.lax.scan(body, m.initial_carry(windows_NxBxW.shape[1]),
                              windows_NxBxW)
    return jnp.sum(nll_NxB, axis=0)

  return chunk_nll


class SplitEvaluator:
  """Scores one split of a run's dataset; compiled once, reused.

  ``mesh``: split each batch's rows over its devices (``sharding``); the eval
  batch is rounded up to a multiple of the device count with padding rows.
  Every process reads whole batches and gets every row's NLL back.
  """

  def __init__(self, config, mcfg, graphdef, split: str, mesh=None):
    t = config.train
    self.seq_len, self.lookback = t.seq_len, mcfg.lookback
    self.class_names = list(config.data.class_names)
    self.mesh = mesh
    batch_size = t.eval_batch_size
    self.chunk_nll = make_chunk_nll(graphdef, mcfg.lookback)
    if mesh is not None:
      batch_size = sharding_lib.round_up_batch(batch_size, mesh)
      rows = sharding_lib.batch_spec
      self.chunk_nll = jax.jit(sharding_lib.data_parallel(
          self.chunk_nll, mesh, (sharding_lib.REPLICATED, rows(1), rows()),
          rows()), out_shardings=NamedSharding(mesh, sharding_lib.REPLICATED))
    self.stream = data_lib.BatchStream(
        config.data.dataset_dir, split, batch_size, t.seq_len,
        mcfg.lookback, mcfg.q_levels, mcfg.quantization, seed=config.seed,
        prefetch=0, preemphasis=mcfg.preemphasis)

  def run(self, params) -> dict:
    """{"bits": overall, "per_class": {name: bits}, "chunks": n}."""
    totals, counts, chunks = {}, {}, 0
    for batch in self.stream.eval_batches():
      windows = data_lib.windows(batch.x_BxT, self.seq_len, self.lookback)
      cond_BxC = batch.cond_BxC
      if self.mesh is not None:
        windows = sharding_lib.shard_batch_rows(windows, self.mesh, 1)
        cond_BxC = sharding_lib.shard_batch_rows(cond_BxC, self.mesh)
      nll_B = np.asarray(self.chunk_nll(params, windows, cond_BxC))
      n_samples = windows.shape[0] * self.seq_len
      for nll, label, mask in zip(nll_B, batch.label_B, batch.mask_B):
        if mask == 0:
          continue
        chunks += 1
        name = self.class_names[label] if label >= 0 else "all"
        totals[name] = totals.get(name, 0.0) + float(nll)
        counts[name] = counts.get(name, 0) + n_samples
    if not counts:
      raise ValueError("the split has no chunks to evaluate")
    to_bits = lambda nats, n: nats / n / metrics_lib.LN2
    return {"bits": to_bits(sum(totals.values()), sum(counts.values())),
            "per_class": {k: to_bits(totals[k], counts[k])
                          for k in sorted(totals)},
            "chunks": chunks}


def format_table(result: dict, split: str, step: int) -> str:
  lines = [f"| {split} (step {step}) | bits/sample |", "|---|---|"]
  lines += [f"| {name} | {bits:.4f} |"
            for name, bits in result["per_class"].items()]
  lines.append(f"| **all** | **{result['bits']:.4f}** |")
  return "\n".join(lines)


def on_dataset(config, workdir: str, dataset_dir: str | None = None,
               accept_dataset_change: bool = False):
  """The run's config with ``data.dataset_dir = dataset_dir`` (default: the
  one it was trained on), once that dataset's manifest is shown to be the
  one the run recorded (``provenance.DatasetChanged`` if not)."""
  trained_dir = config.data.dataset_dir
  config = configlib.replace(config, **{
      "data.dataset_dir": dataset_dir or trained_dir})
  provenance.check_dataset(
      workdir, config.data.dataset_dir, trained_dir,
      accept=accept_dataset_change, accept_flag="--accept-dataset-change",
      dir_flag="--dataset-dir")
  return config


def evaluate_run(workdir: str, split: str = "valid", step=None,
                 dataset_dir: str | None = None,
                 accept_dataset_change: bool = False) -> dict:
  """Score a run's checkpoint on a split of its dataset (``on_dataset``);
  writes and returns the result."""
  config, mcfg, graphdef, params, step = checkpoint_lib.load_run(workdir, step)
  config = on_dataset(config, workdir, dataset_dir, accept_dataset_change)
  result = SplitEvaluator(config, mcfg, graphdef, split).run(params)
  result.update(split=split, step=step,
                dataset_dir=os.path.abspath(config.data.dataset_dir))
  rundir.write_eval(workdir, split, step, result)
  return result
