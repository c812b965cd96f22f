"""Mixed precision (``model.compute_dtype="bfloat16"``): each matmul within
the bound that rounding its operands to bfloat16 allows, the GRU backends
agreeing in bfloat16 too, and bf16 training within a stated NLL tolerance of
float32 on the tiny model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csrnn_jax import data as data_lib
from csrnn_jax import model as M
from csrnn_jax import numerics
from csrnn_jax import trainer
from csrnn_jax.kernels import gru
from helpers import gru_inputs, tiny_run_config

# Rounding to bfloat16 (8 significant bits, round to nearest) moves a value
# by at most 2^-9 relatively, so a product of two rounded operands moves by
# at most 2^-8 + 2^-18; the float32 accumulation of K terms adds at most
# K * 2^-24 of the terms' magnitudes.
def bf16_bound(abs_x, abs_w, k):
  return (2.0 ** -8 + 2.0 ** -18 + k * 2.0 ** -24) * (abs_x @ abs_w)


def test_dense_bf16_within_rounding_bound_values_and_gradients():
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 5, 64))
  w = jax.random.normal(kw, (64, 32))
  g = jax.random.normal(kg, (3, 5, 32))
  got = numerics.dense(x, w, "bfloat16")
  assert got.dtype == jnp.float32
  want = x @ w
  err = np.abs(np.asarray(got - want))
  assert err.max() > 0  # it did round
  assert np.all(err <= bf16_bound(jnp.abs(x), jnp.abs(w), 64))
  vjp = lambda dt: jax.vjp(lambda a, b: numerics.dense(a, b, dt), x, w)[1](g)
  (dx, dw), (dx_ref, dw_ref) = vjp("bfloat16"), vjp("float32")
  assert np.all(np.abs(dx - dx_ref)
                <= bf16_bound(jnp.abs(g), jnp.abs(w).T, 32))
  x_2d, g_2d = jnp.abs(x).reshape(-1, 64), jnp.abs(g).reshape(-1, 32)
  assert np.all(np.abs(dw - dw_ref) <= bf16_bound(x_2d.T, g_2d, 15))


def test_unknown_compute_dtype_names_allowed_values():
  with pytest.raises(ValueError, match="float32, bfloat16"):
    M.ModelConfig(compute_dtype="float16")


@pytest.mark.parametrize("backend", ["fused", "pallas"])
def test_gru_backends_agree_in_bfloat16(backend):
  """Both backends round the same matmul operands (the input projections,
  h W_hh each step, and in the backward dhp W_hh^T) and sum the rest in
  float32 in another order, so they agree far inside the bf16 error (which
  the float32 run shows: about 1e-2 here)."""
  args = gru_inputs()
  run = lambda b, dt: gru.gru_sequence(*args, backend=b, compute_dtype=dt)[0]
  ref, fast = run("scan", "bfloat16"), jax.jit(run, static_argnums=(0, 1))(
      backend, "bfloat16")
  np.testing.assert_allclose(fast, ref, atol=1e-5)
  assert float(jnp.abs(ref - run("scan", "float32")).max()) > 1e-4

  def loss(b, *a):
    h_BxTxD, h_last = gru.gru_sequence(*a, backend=b,
                                       compute_dtype="bfloat16")
    weights = jnp.sin(jnp.arange(h_BxTxD.size).reshape(h_BxTxD.shape))
    return jnp.sum(h_BxTxD * weights) + jnp.sum(h_last ** 2)

  grads_ref = jax.grad(lambda *a: loss("scan", *a), argnums=range(6))(*args)
  grads = jax.jit(jax.grad(lambda *a: loss(backend, *a),
                           argnums=range(6)))(*args)
  for g_fast, g_ref in zip(grads, grads_ref):
    scale = float(jnp.abs(g_ref).max())
    # The same operands are rounded in both (the reference's autodiff of
    # numerics.dense rounds the cotangent as the fused backward does); only
    # float32 summation order differs, as in the float32 backend test.
    np.testing.assert_allclose(g_fast / scale, g_ref / scale, atol=1e-5)


def test_bfloat16_training_tracks_float32(tiny_dataset):
  """The same model, data and Adam steps in float32 and in bfloat16: every
  window's training NLL within 0.02 bits. At 3 to 8 bits per sample, a
  0.4 % perturbation of each matmul (the bound above) moves the NLL by far
  less than that; a wrong cast (say, weights left in bf16 after the update,
  or a gradient dropped) moves it by more within a few steps."""
  config = tiny_run_config(tiny_dataset)
  stream = data_lib.BatchStream(str(tiny_dataset), "train", 4, 256, 16,
                                prefetch=0)
  batch = next(stream)
  windows = data_lib.windows(batch.x_BxT, 256, 16)[:12]
  bits = {}
  for dtype in ("float32", "bfloat16"):
    cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=32, cond_dim=3,
                        compute_dtype=dtype)
    graphdef, params = M.build(cfg, 0)
    tx = trainer.make_optimizer(config.train)
    step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
    params, _, metrics = step(params, tx.init(params), windows,
                              batch.cond_BxC, batch.mask_B, jax.random.key(0))
    assert all(leaf.dtype == jnp.float32
               for leaf in jax.tree_util.tree_leaves(params))
    bits[dtype] = np.asarray(metrics["bits"])
  assert bits["float32"][-1] < bits["float32"][0] - 0.5  # it learned
  np.testing.assert_allclose(bits["bfloat16"], bits["float32"], atol=0.02)
