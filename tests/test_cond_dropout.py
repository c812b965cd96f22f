"""The null condition (zeros or learned, owned by the model) and condition
dropout in training (per chunk, from the chunk's row keys)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from csrnn_jax import augment
from csrnn_jax import configlib
from csrnn_jax import model as M
from csrnn_jax import trainer
from csrnn_jax.interop import torch_import
from helpers import assert_trees_equal_to_rounding

CFG = M.ModelConfig(frame_sizes=(4, 4, 16), dim=8, cond_dim=3)
LEARNED = M.ModelConfig(frame_sizes=(4, 4, 16), dim=8, cond_dim=3,
                        null_cond="learned")


def copy(params):  # the chunk step donates its params
  return jax.tree_util.tree_map(jnp.copy, params)


def train_cfg(rate):
  return configlib.TrainConfig(cond_dropout=rate)  # every other option off


def test_null_condition_zeros_adds_no_parameter_and_learned_one_does():
  zeros = M.bind(*M.build(CFG, 0))
  np.testing.assert_array_equal(zeros.null_condition(2), np.zeros((2, 3)))
  graphdef, params = M.build(LEARNED, 0)
  plain_params = M.build(CFG, 0)[1]
  assert set(params) - set(plain_params) == {"null_cond"}
  np.testing.assert_array_equal(params["null_cond"], np.zeros(3))
  params["null_cond"] = jnp.array([0.5, -1.0, 2.0])
  np.testing.assert_array_equal(M.bind(graphdef, params).null_condition(2),
                                [[0.5, -1.0, 2.0]] * 2)
  # Folding weight norm (generation) keeps it.
  folded = M.bind(*M.fold_weight_norm(graphdef, params))
  np.testing.assert_array_equal(folded.null_condition(1), [[0.5, -1.0, 2.0]])
  # The original PyTorch code has no null condition: export refuses it.
  with pytest.raises(ValueError, match="no counterpart.*null_cond"):
    torch_import.params_to_torch(params, LEARNED)
  with pytest.raises(ValueError, match="null_cond='none'.*zeros, learned"):
    M.ModelConfig(null_cond="none")


def drop(rate, chunk_keys_B, cond_BxC, m=None):
  m = m or M.bind(*M.build(CFG, 0))
  window_keys_B = augment.row_keys(jax.random.key(99), len(cond_BxC))
  return augment.make(train_cfg(rate))(m, window_keys_B, chunk_keys_B, None,
                                       cond_BxC)[1]


def test_cond_dropout_rate_reproducible_and_per_chunk():
  rows = 4000
  cond = jnp.ones((rows, 3))
  keys = augment.row_keys(jax.random.key(0), rows)
  dropped = np.asarray(drop(0.2, keys, cond))
  is_null = np.all(dropped == 0, axis=1)
  assert np.all(is_null | np.all(dropped == 1, axis=1))  # whole rows
  # Binomial(4000, 0.2): standard deviation 0.0063 in the share; 0.03 is
  # almost 5 of them.
  assert abs(is_null.mean() - 0.2) < 0.03
  np.testing.assert_array_equal(drop(0.2, keys, cond), dropped)
  other = np.all(np.asarray(drop(0.2, augment.row_keys(
      jax.random.key(1), rows), cond)) == 0, axis=1)
  assert 0.5 < np.mean(other == is_null) < 0.8  # other keys, other rows
  # The decision depends on the chunk keys only, not the window's keys.
  m = M.bind(*M.build(CFG, 0))
  again = augment.make(train_cfg(0.2))(
      m, augment.row_keys(jax.random.key(5), rows), keys, None, cond)[1]
  np.testing.assert_array_equal(again, dropped)
  assert drop(0.0, keys, cond) is cond
  with pytest.raises(ValueError, match="cond_dropout=1.0 must be in"):
    augment.make(train_cfg(1.0))


@pytest.mark.parametrize("scan", [True, False])
def test_the_trainer_keeps_a_chunks_decision_in_all_its_windows(scan):
  """Training with dropout equals training without it on the condition that
  ``fold_in(key, 1)``'s row keys drop once for the whole chunk batch."""
  graphdef, params = M.build(CFG, 0)
  x_NxBxW = jax.random.randint(jax.random.key(1), (2, 8, 16 + 32), 0, 256)
  cond = jnp.eye(3)[np.arange(8) % 3]
  tx, key = optax.sgd(0.1), jax.random.key(4)
  dropped = drop(0.5, augment.row_keys(jax.random.fold_in(key, 1), 8), cond)
  assert 0 < np.all(np.asarray(dropped) == 0, axis=1).sum() < 8
  with_dropout = trainer.make_chunk_step(
      graphdef, tx, CFG.lookback, scan, augment=augment.make(train_cfg(0.5)))
  plain = trainer.make_chunk_step(graphdef, tx, CFG.lookback, scan)
  a, _, _ = with_dropout(copy(params), tx.init(params), x_NxBxW, cond,
                         jnp.ones(8), key)
  b, _, _ = plain(copy(params), tx.init(params), x_NxBxW, dropped,
                  jnp.ones(8), key)
  assert_trees_equal_to_rounding(a, b)


def test_dropped_chunks_train_the_learned_null():
  graphdef, params = M.build(LEARNED, 0)
  x_NxBxW = jax.random.randint(jax.random.key(1), (1, 8, 16 + 32), 0, 256)
  tx = optax.sgd(1.0)
  step = trainer.make_chunk_step(graphdef, tx, LEARNED.lookback,
                                 augment=augment.make(train_cfg(0.5)))
  new, _, _ = step(copy(params), tx.init(params), x_NxBxW,
                   jnp.eye(3)[np.arange(8) % 3], jnp.ones(8), jax.random.key(0))
  assert np.abs(np.asarray(new["null_cond"])).max() > 0
