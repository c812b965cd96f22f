"""Every fast path agrees with its plain reference: the GRU and LSTM backends
(values 1e-5, gradients 1e-4) alone and inside the model, also in bfloat16,
the tiled Pallas kernels at ragged sizes, the tap sum's VJP, and the
generation step backends. The Pallas kernels run in interpret mode here
(their lowering for GPUs: ``test_gpu_lowering.py``); all of it at the tests'
matmul precision, "highest" (float32 products)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csrnn_jax import model as M
from csrnn_jax.kernels import gru
from csrnn_jax.kernels import lstm
from helpers import gru_inputs, gru_loss, make, random_x


def _lstm_inputs(seed=0, b=3, t=9, d=8, h=12):
  """As ``helpers.gru_inputs`` with four gates and the state (h0, c0)."""
  k = jax.random.split(jax.random.key(seed), 7)
  return (jax.random.normal(k[0], (b, t, d)),
          (jax.random.normal(k[1], (b, h)), jax.random.normal(k[6], (b, h))),
          0.3 * jax.random.normal(k[2], (d, 4 * h)),
          0.3 * jax.random.normal(k[3], (h, 4 * h)),
          0.3 * jax.random.normal(k[4], (4 * h,)),
          0.3 * jax.random.normal(k[5], (4 * h,)))


def _lstm_loss(backend, compute_dtype, *args):
  """Weights every output and both parts of the last state (c_last's
  gradient enters the fused backward on its own path)."""
  h_BxTxD, (h_last, c_last) = lstm.lstm_sequence(
      *args, backend=backend, compute_dtype=compute_dtype)
  weights = jnp.sin(jnp.arange(h_BxTxD.size).reshape(h_BxTxD.shape))
  return (jnp.sum(h_BxTxD * weights) + jnp.sum(h_last ** 2)
          + jnp.sum(jnp.cos(c_last)))


@pytest.mark.parametrize("backend", ["fused", "pallas"])
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_lstm_backend_matches_scan_reference(backend, compute_dtype):
  """In float32, as the GRU's test: the same function summed in another
  order. In bfloat16 both round the same matmul operands (the input
  projections, h W_hh each step, dpre W_hh^T in the backward: the
  reference's autodiff of numerics.dense rounds its cotangent too), so they
  agree as closely, far inside the bf16 error itself (the last assert)."""
  args = _lstm_inputs()
  run = lambda b: lstm.lstm_sequence(*args, backend=b,
                                     compute_dtype=compute_dtype)
  ref, fast = run("scan"), jax.jit(run, static_argnums=0)(backend)
  for a, b in zip(jax.tree_util.tree_leaves(fast),
                  jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  if compute_dtype == "bfloat16":
    exact = lstm.lstm_sequence(*args, backend="scan")[0]
    assert float(jnp.abs(ref[0] - exact).max()) > 1e-4
  grads_ref = jax.grad(lambda *a: _lstm_loss("scan", compute_dtype, *a),
                       argnums=range(6))(*args)
  grads = jax.jit(jax.grad(lambda *a: _lstm_loss(backend, compute_dtype, *a),
                           argnums=range(6)))(*args)
  for g, g_ref in zip(jax.tree_util.tree_leaves(grads),
                      jax.tree_util.tree_leaves(grads_ref)):
    scale = float(jnp.abs(g_ref).max())
    assert scale > 0
    np.testing.assert_allclose(g / scale, g_ref / scale, atol=1e-5)


@pytest.mark.parametrize("backend", ["fused", "pallas"])
def test_gru_backend_matches_scan_reference(backend):
  args = gru_inputs()
  ref, ref_last = gru.gru_sequence(*args, backend="scan")
  out, out_last = jax.jit(lambda *a: gru.gru_sequence(*a, backend=backend))(
      *args)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  np.testing.assert_allclose(out_last, ref_last, atol=1e-5)
  grads_ref = jax.grad(lambda *a: gru_loss("scan", *a), argnums=range(6))(*args)
  grads = jax.jit(jax.grad(lambda *a: gru_loss(backend, *a),
                           argnums=range(6)))(*args)
  for g, g_ref in zip(grads, grads_ref):
    assert float(jnp.abs(g_ref).max()) > 0
    np.testing.assert_allclose(g, g_ref, atol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_pallas_recurrence_at_ragged_sizes_matches_scan(cell):
  """20 rows (two programs of 16, the second padded) and H = 40 (two
  column tiles of 32 per gate, the second padded), so every loop of the
  tiled kernel and its padding run. Both sum the same float32 terms, the
  kernel tile by tile: values 1e-5, gradients 1e-5 of their scale."""
  shape = dict(b=20, t=4, d=8, h=40)
  if cell == "gru":
    args, sequence = gru_inputs(**shape), gru.gru_sequence
  else:
    args, sequence = _lstm_inputs(**shape), lstm.lstm_sequence

  def outputs_and_grads(backend):
    def loss(*a):
      out = sequence(*a, backend=backend)
      leaves = jax.tree_util.tree_leaves(out)
      return sum(jnp.sum(jnp.sin(jnp.arange(x.size).reshape(x.shape)) * x)
                 for x in leaves), out
    return jax.jit(jax.grad(loss, argnums=range(6), has_aux=True))(*args)

  (grads, out), (grads_ref, out_ref) = map(outputs_and_grads,
                                           ("pallas", "scan"))
  for a, b in zip(jax.tree_util.tree_leaves(out),
                  jax.tree_util.tree_leaves(out_ref)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  for g, g_ref in zip(jax.tree_util.tree_leaves(grads),
                      jax.tree_util.tree_leaves(grads_ref)):
    scale = float(jnp.abs(g_ref).max())
    assert scale > 0
    np.testing.assert_allclose(g / scale, g_ref / scale, atol=1e-5)


@pytest.mark.parametrize("b,d,q", [(20, 40, 50), (1, 12, 20)])
def test_pallas_head_matches_jnp_at_any_size(b, d, q):
  """The head's two tiled kernels at sizes that are neither powers of 2 nor
  multiples of a tile (two row blocks and two or more column tiles; one
  row, one tile), float32: the same terms summed tile by tile, 1e-5."""
  from csrnn_jax.kernels import sample_step
  k = jax.random.split(jax.random.key(0), 6)
  args = (jax.random.normal(k[0], (b, d)), jax.random.normal(k[1], (b, d)),
          0.3 * jax.random.normal(k[2], (d, d)), jax.random.normal(k[3], (d,)),
          0.3 * jax.random.normal(k[4], (d, q)), jax.random.normal(k[5], (q,)))
  want = sample_step.head_jnp(*args)
  np.testing.assert_allclose(jax.jit(sample_step.head_pallas)(*args), want,
                             atol=1e-5)


def test_unknown_backend_names_allowed_values():
  with pytest.raises(ValueError, match="auto, scan, fused, pallas"):
    M.ModelConfig(gru_backend="cudnn")


@pytest.mark.parametrize("backend", ["fused", "pallas"])
@pytest.mark.parametrize("n_rnn,cond_dim,cell", [(1, 0, "gru"), (2, 3, "gru"),
                                                 (2, 3, "lstm")])
def test_model_with_backend_matches_reference(backend, n_rnn, cond_dim, cell):
  kwargs = dict(frame_sizes=(4, 4, 16), dim=16, n_rnn=n_rnn,
                cond_dim=cond_dim, cell=cell)
  graphdef, params = make(M.ModelConfig(gru_backend="scan", **kwargs))
  fast_graphdef, _ = M.build(M.ModelConfig(gru_backend=backend, **kwargs))
  x = random_x(2, 16 + 32)
  cond = jnp.ones((2, cond_dim)) if cond_dim else None

  def loss(graphdef, params):
    m = M.bind(graphdef, params)
    logits, carry = m.forward(x, cond, m.initial_carry(2))
    return jnp.mean(M.token_nll(logits, x[:, 16:])) + sum(
        jnp.sum(jnp.sin(c)) for c in jax.tree_util.tree_leaves(carry)), logits

  (ref_loss, ref_logits), ref_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(graphdef, p), has_aux=True))(params)
  (fast_loss, fast_logits), fast_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(fast_graphdef, p), has_aux=True))(params)
  np.testing.assert_allclose(fast_logits, ref_logits, atol=1e-5)
  np.testing.assert_allclose(fast_loss, ref_loss, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(fast_grads),
                  jax.tree_util.tree_leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("fs1", [8, 5])  # 2 loop steps of 4 taps; 5 of 1
def test_taps_input_vjp_matches_autodiff(fs1):
  """The tap sum with its own VJP (a loop over taps, scatter-add backward)
  against plain autodiff of the sum of lookups. Both add the same float32
  terms, in another order in the backward's scatter, so 1e-5 relative to
  the gradient's scale."""
  from csrnn_jax.kernels import taps
  tables = jax.random.normal(jax.random.key(0), (fs1, 256, 8))
  x = random_x(3, 40)
  weights = jnp.sin(jnp.arange(3 * (41 - fs1) * 8).reshape(3, 41 - fs1, 8))
  loss = lambda fn: lambda t: jnp.sum(jnp.tanh(fn(t, x)) * weights)
  want, want_grad = jax.value_and_grad(loss(taps.taps_input_autodiff))(tables)
  got, got_grad = jax.jit(jax.value_and_grad(loss(taps.taps_input)))(tables)
  np.testing.assert_allclose(taps.taps_input(tables, x),
                             taps.taps_input_autodiff(tables, x), atol=1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  scale = float(jnp.abs(want_grad).max())
  assert scale > 0
  np.testing.assert_allclose(got_grad / scale, want_grad / scale, atol=1e-5)


def test_running_tap_sums_equal_lookups():
  from csrnn_jax.kernels import sample_step, taps
  tables = jax.random.normal(jax.random.key(0), (4, 256, 8))
  x = random_x(2, 12)
  acc = sample_step.initial_sums(tables, x[:, :4])
  push = sample_step.push_tables(tables)
  for p in range(4, 12):
    # acc[0] is the input of position p: the taps over x[p-4:p].
    np.testing.assert_allclose(acc[0], taps.taps_input(tables, x[:, p - 4:p])
                               [:, 0], atol=1e-5)
    acc = sample_step.push(push, acc, x[:, p])
    np.testing.assert_allclose(
        acc, sample_step.initial_sums(tables, x[:, p - 3:p + 1]), atol=1e-5)


@pytest.mark.parametrize("backend", ["fused", "pallas"])
@pytest.mark.parametrize("n_rnn,cond_dim", [(1, 0), (2, 3)])
def test_generation_step_backends_match_scan(backend, n_rnn, cond_dim):
  from csrnn_jax import sampling
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, n_rnn=n_rnn,
                      cond_dim=cond_dim)
  graphdef, params = make(cfg)
  gen = sampling.Generator(graphdef, params)
  cond = np.ones((2, cond_dim), np.float32)
  prime = random_x(2, 20)
  ref_x, ref_logp = gen.generate(
      cond, [3, 4], 48, options=sampling.SamplingOptions(backend="scan"),
      prime_BxP=prime)
  x, logp = gen.generate(cond, [3, 4], 48,
                         options=sampling.SamplingOptions(backend=backend),
                         prime_BxP=prime)
  np.testing.assert_array_equal(x, ref_x)
  np.testing.assert_allclose(logp, ref_logp, atol=1e-5)
