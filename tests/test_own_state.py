"""Training from the model's own states (``train.own_state_share``): the
schedule, the generated start, and a chunk step that starts from it."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from csrnn_jax import model as M
from csrnn_jax import own_state
from csrnn_jax import sampling
from csrnn_jax import trainer
from helpers import forward, make, random_x

CFG = M.ModelConfig(frame_sizes=(4, 4, 16), dim=8, cond_dim=3)
LOOKBACK = CFG.lookback  # 16


def copy(params):  # the chunk step donates its params
  return jax.tree_util.tree_map(jnp.copy, params)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.3, 0.5, 0.75, 1.0])
def test_schedule_gives_the_share_spread_evenly(share):
  flags = [own_state.scheduled(k, share) for k in range(40)]
  for n in range(1, 41):  # every prefix holds its share, rounded down
    assert sum(flags[:n]) == math.floor(n * share + 1e-9)
  if share == 0.5:
    assert flags[:6] == [False, True] * 3


def test_bad_share_or_length_is_named():
  graphdef, params = make(CFG)
  with pytest.raises(ValueError, match="own_state_share=1.5 must be in"):
    own_state.OwnStarts(graphdef, params, 1.5, 100)
  with pytest.raises(ValueError, match="own_state_seconds must be > 0"):
    own_state.OwnStarts(graphdef, params, 0.5, 0)


def test_own_start_is_the_generators_state_and_only_the_context_changes():
  graphdef, params = make(CFG)
  cond_BxC = np.eye(3, dtype=np.float32)[[0, 2]]
  windows_NxBxW = np.asarray(random_x(2, 3 * (LOOKBACK + 32))).reshape(
      3, 2, LOOKBACK + 32)
  made_with = copy(params)
  starts = own_state.OwnStarts(graphdef, made_with, 0.5, 100)
  for leaf in jax.tree_util.tree_leaves(made_with):
    leaf.delete()  # as training donates them
  key = jax.random.key(7)

  # Chunk batch 0 is not scheduled at share 0.5: h0, windows untouched.
  same, carry, from_h0 = starts(0, params, windows_NxBxW, cond_BxC, key)
  assert bool(from_h0)
  np.testing.assert_array_equal(same, windows_NxBxW)
  h0 = M.bind(graphdef, params).initial_carry(2)
  for c, h in zip(jax.tree_util.tree_leaves(carry),
                  jax.tree_util.tree_leaves(h0)):
    assert c.shape == h.shape and not c.any()

  # Chunk batch 1 is: 100 samples round up to 7 top frames (112 samples) of
  # plain sampling with the rows' seeds, as Generator.generate draws them.
  changed, carry, from_h0 = starts(1, params, windows_NxBxW, cond_BxC, key)
  assert not bool(from_h0)
  seeds_B = np.asarray(jax.random.randint(key, (2,), 0, 2 ** 31 - 1))
  generator = sampling.Generator(graphdef, params)
  audio_BxS, _ = generator.generate(cond_BxC, seeds_B, 144)
  np.testing.assert_array_equal(changed[0, :, :LOOKBACK],
                                audio_BxS[:, 112 - LOOKBACK:112])
  np.testing.assert_array_equal(changed[0, :, LOOKBACK:],
                                windows_NxBxW[0, :, LOOKBACK:])  # targets
  np.testing.assert_array_equal(changed[1:], windows_NxBxW[1:])
  # The carry is the state that audio led to: generation continued from it
  # draws the longer generation's next two top frames.
  plan = generator.plan(cond_BxC, seeds_B, 144, segment_frames=2)
  state = sampling.GenState(carry, changed[0, :, :LOOKBACK])
  _, next_BxS, _ = generator.segment(plan, state, np.arange(7, 9),
                                     start_index=112)
  np.testing.assert_array_equal(next_BxS, audio_BxS[:, 112:])


@pytest.mark.parametrize("scan", [True, False])
def test_chunk_step_starts_from_the_given_carry_or_from_h0(scan):
  """Learning rate 0: each window's loss is the carried forward pass's, from
  ``carry`` at the first window unless from_h0. With from_h0 the step is the
  plain chunk step's."""
  graphdef, params = make(CFG)
  cond_BxC = np.eye(3, dtype=np.float32)[[0, 1, 2]]
  windows_NxBxW = np.asarray(random_x(3, 2 * (LOOKBACK + 32))).reshape(
      2, 3, LOOKBACK + 32)
  mask_B = np.ones(3, np.float32)
  key = jax.random.key(0)
  rng = np.random.default_rng(3)
  h0 = M.bind(graphdef, params).initial_carry(3)
  start = jax.tree_util.tree_map(
      lambda h: rng.standard_normal(h.shape).astype(np.float32), h0)
  tx = optax.sgd(0.0)
  plain = trainer.make_chunk_step(graphdef, tx, LOOKBACK, scan)
  own = trainer.make_chunk_step(graphdef, tx, LOOKBACK, scan, own_starts=True)

  def bits_from(carry):
    bits_N = []
    for window_BxW in windows_NxBxW:
      logits, carry = forward(graphdef, params, window_BxW, cond_BxC, carry)
      nll = M.token_nll(logits, window_BxW[:, LOOKBACK:])
      bits_N.append(float(jnp.mean(nll)) / np.log(2))
    return bits_N

  _, _, from_carry = own(copy(params), tx.init(params), windows_NxBxW,
                         cond_BxC, mask_B, key, start, np.asarray(False))
  # The same float32 forward pass inside and outside the scan: 1e-5 relative.
  np.testing.assert_allclose(from_carry["bits"], bits_from(start), rtol=1e-5)
  assert np.abs(np.array(bits_from(None)) - from_carry["bits"]).min() > 1e-3

  _, _, from_h0 = own(copy(params), tx.init(params), windows_NxBxW, cond_BxC,
                      mask_B, key, start, np.asarray(True))
  _, _, reference = plain(copy(params), tx.init(params), windows_NxBxW,
                          cond_BxC, mask_B, key)
  np.testing.assert_allclose(from_h0["bits"], reference["bits"], rtol=1e-5)


def test_an_own_start_trains_everything_but_h0():
  """h0 gets its gradient only where a chunk batch starts from it."""
  graphdef, params = make(CFG)
  cond_BxC = np.eye(3, dtype=np.float32)[[0, 1]]
  windows_NxBxW = np.asarray(random_x(2, LOOKBACK + 32))[None]
  h0 = M.bind(graphdef, params).initial_carry(2)
  tx = optax.sgd(1.0)
  own = trainer.make_chunk_step(graphdef, tx, LOOKBACK, own_starts=True)
  for from_h0 in (True, False):
    new, _, _ = own(copy(params), tx.init(params), windows_NxBxW, cond_BxC,
                    np.ones(2, np.float32), jax.random.key(0),
                    jax.tree_util.tree_map(np.asarray, h0),
                    np.asarray(from_h0))
    for i, old in params["frame_tiers"].items():
      moved = np.abs(np.asarray(new["frame_tiers"][i]["h0"])
                     - np.asarray(old["h0"])).max()
      assert (moved > 0) == from_h0
    assert np.abs(np.asarray(new["mlp"]["output"]["v"])
                  - np.asarray(params["mlp"]["output"]["v"])).max() > 0
