"""One table of runs, the closing step of a reproducibility study
(csrnn-report --workdir RUN [RUN ...] [--out DIR]).

For every run directory: config name, seed, steps, bits per sample on train
(the last train record), valid (the last valid record, overall and per
class) and test (the newest ``eval_test_step<N>.json``, written by
``csrnn-evaluate --workdir RUN --split test``), training time
(the sum of the train records' seconds: compilation, evaluation and
checkpoints excluded, each step counted once across resumes) and the code
revision(s) its sessions ran. The table is printed and written as
``report.md`` and ``report.csv`` in DIR (default: the folder that holds the
runs), with ``report_loss.png``, the runs' loss curves on one plot.
"""
from __future__ import annotations

import csv
import os

from csrnn_jax import metrics as metrics_lib
from csrnn_jax import plots
from csrnn_jax import rundir

FIXED_COLUMNS = ("run", "config", "seed", "steps", "train_bits", "valid_bits",
                 "test_bits")
TAIL_COLUMNS = ("train_seconds", "code_revision")


def run_row(workdir: str) -> dict:
  """One run's row: the FIXED_COLUMNS, ``valid/<class>`` per class, then the
  TAIL_COLUMNS; a value the run lacks is None."""
  run = rundir.load(workdir)
  records = metrics_lib.read(rundir.metrics_path(workdir))
  train = [r for r in records if r["kind"] == "train"]
  valid = [r for r in records if r["kind"] == "valid"]
  test = run.newest_eval("test")
  revisions = list(dict.fromkeys(s["code_revision"] for s in run.sessions
                                 if s.get("code_revision")))
  row = {"run": workdir, "config": run.config.name, "seed": run.config.seed,
         "steps": train[-1]["step"] if train else 0,
         "train_bits": train[-1]["bits"] if train else None,
         "valid_bits": valid[-1]["bits"] if valid else None,
         "test_bits": test["bits"] if test else None}
  if valid:
    row.update((f"valid/{k[len('bits/'):]}", v) for k, v in valid[-1].items()
               if k.startswith("bits/"))
  row["train_seconds"] = sum(r["seconds"] for r in train) if train else None
  row["code_revision"] = ", ".join(revisions) or None
  return row


def columns(rows: list[dict]) -> list[str]:
  """FIXED_COLUMNS, every run's per-class columns (first seen first), then
  TAIL_COLUMNS."""
  per_class = dict.fromkeys(k for row in rows for k in row
                            if k.startswith("valid/"))
  return list(FIXED_COLUMNS) + list(per_class) + list(TAIL_COLUMNS)


def _cell(key: str, value) -> str:
  if value is None:
    return "-"
  if key == "train_seconds":
    return f"{value / 60:.1f} min"
  if isinstance(value, float):
    return f"{value:.3f}"
  return str(value)


def markdown(rows: list[dict]) -> str:
  """A Markdown table, bits per sample to 3 decimals, time in minutes."""
  keys = columns(rows)
  header = [k.replace("_bits", " bits").replace("valid/", "valid ")
            .replace("train_seconds", "train time")
            .replace("code_revision", "code revision") for k in keys]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if k in ("run", "config", "code_revision")
                          else "---:" for k in keys) + "|"]
  lines += ["| " + " | ".join(_cell(k, row.get(k)) for k in keys) + " |"
            for row in rows]
  return "\n".join(lines)


def write_csv(rows: list[dict], path: str) -> None:
  """Full precision; an empty cell where a run lacks the value."""
  keys = columns(rows)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if row.get(k) is None else row[k] for k in keys})


def report(workdirs: list[str], out_dir: str) -> dict:
  """Writes report.md, report.csv and report_loss.png to out_dir; returns
  {"rows", "markdown", "md", "csv", "png"}."""
  rows = [run_row(w) for w in workdirs]
  os.makedirs(out_dir, exist_ok=True)
  paths = {name: os.path.join(out_dir, f"report{suffix}") for name, suffix in
           (("md", ".md"), ("csv", ".csv"), ("png", "_loss.png"))}
  table = markdown(rows)
  with open(paths["md"], "w") as f:
    f.write(table + "\n")
  write_csv(rows, paths["csv"])
  plots.loss_curves(
      {w: metrics_lib.read(rundir.metrics_path(w)) for w in workdirs},
      paths["png"])
  return {"rows": rows, "markdown": table, **paths}
