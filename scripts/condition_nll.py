"""Does the model use its condition? Test NLL of every chunk under each
class's condition vector (docs/results.md).

    python scripts/condition_nll.py --workdir RUN [--split test] [--step best]

Prints a class x condition table of bits per sample, the gap between the
wrong and the right condition, and how often the right condition gives the
lowest NLL (the model used as a classifier). A gap near 0 means the model
ignores the condition; a clear gap with free-running samples that a
classifier cannot tell apart means the condition is learned for prediction
but lost while sampling.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import data as data_lib
from csrnn_jax import evaluate
from csrnn_jax import metrics as metrics_lib


def condition_nll(workdir: str, split: str = "test", step="latest"):
  """(class names, labels (N,), bits (N, C): chunk n under condition c)."""
  config, mcfg, graphdef, params, _ = checkpoint_lib.load_run(workdir, step)
  t = config.train
  names = list(config.data.class_names)
  stream = data_lib.BatchStream(
      config.data.dataset_dir, split, t.eval_batch_size, t.seq_len,
      mcfg.lookback, mcfg.q_levels, mcfg.quantization, prefetch=0)
  chunk_nll = evaluate.make_chunk_nll(graphdef, mcfg.lookback)
  eye = np.eye(len(names), dtype=np.float32)
  labels, bits = [], []
  for batch in stream.eval_batches():
    windows = data_lib.windows(batch.x_BxT, t.seq_len, mcfg.lookback)
    n_samples = windows.shape[0] * t.seq_len
    per_cond_CxB = np.stack([
        np.asarray(chunk_nll(params, windows,
                             np.tile(eye[c], (windows.shape[1], 1))))
        for c in range(len(names))]) / n_samples / metrics_lib.LN2
    keep = batch.mask_B > 0
    labels.append(batch.label_B[keep])
    bits.append(per_cond_CxB[:, keep].T)
  return names, np.concatenate(labels), np.concatenate(bits)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--split", default="test", choices=("train", "valid", "test"))
  p.add_argument("--step", default="latest")
  args = p.parse_args(argv)
  step = int(args.step) if args.step.isdigit() else args.step
  names, labels_N, bits_NxC = condition_nll(args.workdir, args.split, step)
  print(f"{args.split} bits/sample; rows: the chunk's class, columns: the "
        "condition given")
  print("| class \\ condition | " + " | ".join(names) + " |")
  print("|---" * (len(names) + 1) + "|")
  for c, name in enumerate(names):
    mean_C = bits_NxC[labels_N == c].mean(0)
    print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in mean_C) + " |")
  right_N = bits_NxC[np.arange(len(labels_N)), labels_N]
  wrong_N = (bits_NxC.sum(1) - right_N) / (len(names) - 1)
  accuracy = np.mean(bits_NxC.argmin(1) == labels_N)
  print(f"right condition {right_N.mean():.3f}, wrong {wrong_N.mean():.3f}: "
        f"gap {np.mean(wrong_N - right_N):.3f} bits/sample; the right "
        f"condition is the likeliest for {accuracy:.2f} of {len(labels_N)} "
        "chunks")
  return 0


if __name__ == "__main__":
  sys.exit(main())
