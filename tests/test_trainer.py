"""Training (docs/design.md §4): learning, resume bitwise, SIGKILL,
SIGTERM's exit status, divergence, config errors, scan vs
one-window-per-dispatch, the loss in bits, the hidden state carried across a
chunk batch's windows."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import data as data_lib
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import model as model_lib
from csrnn_jax import trainer
from csrnn_jax.cli import evaluate as evaluate_cli
from csrnn_jax.cli.train import resolve_config_path
from helpers import (REPO, WINDOWS_PER_BATCH, assert_trees_equal, final_params,
                     forward, forward_logits, randomize, tiny_config,
                     tiny_run_config, train_run)

@pytest.mark.slow
def test_tiny_model_learns_and_run_directory_is_complete(tiny_dataset,
                                                         tmp_path, capsys):
  config = tiny_config(tiny_dataset, num_steps=4 * WINDOWS_PER_BATCH,
                       eval_every=2 * WINDOWS_PER_BATCH,
                       sample_every=4 * WINDOWS_PER_BATCH, sample_seconds=0.05)
  result = train_run(config, tmp_path / "run")
  records = metrics_lib.read(str(tmp_path / "run" / "metrics.jsonl"))
  train = [r["bits"] for r in records if r["kind"] == "train"]
  valid = [r for r in records if r["kind"] == "valid"]
  assert len(train) == 4 and len(valid) == 2
  # Starts near log2(256) = 8 bits and drops by a clear margin.
  assert train[0] > 5.5 and train[-1] < train[0] - 1.0
  assert valid[-1]["bits"] < valid[0]["bits"]
  assert set(valid[-1]) >= {"bits/bells", "bits/organ", "bits/wind"}
  assert result["step"] == 4 * WINDOWS_PER_BATCH
  run = tmp_path / "run"
  for name in ("config.json", "provenance.json", "loss_curve.png"):
    assert (run / name).stat().st_size > 0
  saved = json.loads((run / "config.json").read_text())
  assert saved["model"]["cond_dim"] == 3
  assert saved["data"]["class_names"] == ["bells", "organ", "wind"]
  prov = json.loads((run / "provenance.json").read_text())["sessions"][0]
  assert prov["seed"] == 0 and len(prov["manifest_sha256"]) == 64
  assert prov["packages"]["jax"] == jax.__version__
  assert prov["matmul_precision"] == "highest"
  assert [r for r in records if r["kind"] == "compile"][0]["seconds"] > 0
  assert checkpoint_lib.Checkpointer(str(run)).latest_step() == result["step"]
  samples = run / "train_samples" / f"step{result['step']}"
  assert sorted(p.name for p in samples.glob("*.wav")) == [
      f"step{result['step']}_{name}" for name in (
          "bells_seed0_t1.wav", "organ_seed1_t1.wav", "wind_seed2_t1.wav")]
  assert (samples / "spectrograms.png").exists()

  assert evaluate_cli.main(["--workdir", str(run), "--split", "test"]) == 0
  out = capsys.readouterr().out
  for name in ("bells", "organ", "wind", "all"):
    assert f"| {name}" in out or f"| **{name}" in out
  written = json.loads((run / f"eval_test_step{result['step']}.json")
                       .read_text())
  assert 0 < written["bits"] < 8 and len(written["per_class"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("own_state_share", [0.0, 0.5])
def test_resume_is_bitwise_equal_to_uninterrupted(tiny_dataset, tmp_path,
                                                  own_state_share):
  """With own_state_share 0.5 the second chunk batch, the first of the
  resumed session, starts from a state generated with the restored
  parameters."""
  steps = 2 * WINDOWS_PER_BATCH
  config = tiny_config(tiny_dataset, num_steps=steps, eval_every=0,
                       checkpoint_every=WINDOWS_PER_BATCH,
                       own_state_share=own_state_share,
                       own_state_seconds=0.1)
  train_run(config, tmp_path / "whole")
  config.train.num_steps = WINDOWS_PER_BATCH
  train_run(config, tmp_path / "split")
  config.train.num_steps = steps
  train_run(config, tmp_path / "split")
  whole, whole_step = final_params(tmp_path / "whole")
  split, split_step = final_params(tmp_path / "split")
  assert whole_step == split_step == steps
  assert_trees_equal(whole, split)
  prov = json.loads((tmp_path / "split" / "provenance.json").read_text())
  assert len(prov["sessions"]) == 2
  # The log holds each step once.
  records = metrics_lib.read(str(tmp_path / "split" / "metrics.jsonl"))
  train = [r for r in records if r["kind"] == "train"]
  assert [r["step"] for r in train] == [WINDOWS_PER_BATCH,
                                        2 * WINDOWS_PER_BATCH]
  if own_state_share:
    assert [r["own_start"] for r in train] == [False, True]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_to_completion(tiny_dataset, tmp_path):
  workdir = tmp_path / "killed"
  steps = 12 * WINDOWS_PER_BATCH
  cmd = [sys.executable, str(REPO / "train.py"), "--config=tiny",
         f"--config.data.dataset_dir={tiny_dataset}",
         "--config.train.seq_len=1024",  # tiny_config's: W windows a batch
         f"--config.train.num_steps={steps}",
         f"--config.train.checkpoint_every={WINDOWS_PER_BATCH}",
         "--config.train.eval_every=0", f"--workdir={workdir}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  deadline = time.time() + 120
  ckpt_dir = workdir / "checkpoints"
  while time.time() < deadline:
    done = [p for p in ckpt_dir.glob("*") if p.name.isdigit()] if (
        ckpt_dir.exists()) else []
    if done or proc.poll() is not None:
      break
    time.sleep(0.05)
  assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = checkpoint_lib.Checkpointer(str(workdir)).latest_step()
  assert killed_at is not None and killed_at < steps
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"Resuming {workdir} from step {killed_at}" in done.stdout
  _, final_step = final_params(workdir)
  assert final_step == steps
  records = metrics_lib.read(str(workdir / "metrics.jsonl"))
  train_steps = [r["step"] for r in records if r["kind"] == "train"]
  assert train_steps == sorted(set(train_steps))
  assert train_steps[-1] == steps


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(tiny_dataset, tmp_path):
  workdir = tmp_path / "terminated"
  cmd = [sys.executable, str(REPO / "train.py"), "--config=tiny",
         f"--config.data.dataset_dir={tiny_dataset}",
         "--config.train.seq_len=1024",  # tiny_config's: W windows a batch
         "--config.train.num_steps=100000", "--config.train.eval_every=0",
         "--config.train.checkpoint_every=100000", f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  metrics_path = workdir / "metrics.jsonl"
  while time.time() < deadline and proc.poll() is None:
    if metrics_path.exists() and '"train"' in metrics_path.read_text():
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  # Not 0: `train && sample` must not go on as if training had finished.
  assert proc.returncode == os.EX_TEMPFAIL == 75, err[-2000:]
  assert "Stopped by signal 15" in out and "Rerun the same command" in out
  assert "Finished" not in out
  step = checkpoint_lib.Checkpointer(str(workdir)).latest_step()
  assert step is not None and step % WINDOWS_PER_BATCH == 0 and step > 0


@pytest.mark.parametrize("learning_rate,why", [
    # 1e30 sends the weights to ~1e30: the logits overflow to nan.
    (1e30, "the training loss became nan"),
    # 1e6 keeps the loss finite for a while (~1e27 bits) and the gradient
    # norm overflows: both past the guard's limits, long before a nan.
    (1e6, "(gradient norm became inf|loss reached .* bits per sample)"),
])
def test_divergence_stops_with_message_and_keeps_last_good_checkpoint(
    tiny_dataset, tmp_path, learning_rate, why):
  workdir = str(tmp_path / "diverged")
  config = tiny_config(tiny_dataset, num_steps=WINDOWS_PER_BATCH,
                       eval_every=WINDOWS_PER_BATCH, keep_checkpoints=1)
  train_run(config, workdir)
  good, good_step = final_params(workdir)
  config.train.learning_rate = learning_rate
  config.train.num_steps = 3 * WINDOWS_PER_BATCH
  config.train.checkpoint_every = 1  # a save after every chunk batch
  with pytest.raises(trainer.TrainingDiverged,
                     match=rf"{why} in the chunk batch after step {good_step}"
                           rf".*without saving; its last good checkpoint "
                           rf"\(step {good_step}\).*Lower train.learning_rate"):
    train_run(config, workdir)
  assert checkpoint_lib.Checkpointer(workdir).steps() == [good_step]
  params, step = final_params(workdir)
  assert step == good_step
  assert_trees_equal(params, good)
  records = metrics_lib.read(os.path.join(workdir, "metrics.jsonl"))
  assert max(r["step"] for r in records) == good_step  # nothing logged


def test_non_finite_parameters_after_the_last_window_are_not_saved(
    tiny_dataset, tmp_path):
  """One window per chunk batch: its loss and gradient are computed before
  the update, so only the parameters show that a learning rate of 1e39
  (inf in float32) broke them."""
  workdir = str(tmp_path / "inf")
  config = tiny_config(tiny_dataset, num_steps=1, seq_len=8000, eval_every=0)
  train_run(config, workdir)
  config.train.learning_rate = 1e39
  config.train.num_steps = 3
  with pytest.raises(trainer.TrainingDiverged,
                     match=r"the parameters or the optimizer state became "
                           r"non-finite in the chunk batch after step 1"):
    train_run(config, workdir)
  assert checkpoint_lib.Checkpointer(workdir).steps() == [1]


def test_divergence_names_each_cause():
  ok_N, q = np.array([8.0, 7.5]), 256
  assert trainer.divergence(ok_N, ok_N, True, q) is None
  assert "loss became inf" in trainer.divergence(
      np.array([7.0, np.inf]), ok_N, True, q)
  assert "gradient norm became nan" in trainer.divergence(
      ok_N, np.array([1.0, np.nan]), True, q)
  assert "parameters or the optimizer state" in trainer.divergence(
      ok_N, ok_N, False, q)
  # Twice the 8 bits of a uniform guess over 256 levels: finite, diverged.
  assert trainer.divergence(np.array([8.0, 15.9]), ok_N, True, q) is None
  assert "loss reached 16.1 bits per sample, more than 2 x log2(Q) = 16" in (
      trainer.divergence(np.array([8.0, 16.1]), ok_N, True, q))


def test_scan_and_one_window_per_dispatch_agree(tiny_dataset):
  config = tiny_run_config(tiny_dataset)
  mcfg = config.model
  stream = data_lib.BatchStream(str(tiny_dataset), "train", 4, 256,
                                mcfg.lookback, prefetch=0)
  batch = next(stream)
  windows = data_lib.windows(batch.x_BxT, 256, mcfg.lookback)[:6]
  results = []
  for scan in (True, False):
    graphdef, params = model_lib.build(mcfg, 0)
    tx = trainer.make_optimizer(config.train)
    step = trainer.make_chunk_step(graphdef, tx, mcfg.lookback, scan)
    params, _, metrics = step(params, tx.init(params), windows,
                              batch.cond_BxC, batch.mask_B, jax.random.key(0))
    results.append((params, np.asarray(metrics["bits"])))
  np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(results[0][0]),
                  jax.tree_util.tree_leaves(results[1][0])):
    np.testing.assert_allclose(a, b, atol=1e-5)


def one_batch(tiny_dataset, windows):
  config = tiny_run_config(tiny_dataset)
  mcfg = config.model
  stream = data_lib.BatchStream(str(tiny_dataset), "train", 4, 256,
                                mcfg.lookback, prefetch=0)
  batch = next(stream)
  return (mcfg, data_lib.windows(batch.x_BxT, 256, mcfg.lookback)[:windows],
          batch)


def test_window_step_differentiates_bits_like_the_reference(tiny_dataset):
  """With SGD at rate 1 the update is minus the gradient: the gradient of
  the mean NLL in bits (the reference's loss), not in nats, so that clipping
  at train.clip_value clips what the reference clips."""
  mcfg, windows, batch = one_batch(tiny_dataset, 1)
  graphdef, params = model_lib.build(mcfg, 0)
  m = model_lib.bind(graphdef, params)
  window, cond = windows[0], batch.cond_BxC

  @jax.jit
  def bits(p):
    logits = forward_logits(graphdef, p, window, cond)
    return jnp.mean(model_lib.token_nll(logits, window[:, mcfg.lookback:])
                    ) / np.log(2)

  want = jax.jit(jax.grad(bits))(params)
  tx = optax.sgd(1.0)
  step = jax.jit(trainer.make_window_step(graphdef, tx, mcfg.lookback))
  new, _, _, metrics = step(params, tx.init(params), m.initial_carry(4),
                            jnp.asarray(True), window, cond, batch.mask_B,
                            jax.random.key(0), jax.random.key(1))
  np.testing.assert_allclose(metrics["bits"], bits(params), rtol=1e-6)
  for p, n, g in zip(*(jax.tree_util.tree_leaves(t)
                       for t in (params, new, want))):
    # The same float32 graph in two programs: XLA's summation order
    # differs (1e-4 relative covers it), and p - (p - g) in float32 rounds
    # twice at the scale of p (4 eps |p|). Nats would be 1.44x off.
    p, n = np.asarray(p), np.asarray(n)
    np.testing.assert_allclose(
        p - n, g, rtol=1e-4,
        atol=4 * np.finfo(np.float32).eps * float(np.abs(p).max()))


def test_windows_of_a_chunk_batch_carry_the_hidden_state(tiny_dataset):
  """Learning rate 0: each window's loss is the carried forward pass's
  (h0 at the first window, then the state the previous window left), and
  differs from one that resets to h0 at every window."""
  mcfg, windows_NxBxW, batch = one_batch(tiny_dataset, 4)
  graphdef, params = model_lib.build(mcfg, 0)
  params = randomize(params, 0, scale=0.2)
  tx = optax.sgd(0.0)
  step = trainer.make_chunk_step(graphdef, tx, mcfg.lookback)
  _, _, metrics = step(jax.tree_util.tree_map(jnp.copy, params),
                       tx.init(params), windows_NxBxW, batch.cond_BxC,
                       batch.mask_B, jax.random.key(0))

  def window_bits(window, carry=None):
    logits, carry = forward(graphdef, params, window, batch.cond_BxC, carry)
    nll = model_lib.token_nll(logits, window[:, mcfg.lookback:])
    return float(jnp.mean(nll)) / np.log(2), carry

  carried_N, reset_N, carry = [], [], None
  for window in windows_NxBxW:
    bits, carry = window_bits(window, carry)
    carried_N.append(bits)
    reset_N.append(window_bits(window)[0])
  # The same float32 forward pass inside and outside the scan: 1e-5 relative.
  np.testing.assert_allclose(metrics["bits"], carried_N, rtol=1e-5)
  assert np.abs(np.array(reset_N[1:]) - carried_N[1:]).min() > 1e-3


def test_first_window_trains_learned_h0(tiny_dataset):
  config = tiny_run_config(tiny_dataset)
  mcfg = config.model
  graphdef, params = model_lib.build(mcfg, 0)
  stream = data_lib.BatchStream(str(tiny_dataset), "train", 4, 256,
                                mcfg.lookback, prefetch=0)
  batch = next(stream)
  windows = data_lib.windows(batch.x_BxT, 256, mcfg.lookback)[:2]
  tx = optax.sgd(1.0)
  step = trainer.make_chunk_step(graphdef, tx, mcfg.lookback)
  new, _, _ = step(params, tx.init(params), windows, batch.cond_BxC,
                   batch.mask_B, jax.random.key(0))
  for i in range(2):
    assert float(np.abs(new["frame_tiers"][i]["h0"]).max()) > 0


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.train.update({"bach_size": 3}),
     "'train.bach_size' does not exist; did you mean 'train.batch_size'\\?"),
    (lambda c: c.update({"modle": {}}), "'modle' does not exist"),
    (lambda c: setattr(c, "train", ml_collections.ConfigDict(
        {**c.train.to_dict(), "learning_rate": "fast"})),
     "'train.learning_rate' = 'fast' has type str; expected float"),
    (lambda c: setattr(c, "model", ml_collections.ConfigDict(
        {**c.model.to_dict(), "dim": 2.5})), "'model.dim' = 2.5 has type"),
    (lambda c: c.model.update({"frame_sizes": (4, 4, 15)}),
     "frame_sizes.*multiple"),
])
def test_config_errors_name_the_key(tiny_dataset, tmp_path, mutate, match):
  config = tiny_config(tiny_dataset)
  mutate(config)
  with pytest.raises(ValueError, match=match):
    train_run(config, tmp_path / "run")


def test_config_disagreeing_with_dataset_or_workdir(tiny_dataset, tmp_path):
  config = tiny_config(tiny_dataset, num_steps=1)
  config.model.cond_dim = 4
  with pytest.raises(ValueError, match="model.cond_dim=4 .* length 3"):
    train_run(config, tmp_path / "a")
  config = tiny_config(tiny_dataset, num_steps=1)
  config.data.class_names = ("happy", "sad", "wind")
  with pytest.raises(ValueError, match="has classes \\['bells', 'organ'"):
    train_run(config, tmp_path / "b")
  config = tiny_config(tiny_dataset, num_steps=1, eval_every=0)
  train_run(config, tmp_path / "c")
  config.model.dim = 48
  with pytest.raises(ValueError, match="holds a run with model=.*another "
                                       "--workdir"):
    train_run(config, tmp_path / "c")
  config = tiny_config(tmp_path / "missing")
  with pytest.raises(ValueError, match="missing: no such dataset folder.*csrnn-prepare"):
    train_run(config, tmp_path / "d")


def test_config_file_typo_in_type_is_caught_by_config_dict():
  config = configlib.base_config()
  with pytest.raises(TypeError, match="learning_rate"):
    config.train.learning_rate = "fast"


def test_config_names_resolve_to_files():
  assert resolve_config_path("tiny").endswith("configs/tiny.py")
  assert resolve_config_path("ambient.py").endswith("configs/ambient.py")
  with pytest.raises(SystemExit, match="known configs: .*ambient.*tiny"):
    resolve_config_path("ambiant")


@pytest.mark.slow
def test_cli_rejects_unknown_override(tiny_dataset, tmp_path):
  done = subprocess.run(
      [sys.executable, str(REPO / "train.py"), "--config=tiny",
       "--config.train.bach_size=3", f"--workdir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode != 0
  assert "bach_size" in done.stderr
