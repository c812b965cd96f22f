"""``csrnn-import-torch CHECKPOINT --workdir RUN``: an original (PyTorch)
Conditional SampleRNN checkpoint as a run directory (``interop.torch_import``).
Hyperparameters not given are read from the tensor shapes; given ones are
checked against them."""
from __future__ import annotations

import argparse
import sys

from csrnn_jax.cli import common
from csrnn_jax.interop import torch_import


def parser() -> common.Parser:
  p = common.Parser(prog="csrnn-import-torch",
                    description=" ".join(__doc__.split("\n\n")[0].split()))
  p.add_argument("checkpoint", help="the original's checkpoint file, e.g. "
                 "checkpoints/best-ep12-it34000")
  p.add_argument("--frame-sizes", type=int, nargs="+",
                 help="the original's --frame_sizes: upsampling ratios, "
                 "bottom first (16 4 is frame sizes (16, 16, 64) here)")
  p.add_argument("--dim", type=int)
  p.add_argument("--n-rnn", type=int)
  p.add_argument("--q-levels", type=int)
  p.add_argument("--nb-classes", type=int)
  p.add_argument("--weight-norm", action=argparse.BooleanOptionalAction)
  p.add_argument("--learn-h0", action=argparse.BooleanOptionalAction)
  p.add_argument("--class-names", help="comma-separated, in one-hot order "
                 "(default class0,class1,...)")
  common.add_workdir(p, "the run directory to write (new or empty)")
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  given = dict(dim=args.dim, n_rnn=args.n_rnn, q_levels=args.q_levels,
               nb_classes=args.nb_classes, weight_norm=args.weight_norm,
               learn_h0=args.learn_h0)
  if args.frame_sizes:
    given["frame_sizes"] = torch_import.frame_sizes_from_reference(
        args.frame_sizes)
  names = args.class_names.split(",") if args.class_names else None
  try:
    config = torch_import.import_run(args.checkpoint, args.workdir,
                                     class_names=names, **given)
  except (ValueError, ImportError, OSError) as e:
    return common.fail(e)
  print(f"imported {args.checkpoint} -> {args.workdir}: "
        f"{torch_import.describe(config.model)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
