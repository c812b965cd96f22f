"""Ctrl-C: the first signal stops after the chunk batch in progress, saves
it and skips validation and samples; a second one drops the chunk batch in
progress (the wait for it is cut short)."""
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import console
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import trainer

pytestmark = pytest.mark.slow  # subprocesses end to end

REPO = pathlib.Path(__file__).resolve().parents[1]
# Generating this much audio per class took the old stop path (a final
# validation and samples after the signal) well over a minute here.
SAMPLE_SECONDS = 30
# A stop without them trains the tiny chunk batch in progress (well under a
# second) and saves a tiny checkpoint (about a second); the rest is room for
# a loaded 2-core machine.
STOP_SECONDS = 20


def test_sigint_saves_the_chunk_batch_and_skips_validation_and_samples(
    tiny_dataset, tmp_path):
  workdir = tmp_path / "run"
  never = 10 ** 6  # reached only by the stop: what the signal must skip
  cmd = [sys.executable, str(REPO / "train.py"), "--config=tiny",
         f"--config.data.dataset_dir={tiny_dataset}",
         "--config.train.num_steps=100000", f"--config.train.eval_every={never}",
         f"--config.train.checkpoint_every={never}",
         f"--config.train.sample_every={never}",
         f"--config.train.sample_seconds={SAMPLE_SECONDS}",
         f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics_path = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if metrics_path.exists() and '"train"' in metrics_path.read_text():
      break
    time.sleep(0.05)
  signalled = time.monotonic()
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  elapsed = time.monotonic() - signalled
  assert proc.returncode == 75, err[-2000:]
  assert elapsed < STOP_SECONDS
  assert "SIGINT received: stopping after this chunk batch and saving it" in (
      out)
  assert "Stopped by signal 2 (SIGINT)" in out

  records = metrics_lib.read(str(metrics_path))
  assert [r for r in records if r["kind"] == "valid"] == []
  assert not (workdir / "train_samples").exists()
  last_step = [r["step"] for r in records if r["kind"] == "train"][-1]
  assert f"the latest checkpoint is at step {last_step}" in out
  # The checkpoint is whole: it restores, with the data position to resume.
  _, _, _, _, step = checkpoint_lib.load_run(str(workdir), "latest")
  assert step == last_step
  meta = checkpoint_lib.Checkpointer(str(workdir)).read_meta(step)
  assert meta["data_position"] and not meta["sampled"]


@jax.jit
def _seconds_of_work(x):
  """About 2 s of dependent matmuls on 2 CPU cores (0.8 s per 300)."""
  return jax.lax.fori_loop(0, 800, lambda i, a: jnp.tanh(a @ a), x)


def _signals_after(delays):
  def send():
    for delay in delays:
      time.sleep(delay)
      os.kill(os.getpid(), signal.SIGINT)
  thread = threading.Thread(target=send)
  thread.start()
  return thread


@pytest.fixture
def stop():
  handler = trainer._Stop(console.Progress(1, 0, enabled=False))
  previous = signal.signal(signal.SIGINT, handler)
  yield handler
  signal.signal(signal.SIGINT, previous)


def test_one_signal_lets_the_chunk_batch_finish(stop):
  result = _seconds_of_work(jnp.eye(512) * 0.5)
  sender = _signals_after([0.05])
  with stop.abandonable(2):
    trainer._wait(result)
  sender.join()
  assert stop.count == 1 and stop.signum == signal.SIGINT
  assert result.is_ready()


def test_a_second_signal_cuts_the_wait_for_the_chunk_batch_short(stop):
  result = _seconds_of_work(jnp.eye(512) * 0.5)
  sender = _signals_after([0.05, 0.05])
  with pytest.raises(trainer.Abandoned):
    with stop.abandonable(2):
      trainer._wait(result)
  abandoned_before_done = not result.is_ready()
  sender.join()
  result.block_until_ready()  # leave no work behind for the next test
  assert abandoned_before_done and stop.count == 2
  # A block entered after the signals is cut short at once.
  with pytest.raises(trainer.Abandoned):
    with stop.abandonable(1):
      pass
