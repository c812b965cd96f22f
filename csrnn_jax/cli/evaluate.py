"""``csrnn-evaluate --workdir RUN [--split test] [--step best]``: the NLL of
a split, overall and per class, printed as a table and written as
``RUN/eval_<split>_step<N>.json`` (``evaluate.evaluate_run``). The dataset
is the run's, checked against the manifest hash recorded at training time;
``--dataset-dir`` points at it where it has moved, ``--accept-dataset-change``
scores a changed one anyway. ``--generated DIR`` also evaluates the wav files
in DIR (as sample.py writes them) against the run's real data
(``audio_eval``) and writes DIR/audio_eval.{json,md}."""
from __future__ import annotations

import sys

from csrnn_jax import audio_eval
from csrnn_jax import configlib
from csrnn_jax import dataset
from csrnn_jax import evaluate
from csrnn_jax import rundir
from csrnn_jax.cli import common


def parser() -> common.Parser:
  p = common.Parser(prog="csrnn-evaluate",
                    description=__doc__.split("\n\n")[0])
  common.add_workdir(p)
  p.add_argument("--split", default="valid", choices=dataset.SPLITS)
  common.add_step(p)
  p.add_argument("--dataset-dir", metavar="DIR",
                 help="the run's dataset where it has moved (default: the "
                 "config's data.dataset_dir)")
  p.add_argument("--accept-dataset-change", action="store_true",
                 help="score a dataset whose manifest differs from the one "
                 "the run was trained on")
  p.add_argument("--generated", metavar="DIR",
                 help="also evaluate the generated wav files in DIR")
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  try:
    rundir.check(args.workdir)
    step = common.parse_step(args.step)
    result = evaluate.evaluate_run(args.workdir, args.split, step,
                                   args.dataset_dir,
                                   args.accept_dataset_change)
    print(evaluate.format_table(result, args.split, result["step"]))
    if args.generated:
      config = configlib.replace(rundir.read_config(args.workdir), **{
          "data.dataset_dir": result["dataset_dir"]})  # as checked above
      audio_result = audio_eval.evaluate_generated_dir(config, args.generated)
      print(f"\nGenerated audio in {args.generated} "
            "(audio_eval.json, audio_eval.md):")
      print(audio_eval.format_markdown(audio_result))
  except (FileNotFoundError, ValueError) as e:
    return common.fail(e)
  return 0


if __name__ == "__main__":
  sys.exit(main())
