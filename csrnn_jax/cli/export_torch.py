"""``csrnn-export-torch --workdir RUN --out FILE.pt``: a run's parameters as
an original (PyTorch) Conditional SampleRNN state dict
(``interop.torch_import``)."""
from __future__ import annotations

import sys

from csrnn_jax import rundir
from csrnn_jax.cli import common
from csrnn_jax.interop import torch_import


def parser() -> common.Parser:
  p = common.Parser(prog="csrnn-export-torch",
                    description=" ".join(__doc__.split("\n\n")[0].split()))
  common.add_workdir(p)
  p.add_argument("--out", required=True, metavar="FILE",
                 help="the state dict to write, e.g. model.pt")
  common.add_step(p)
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  try:
    rundir.check(args.workdir)
    cfg = torch_import.export_run(args.workdir, args.out,
                                  common.parse_step(args.step))
  except (ValueError, ImportError, OSError) as e:
    return common.fail(e)
  print(f"wrote {args.out}: load it in the original code with "
        f"{torch_import.describe(cfg)}")
  if cfg.quantization != "linear-minmax":
    print(f"note: this model was trained on {cfg.quantization} quantisation; "
          "the original code feeds it per-file min/max (linear-minmax) "
          "levels", file=sys.stderr)
  if cfg.preemphasis:
    print(f"note: this model was trained with preemphasis={cfg.preemphasis};"
          " the original code neither filters its input nor inverts the "
          "filter on its output", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
