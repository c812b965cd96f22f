"""metrics.jsonl: records appended and read back, a half-written last line
ignored, and on resume the lines past the restored step dropped (a run
killed between logging and its checkpoint repeats those steps)."""
import sys

import pytest

from csrnn_jax import metrics as metrics_lib
from csrnn_jax import rundir


def test_records_round_trip_and_a_resume_drops_what_it_repeats(tmp_path):
  workdir = str(tmp_path)
  log = metrics_lib.MetricsWriter(workdir, 0, tensorboard=False)
  for step in (10, 20, 30):
    log.write(step, "train", {"bits": 8.0 - step / 10})
  log.write(20, "valid", {"bits": 7.5, "bits/bells": 7.0})
  log.close()
  path = rundir.metrics_path(workdir)
  records = metrics_lib.read(path)
  assert [(r["step"], r["kind"]) for r in records] == [
      (10, "train"), (20, "train"), (30, "train"), (20, "valid")]
  assert records[3]["bits/bells"] == 7.0
  with open(path, "a") as f:
    f.write('{"step": 40, "kind": "tra')  # killed mid-write
  assert len(metrics_lib.read(path)) == 4
  resumed = metrics_lib.MetricsWriter(workdir, 20, tensorboard=False)
  resumed.write(30, "train", {"bits": 4.5})
  resumed.close()
  assert [(r["step"], r["kind"], r["bits"]) for r in metrics_lib.read(path)] \
      == [(10, "train", 7.0), (20, "train", 6.0), (20, "valid", 7.5),
          (30, "train", 4.5)]


def test_a_writer_of_another_process_writes_nothing(tmp_path):
  log = metrics_lib.MetricsWriter(str(tmp_path), 0, tensorboard=True,
                                  enabled=False)
  log.write(1, "train", {"bits": 1.0})
  log.close()
  assert metrics_lib.read(rundir.metrics_path(str(tmp_path))) == []
  assert list(tmp_path.iterdir()) == []


def test_missing_tensorboardx_is_one_warning_and_json_lines_still(
    tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  monkeypatch.setattr(metrics_lib, "_warned", [])
  for name in ("a", "b"):
    (tmp_path / name).mkdir()
    log = metrics_lib.MetricsWriter(str(tmp_path / name), 0, tensorboard=True)
    log.write(1, "train", {"bits": 1.0})
    log.close()
  assert capsys.readouterr().err.count("tensorboardX is not installed") == 1
  assert metrics_lib.read(rundir.metrics_path(str(tmp_path / "b")))[0][
      "bits"] == pytest.approx(1.0)
