"""The flatness floor of each quantisation scheme on a prepared dataset:
what quantising the real test clips alone (no model) does to their median
spectral flatness, per class, as a ratio to the clips as recorded. A scheme
whose floor is above the quality target (3x, docs/results.md) cannot meet it
on that class with any model.

    python scripts/quantisation_floor.py DATA [--q-levels 256 1024] \
        [--preemphasis 0 0.85 0.95]

Prints a markdown table: one row per (Q, quantisation, pre-emphasis).
"""
from __future__ import annotations

import argparse
import itertools

from csrnn_jax import audio_eval
from csrnn_jax import dataset as dataset_lib


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("dataset")
  parser.add_argument("--q-levels", type=int, nargs="+", default=[256, 1024])
  parser.add_argument("--preemphasis", type=float, nargs="+",
                      default=[0.0, 0.85, 0.95])
  args = parser.parse_args(argv)
  manifest = dataset_lib.read_manifest(args.dataset)
  names, rate = manifest["class_names"], manifest["sample_rate"]
  original = audio_eval.class_flatness(audio_eval.load_dataset_clips(
      args.dataset, "test", as_model_hears=False), names, rate)
  print("| Q | quantisation | pre-emphasis | floor per class ("
        + ", ".join(names) + ") |")
  print("|---|---|---|---|")
  for q, method, pe in itertools.product(
      args.q_levels, ("linear", "mu-law"), args.preemphasis):
    heard = audio_eval.class_flatness(audio_eval.load_dataset_clips(
        args.dataset, "test", q, method, pe), names, rate)
    print(f"| {q} | {method} | {pe} | "
          + ", ".join(f"{heard[n] / original[n]:.2f}"
                      if heard[n] and original[n] else "–"  # no loud frame
                      for n in names) + " |")


if __name__ == "__main__":
  main()
