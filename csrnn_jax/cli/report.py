"""``csrnn-report --workdir RUN [RUN ...] [--out DIR]``: one table of runs
(``report``), printed and written as report.md, report.csv and
report_loss.png in DIR (default: the folder that holds the runs)."""
from __future__ import annotations

import os
import sys

from csrnn_jax import report
from csrnn_jax import rundir
from csrnn_jax.cli import common


def parser() -> common.Parser:
  p = common.Parser(prog="csrnn-report", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, nargs="+", metavar="RUN",
                 help="run directories (train.py's --workdir)")
  p.add_argument("--out", metavar="DIR", help="where report.md, report.csv "
                 "and report_loss.png go (default: the runs' common folder)")
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  workdirs = [os.path.normpath(w) for w in args.workdir]
  out_dir = args.out or os.path.commonpath(
      [os.path.dirname(os.path.abspath(w)) for w in workdirs])
  try:
    for workdir in workdirs:
      rundir.check(workdir)
    result = report.report(workdirs, out_dir)
  except (FileNotFoundError, ValueError) as e:
    return common.fail(e)
  print(result["markdown"])
  print(f"\nwrote {result['md']}, {result['csv']} and {result['png']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
