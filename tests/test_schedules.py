"""Learning-rate schedules (constant, cosine, exponential, plateau) and early
stopping on the validation NLL."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import trainer
from helpers import tiny_config, train_run


def train_cfg(**keys):
  return configlib.TrainConfig(**{"learning_rate": 0.1, **keys})


def adam_step_sizes(t, losses):
  """|update| of one weight whose gradient is always 1: Adam's normalised
  step is 1, so each update is the learning rate times the plateau scale."""
  tx = trainer.make_optimizer(t)
  params = {"w": jnp.zeros(1)}
  state = tx.init(params)
  update = jax.jit(tx.update)  # eagerly, each of its ops compiles alone
  sizes = []
  for loss in losses:
    updates, state = update({"w": jnp.ones(1)}, state, params,
                            value=jnp.float32(loss))
    sizes.append(float(-updates["w"][0]))
  return np.array(sizes)


def test_schedules_give_their_learning_rate_at_a_few_steps():
  assert trainer.learning_rate(train_cfg()) == 0.1
  cosine = trainer.learning_rate(train_cfg(lr_schedule="cosine",
                                           warmup_steps=10, num_steps=110))
  assert [float(cosine(s)) for s in (0, 5, 10)] == pytest.approx(
      [0.0, 0.05, 0.1])
  assert float(cosine(60)) == pytest.approx(0.05)  # half way down
  exponential = trainer.learning_rate(train_cfg(
      lr_schedule="exponential", lr_decay_steps=100, lr_decay_rate=0.5,
      lr_decay_begin=50))
  for step, want in ((0, 0.1), (50, 0.1), (150, 0.05), (250, 0.025),
                     (100, 0.1 * 0.5 ** 0.5)):
    assert float(exponential(step)) == pytest.approx(want, rel=1e-6)
  with pytest.raises(ValueError, match="allowed values: constant, cosine, "
                                       "exponential, plateau"):
    trainer.learning_rate(train_cfg(lr_schedule="step"))


def test_plateau_halves_the_step_after_patience_averages_without_gain():
  """Averages of 3 steps; the first sets the best, two more without a gain
  (steps 6 and 9) halve the scale from step 9 on, two more quarter it."""
  t = train_cfg(lr_schedule="plateau", lr_plateau_factor=0.5,
                lr_plateau_patience=2, lr_plateau_steps=3)
  # Adam's step is 1 - O(1e-5) (its epsilon over sqrt(v) of 1).
  flat = adam_step_sizes(t, [5.0] * 15)
  np.testing.assert_allclose(flat, [0.1] * 8 + [0.05] * 6 + [0.025],
                             rtol=1e-4)
  falling = adam_step_sizes(t, np.linspace(5.0, 1.0, 15))
  np.testing.assert_allclose(falling, [0.1] * 15, rtol=1e-4)


def test_plateau_state_resumes_from_a_checkpoint(tiny_dataset, tmp_path):
  """The plateau's scale lives in the optimizer state: a run stopped and
  resumed ends with the same state as one that did not stop."""
  config = tiny_config(tiny_dataset, num_steps=1, seq_len=8000,
                       eval_every=0, lr_schedule="plateau",
                       lr_plateau_steps=1, lr_plateau_patience=0)
  resumed, whole = str(tmp_path / "resumed"), str(tmp_path / "whole")
  train_run(config, resumed)
  config.train.num_steps = 2
  train_run(config, resumed)
  train_run(config, whole)
  states = []
  for workdir in (resumed, whole):
    ckpt = checkpoint_lib.Checkpointer(workdir)
    _, _, _, params, _ = checkpoint_lib.load_run(workdir, "latest")
    tx = trainer.make_optimizer(config.train)
    _, opt_state, _ = ckpt.restore("latest", params, tx.init(params))
    ckpt.close()
    states.append(opt_state[-1])
  assert float(states[0].scale) == float(states[1].scale) < 1.0
  assert int(states[0].count) == int(states[1].count)


def test_early_stopping_ends_a_run_whose_valid_nll_stops_improving(
    tiny_dataset, tmp_path, capsys):
  """Learning rate 0: every evaluation scores the first one's NLL, which is
  no gain, so patience 2 stops the run at the third evaluation (step 3)."""
  workdir = str(tmp_path / "early")
  config = tiny_config(tiny_dataset, num_steps=50, seq_len=8000,
                       eval_every=1, learning_rate=0.0,
                       early_stop_patience=2)
  result = train_run(config, workdir)
  assert result["step"] == 3 and result["stopped_early"]
  out = capsys.readouterr().out
  assert ("Stopped early at step 3: the validation NLL did not improve for 2 "
          "evaluations (train.early_stop_patience=2); the best") in out
  assert "at step 1, is kept as --step best" in out
  records = metrics_lib.read(f"{workdir}/metrics.jsonl")
  stops = [r for r in records if r["kind"] == "early_stop"]
  assert len(stops) == 1 and stops[0]["step"] == 3
  assert stops[0]["best_step"] == 1
  assert stops[0]["evaluations_without_improvement"] == 2
  valid = [r["bits"] for r in records if r["kind"] == "valid"]
  assert len(valid) == 3 and valid[0] == valid[1] == valid[2]
  ckpt = checkpoint_lib.Checkpointer(workdir)
  assert ckpt.latest_step() == 3 and ckpt.resolve("best") == 1
  ckpt.close()

  # Rerunning the stopped run trains nothing more: the count was saved.
  again = train_run(config, workdir)
  assert again["step"] == 3 and again["stopped_early"]
  assert len(metrics_lib.read(f"{workdir}/metrics.jsonl")) == len(records)

  # A gain larger than min_delta resets the count; lr 0 never gains.
  plateau = {"best": None, "best_step": None, "since": 0}
  t = train_cfg(early_stop_patience=2, early_stop_min_delta=0.1)
  assert not trainer.early_stop_update(plateau, 5.0, 10, t)
  assert not trainer.early_stop_update(plateau, 4.95, 20, t)  # < min_delta
  assert not trainer.early_stop_update(plateau, 4.8, 30, t)  # a gain
  assert plateau == {"best": 4.8, "best_step": 30, "since": 0}
  assert not trainer.early_stop_update(plateau, 4.8, 40, t)
  assert trainer.early_stop_update(plateau, 4.9, 50, t)
