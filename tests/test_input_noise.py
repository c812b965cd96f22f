"""Input-noise augmentation: what the model reads moves by a few levels at a
given rate, reproducibly from the row keys; what it is scored on never does."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from csrnn_jax import augment
from csrnn_jax import configlib
from csrnn_jax import model as M
from csrnn_jax import trainer
from helpers import make, random_x


def train_cfg(rate, levels=2):
  return configlib.TrainConfig(input_noise=rate, input_noise_levels=levels)


def noisy(rate, levels, x_BxW, seed=0):
  keys_B = augment.row_keys(jax.random.key(seed), x_BxW.shape[0])
  return np.asarray(augment.add_input_noise(keys_B, jnp.asarray(x_BxW), rate,
                                            levels, 256))


def test_rate_and_size_of_the_moves():
  rate, levels = 0.3, 3
  # Levels away from the ends, so that clipping never hides a move.
  x = np.asarray(random_x(64, 2000, q=236, seed=2)) + 10
  moved = noisy(rate, levels, x) - x
  n = moved.size
  # 128,000 Bernoulli(0.3) draws: the share is within 4 sigma = 0.005.
  assert abs(np.mean(moved != 0) - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
  steps, counts = np.unique(moved[moved != 0], return_counts=True)
  np.testing.assert_array_equal(steps, [-3, -2, -1, 1, 2, 3])
  # Uniform over the 6 moves: each count ~ 6,400 +- 80 (sigma); 5 sigma.
  expected = (moved != 0).sum() / 6
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_clipped_to_the_level_range():
  x = np.array([[0] * 500 + [255] * 500])
  out = noisy(1.0, 4, x)
  assert out.min() >= 0 and out.max() <= 255
  assert np.all(out[0, :500] >= 0) and np.any(out[0, :500] > 0)
  assert np.any(out[0, 500:] < 255)


def test_zero_rate_is_the_identity_and_draws_follow_the_keys():
  x = np.asarray(random_x(8, 300, seed=3))
  np.testing.assert_array_equal(noisy(0.0, 2, x), x)
  np.testing.assert_array_equal(noisy(0.5, 2, x, seed=1), noisy(0.5, 2, x,
                                                                 seed=1))
  assert np.mean(noisy(0.5, 2, x, seed=1) != noisy(0.5, 2, x, seed=2)) > 0.2
  # A row's noise depends only on its own key: reversing the rows and their
  # keys together reverses the output.
  keys_B = augment.row_keys(jax.random.key(1), 8)
  forward = augment.add_input_noise(keys_B, jnp.asarray(x), 0.5, 2, 256)
  backward = augment.add_input_noise(keys_B[::-1], jnp.asarray(x[::-1]), 0.5,
                                     2, 256)
  np.testing.assert_array_equal(forward, backward[::-1])


@pytest.mark.parametrize("rate,levels,match", [
    (1.5, 2, r"train.input_noise=1.5 must be in \[0, 1\]"),
    (0.1, 0, "train.input_noise_levels=0 must be an integer >= 1"),
])
def test_bad_settings_name_the_key(rate, levels, match):
  with pytest.raises(ValueError, match=match):
    augment.make(train_cfg(rate, levels))


def test_window_step_reads_noisy_inputs_and_scores_the_clean_window():
  cfg = M.ModelConfig(frame_sizes=(2, 4, 8), dim=8, cond_dim=2)
  graphdef, params = make(cfg)
  lookback, b = cfg.lookback, 4
  window = random_x(b, lookback + 16, seed=4)
  cond, mask = jnp.eye(2)[jnp.arange(b) % 2], jnp.ones(b)
  key, chunk_key = jax.random.key(7), jax.random.key(8)
  m = M.bind(graphdef, params)
  carry = m.initial_carry(b)
  tx = optax.sgd(0.1)

  def run(rate):
    step = jax.jit(trainer.make_window_step(
        graphdef, tx, lookback, augment=augment.make(train_cfg(rate))))
    return step(params, tx.init(params), carry, jnp.asarray(True), window,
                cond, mask, key, chunk_key)

  @jax.jit
  def nll(inputs, targets):
    logits, _ = m.forward(inputs, cond, carry)
    return jnp.mean(M.token_nll(logits, targets[:, lookback:]))

  bits = lambda inputs, targets: float(nll(inputs, targets)) / np.log(2)

  inputs = augment.add_input_noise(augment.row_keys(key, b), window, 1.0, 2,
                                   256)
  assert np.mean(np.asarray(inputs) != np.asarray(window)) > 0.9
  noisy_params, _, _, noisy_metrics = run(1.0)
  clean_params, _, _, clean_metrics = run(0.0)
  # The same float32 operations inside and outside jit, up to XLA's summation
  # order over 64 terms of ~8 bits: 1e-5 relative.
  np.testing.assert_allclose(clean_metrics["bits"], bits(window, window),
                             rtol=1e-5)
  np.testing.assert_allclose(noisy_metrics["bits"], bits(inputs, window),
                             rtol=1e-5)
  # Scored against the clean window, not against what the model read.
  assert abs(float(noisy_metrics["bits"]) - bits(inputs, inputs)) > 1e-3
  changed = [float(jnp.abs(a - c).max()) for a, c in zip(
      jax.tree_util.tree_leaves(noisy_params),
      jax.tree_util.tree_leaves(clean_params))]
  assert max(changed) > 1e-4  # the noise changed the gradient
