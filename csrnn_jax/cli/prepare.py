"""``csrnn-prepare SRC OUT``: audio folders (one per class) or a CSV of
files with labels or vectors -> a dataset folder that training reads
(``prepare.prepare_dataset`` says how)."""
from __future__ import annotations

import argparse
import sys

from csrnn_jax import prepare
from csrnn_jax.cli import common


def _split(text: str):
  try:
    return tuple(float(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"{text!r}: give train,valid,test shares such as 0.8,0.1,0.1"
    ) from None


def parser() -> common.Parser:
  p = common.Parser(prog="csrnn-prepare",
                    description=prepare.__doc__.split("\n\n")[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("src", help="folder with one sub-folder per class")
  p.add_argument("out", help="dataset folder to write")
  p.add_argument("--labels", help="CSV of path,label or path,v1,...,vC rows "
                 "with a header (instead of class folders)")
  p.add_argument("--sample-rate", type=int, default=16000,
                 help="output rate in Hz")
  p.add_argument("--chunk-seconds", type=float, default=8.0,
                 help="length of every chunk")
  p.add_argument("--overlap", type=float, default=0.0,
                 help="fraction of a chunk that neighbours share")
  p.add_argument("--silence-db", type=float, default=-50.0,
                 help="drop chunks with a lower RMS in dBFS")
  p.add_argument("--trim-db", type=float, default=None,
                 help="cut each file's leading and trailing stretch whose "
                 "64-ms frames are all quieter than this, in dBFS after "
                 "--peak-normalize (e.g. -36: 2 levels of 8-bit audio)")
  p.add_argument("--peak-normalize", action="store_true",
                 help="scale each file to a peak of 0.99")
  p.add_argument("--balance", action="store_true",
                 help="equal duration per class in each split")
  p.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1),
                 help="train,valid,test shares, split by source file")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the train/valid/test split")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the dataset already in OUT")
  p.add_argument("--quiet", action="store_true",
                 help="no progress bar or summary")
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  try:
    prepare.prepare_dataset(
        args.src, args.out, labels_csv=args.labels,
        sample_rate=args.sample_rate, chunk_seconds=args.chunk_seconds,
        overlap=args.overlap, silence_db=args.silence_db,
        trim_db=args.trim_db,
        peak_normalize=args.peak_normalize, balance=args.balance,
        split=args.split, seed=args.seed, overwrite=args.overwrite,
        verbose=not args.quiet)
  except prepare.PrepareError as e:
    return common.fail(e)
  return 0


if __name__ == "__main__":
  sys.exit(main())
