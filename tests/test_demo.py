"""The demo pipeline of `make demo` end to end at a tiny size: the real
bundled data, prepare, train, sample, evaluate; a second run reuses/resumes."""
import json
import pathlib
import subprocess
import sys

import pytest
import soundfile as sf

pytestmark = pytest.mark.slow  # subprocesses end to end

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_demo_run(tmp_path):
  return subprocess.run(
      ["make", "-s", "demo-run", f"PY={sys.executable}",
       f"DEMO_DATA={tmp_path / 'data'}", f"DEMO_RUN={tmp_path / 'run'}",
       "DEMO_SECONDS=1",
       "DEMO_FLAGS=--config.model.dim=16 --config.train.num_steps=2 "
       "--config.train.eval_every=2 --config.train.seq_len=256"],
      cwd=REPO, capture_output=True, text=True, timeout=600)


def test_demo_pipeline_tiny(tmp_path):
  first = make_demo_run(tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  run = tmp_path / "run"
  wavs = sorted((run / "samples" / "demo").glob("*.wav"))
  assert [w.name.split("_")[0] for w in wavs] == ["piano"] * 2 + ["violin"] * 2
  assert all(sf.info(str(w)).frames == 16000 for w in wavs)
  for name in ("loss_curve.png", "samples/demo/spectrograms.png",
               "samples/demo/audio_eval.md"):
    assert (run / name).stat().st_size > 0
  assert "| piano |" in first.stdout and "| violin |" in first.stdout
  assert "Demo outputs:" in first.stdout
  manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
  assert manifest["options"]["trim_db"] == -36.0  # the recipe's preparation
  second = make_demo_run(tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Reusing the prepared demo data" in second.stdout
  assert "Resuming" in second.stdout
