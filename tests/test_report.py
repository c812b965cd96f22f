"""report builds its table, CSV and loss plot from two real (tiny) runs."""
import csv
import json
import os
import pathlib

import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import evaluate
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import model as M
from csrnn_jax import provenance
from csrnn_jax import rundir
from csrnn_jax.cli import report as report_cli

from helpers import (WINDOWS_PER_BATCH, tiny_config, tiny_run_config,
                     train_run)


@pytest.fixture(scope="module")
def two_runs(tiny_dataset, tmp_path_factory):
  """Seeds 0 and 1, one chunk batch each; the test split scored for seed 1."""
  root = tmp_path_factory.mktemp("runs")
  runs = []
  for seed in (0, 1):
    config = tiny_config(tiny_dataset, num_steps=WINDOWS_PER_BATCH,
                         eval_every=WINDOWS_PER_BATCH)
    config.seed = seed
    workdir = str(root / f"tiny_seed{seed}")
    train_run(config, workdir)
    runs.append(workdir)
  evaluate.evaluate_run(runs[1], "test")
  return runs


def expected_row(workdir):
  records = metrics_lib.read(f"{workdir}/metrics.jsonl")
  train = [r for r in records if r["kind"] == "train"]
  valid = [r for r in records if r["kind"] == "valid"][-1]
  sessions = json.loads(
      pathlib.Path(workdir, "provenance.json").read_text())["sessions"]
  return {"steps": train[-1]["step"], "train_bits": train[-1]["bits"],
          "valid_bits": valid["bits"],
          "per_class": {k[5:]: v for k, v in valid.items()
                        if k.startswith("bits/")},
          "seconds": sum(r["seconds"] for r in train),
          "revision": sessions[-1]["code_revision"]}


def test_report_tables_match_the_runs(two_runs, tmp_path, capsys):
  out = tmp_path / "report"
  assert report_cli.main(["--workdir", *two_runs, "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  with open(out / "report.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == two_runs
  assert [r["seed"] for r in rows] == ["0", "1"]
  assert rows[0]["train_bits"] != rows[1]["train_bits"]  # the seed matters.
  for row, workdir in zip(rows, two_runs):
    want = expected_row(workdir)
    assert row["config"] == "tiny"
    assert int(row["steps"]) == want["steps"] == WINDOWS_PER_BATCH
    assert float(row["train_bits"]) == pytest.approx(want["train_bits"])
    assert float(row["valid_bits"]) == pytest.approx(want["valid_bits"])
    assert set(want["per_class"]) == {"bells", "organ", "wind"}
    for name, bits in want["per_class"].items():
      assert float(row[f"valid/{name}"]) == pytest.approx(bits)
    assert float(row["train_seconds"]) == pytest.approx(want["seconds"])
    assert row["code_revision"] == want["revision"]
  # Test bits only where the test split was evaluated.
  scored_path, = pathlib.Path(two_runs[1]).glob("eval_test_step*.json")
  scored = json.loads(scored_path.read_text())
  assert rows[0]["test_bits"] == ""
  assert float(rows[1]["test_bits"]) == pytest.approx(scored["bits"])
  # The Markdown table: printed and written, a header, a rule, a row per run.
  table = (out / "report.md").read_text().strip()
  assert table in printed
  lines = table.splitlines()
  assert len(lines) == 4
  assert "valid bells" in lines[0] and "test bits" in lines[0]
  assert f"{float(rows[1]['test_bits']):.3f}" in lines[3]
  assert f"{float(rows[0]['valid/organ']):.3f}" in lines[2]
  assert (out / "report_loss.png").stat().st_size > 1000


def test_report_default_out_is_the_runs_folder_and_rejects_non_runs(
    two_runs, tmp_path, capsys):
  parent = pathlib.Path(two_runs[0]).parent
  assert report_cli.main(["--workdir", *two_runs[:1]]) == 0
  assert (parent / "report.csv").is_file()
  assert report_cli.main(["--workdir", str(tmp_path)]) == 2
  assert "not a run directory" in capsys.readouterr().err


def test_report_on_a_parameters_only_run(tiny_dataset, tmp_path):
  """A run as the PyTorch importer writes it (config, one provenance
  session, a params checkpoint, no metrics) is a row with no training
  figures and its session's code revision; the evaluation the importer's
  user runs next fills in its test bits."""
  config = tiny_run_config(tiny_dataset)
  _, params = M.build(config.model, 0)
  record = provenance.collect(seed=config.seed)
  workdir = str(tmp_path / "imported")
  os.makedirs(workdir)
  rundir.write_config(workdir, config)
  rundir.append_session(workdir, record)
  checkpoint_lib.save_params(workdir, params)
  sessions, problem = rundir.read_sessions(workdir)
  assert problem is None and sessions == [json.loads(json.dumps(
      record, default=str))]
  evaluate.evaluate_run(workdir, "test")
  out = tmp_path / "report"
  assert report_cli.main(["--workdir", workdir, "--out", str(out)]) == 0
  with open(out / "report.csv", newline="") as f:
    row, = csv.DictReader(f)
  assert row["steps"] == "0" and row["train_bits"] == row["valid_bits"] == ""
  assert row["code_revision"] == (record["code_revision"] or "")
  scored, = pathlib.Path(workdir).glob("eval_test_step0.json")
  assert float(row["test_bits"]) == pytest.approx(
      json.loads(scored.read_text())["bits"])
