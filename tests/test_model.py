"""The model of docs/design.md §2: GRU and LSTM equations, tap tables,
causality, TBPTT, the generator's steps against the forward, conditioning
(and where it enters), skip connections, RNN dropout, config errors, jit."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csrnn_jax import audio
from csrnn_jax import model as M
from csrnn_jax import sampling
from csrnn_jax.kernels import taps
from helpers import forward, generator_log_probs, make, random_x


def numpy_torch_gru(x_TxI, h_D, w_ih_3DxI, w_hh_3DxD, b_ih, b_hh):
  """PyTorch's GRU equations in NumPy, torch weight layout (3H, D), float64."""
  def sig(a):
    return 1.0 / (1.0 + np.exp(-a))
  out = []
  hsz = h_D.shape[0]
  for x in x_TxI:
    gi = w_ih_3DxI @ x + b_ih
    gh = w_hh_3DxD @ h_D + b_hh
    r = sig(gi[:hsz] + gh[:hsz])
    z = sig(gi[hsz:2 * hsz] + gh[hsz:2 * hsz])
    n = np.tanh(gi[2 * hsz:] + r * gh[2 * hsz:])
    h_D = (1 - z) * n + z * h_D
    out.append(h_D)
  return np.stack(out), h_D


@pytest.mark.parametrize("n_rnn", [1, 2])
def test_gru_matches_numpy_torch_equations(n_rnn):
  cfg = M.ModelConfig(frame_sizes=(4, 8), dim=16, n_rnn=n_rnn)
  graphdef, params = make(cfg)
  tier = M.bind(graphdef, params).frame_tiers[0]
  x_BxTxD = jax.random.normal(jax.random.key(3), (2, 7, 16))
  h_LxBxD = jax.random.normal(jax.random.key(4), (n_rnn, 2, 16))
  out_BxTxD, h_last = jax.jit(tier.rnn_stack)(x_BxTxD, h_LxBxD)
  for b in range(2):
    seq = np.asarray(x_BxTxD[b], np.float64)
    for layer_index, layer in enumerate(tier.gru):
      w_ih, w_hh, b_ih, b_hh = (np.asarray(a, np.float64)
                                for a in layer.weights())
      seq, h = numpy_torch_gru(seq, np.asarray(h_LxBxD[layer_index, b],
                                               np.float64),
                               w_ih.T, w_hh.T, b_ih, b_hh)
      np.testing.assert_allclose(h_last[layer_index, b], h, atol=1e-5)
    np.testing.assert_allclose(out_BxTxD[b], seq, atol=1e-5)


def numpy_torch_lstm(x_TxI, h_D, c_D, w_ih_4DxI, w_hh_4DxD, b_ih, b_hh):
  """PyTorch's LSTM equations in NumPy, torch weight layout (4H, D), gate
  order i, f, g, o, float64."""
  def sig(a):
    return 1.0 / (1.0 + np.exp(-a))
  out = []
  hsz = h_D.shape[0]
  for x in x_TxI:
    gates = w_ih_4DxI @ x + b_ih + w_hh_4DxD @ h_D + b_hh
    i, f = sig(gates[:hsz]), sig(gates[hsz:2 * hsz])
    g, o = np.tanh(gates[2 * hsz:3 * hsz]), sig(gates[3 * hsz:])
    c_D = f * c_D + i * g
    h_D = o * np.tanh(c_D)
    out.append(h_D)
  return np.stack(out), h_D, c_D


@pytest.mark.parametrize("n_rnn", [1, 2])
def test_lstm_matches_numpy_torch_equations(n_rnn):
  cfg = M.ModelConfig(frame_sizes=(4, 8), dim=16, n_rnn=n_rnn, cell="lstm")
  graphdef, params = make(cfg)
  tier = M.bind(graphdef, params).frame_tiers[0]
  x_BxTxD = jax.random.normal(jax.random.key(3), (2, 7, 16))
  h_LxBxD, c_LxBxD = jax.random.normal(jax.random.key(4), (2, n_rnn, 2, 16))
  out_BxTxD, (h_last, c_last) = jax.jit(tier.rnn_stack)(x_BxTxD,
                                                        (h_LxBxD, c_LxBxD))
  for b in range(2):
    seq = np.asarray(x_BxTxD[b], np.float64)
    for j, layer in enumerate(tier.lstm):
      w_ih, w_hh, b_ih, b_hh = (np.asarray(a, np.float64)
                                for a in layer.weights())
      seq, h, c = numpy_torch_lstm(
          seq, np.asarray(h_LxBxD[j, b], np.float64),
          np.asarray(c_LxBxD[j, b], np.float64), w_ih.T, w_hh.T, b_ih, b_hh)
      np.testing.assert_allclose(h_last[j, b], h, atol=1e-5)
      np.testing.assert_allclose(c_last[j, b], c, atol=1e-5)
    np.testing.assert_allclose(out_BxTxD[b], seq, atol=1e-5)


def test_lstm_initialisation_and_learned_h0_c0():
  cfg = M.ModelConfig(frame_sizes=(4, 8), dim=32, n_rnn=2, cell="lstm",
                      lstm_forget_bias=3.0, weight_norm=False)
  graphdef, params = M.build(cfg)
  tier = params["frame_tiers"][0]
  assert "gru" not in tier
  layer = tier["lstm"][1]
  assert layer["w_ih"].shape == layer["w_hh"].shape == (32, 128)
  assert float(jnp.abs(layer["w_ih"]).max()) <= np.sqrt(3 / 32)
  w_hg = layer["w_hh"][:, 64:96]  # the candidate g's recurrent weight
  np.testing.assert_allclose(w_hg.T @ w_hg, np.eye(32), atol=1e-4)
  # The forget gate's bias (b_ih's second quarter) and nothing else.
  np.testing.assert_array_equal(layer["b_ih"][32:64], 3.0)
  assert not np.any(layer["b_ih"][:32]) and not np.any(layer["b_ih"][64:])
  assert not np.any(layer["b_hh"])
  assert tier["h0"].shape == tier["c0"].shape == (2, 32)
  # Learned h0 and c0 are each tier's starting state.
  tier["h0"], tier["c0"] = tier["h0"] + 1.0, tier["c0"] - 2.0
  h_LxBxD, c_LxBxD = M.bind(graphdef, params).initial_carry(3)[0]
  np.testing.assert_array_equal(h_LxBxD, np.ones((2, 3, 32)))
  np.testing.assert_array_equal(c_LxBxD, -2 * np.ones((2, 3, 32)))
  no_h0 = M.ModelConfig(**{**cfg.__dict__, "learn_h0": False})
  _, params = M.build(no_h0)
  assert "h0" not in params["frame_tiers"][0]
  assert "c0" not in params["frame_tiers"][0]
  h_LxBxD, c_LxBxD = M.bind(*M.build(no_h0)).initial_carry(3)[0]
  assert not np.any(h_LxBxD) and not np.any(c_LxBxD)


def test_tap_tables_equal_embedding_conv_values_and_gradients():
  emb = jax.random.normal(jax.random.key(0), (256, 256))
  w = 0.05 * jax.random.normal(jax.random.key(1), (16, 256, 32))
  x = random_x(3, 40)

  def loss(fn, emb, w):
    out = fn(emb, w)
    return jnp.sum(jnp.sin(out)), out

  via_taps = lambda e, w: taps.taps_input(taps.tap_tables(e, w), x)
  via_conv = lambda e, w: taps.conv_input(e, w, x)
  (_, out_t), grads_t = jax.jit(jax.value_and_grad(
      lambda e, w: loss(via_taps, e, w), argnums=(0, 1), has_aux=True))(emb, w)
  (_, out_c), grads_c = jax.jit(jax.value_and_grad(
      lambda e, w: loss(via_conv, e, w), argnums=(0, 1), has_aux=True))(emb, w)
  assert out_t.shape == (3, 25, 32)
  np.testing.assert_allclose(out_t, out_c, atol=1e-5)
  for gt, gc in zip(grads_t, grads_c):
    scale = float(jnp.abs(gc).max())
    assert scale > 0
    # float32 sums in a different order: 1e-5 relative to the gradient scale.
    np.testing.assert_allclose(gt / scale, gc / scale, atol=1e-5)


def test_model_taps_and_conv_paths_agree():
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=24, cond_dim=2)
  conv_cfg = M.ModelConfig(**{**cfg.__dict__, "sample_input": "conv"})
  graphdef, params = make(cfg)
  conv_graphdef, _ = M.build(conv_cfg)
  x = random_x(2, 16 + 32)
  cond = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  fast, _ = forward(graphdef, params, x, cond)
  ref, _ = forward(conv_graphdef, params, x, cond)
  np.testing.assert_allclose(fast, ref, atol=1e-5)


@pytest.mark.parametrize("frame_sizes", [(4, 8), (2, 4, 8)])
def test_causality(frame_sizes):
  cfg = M.ModelConfig(frame_sizes=frame_sizes, dim=16, cond_dim=2)
  graphdef, params = make(cfg)
  m = M.bind(graphdef, params)
  lookback, t_len = cfg.lookback, 4 * cfg.lookback
  x = random_x(2, lookback + t_len)
  cond = jnp.ones((2, 2))
  fwd = jax.jit(lambda x: m.forward(x, cond, m.initial_carry(2))[0])
  base = fwd(x)
  for t in [0, 1, 3, 7, 8, 13, t_len - 1]:
    noise = random_x(2, t_len - t, seed=10 + t)
    changed = fwd(x.at[:, lookback + t:].set(noise))
    np.testing.assert_array_equal(changed[:, :t + 1], base[:, :t + 1])
    # The change is visible to the next position (the test can fail).
    if t + 1 < t_len:
      assert not np.allclose(changed[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("n_rnn,cell", [(1, "gru"), (2, "gru"), (2, "lstm")])
def test_tbptt_two_windows_equal_one(n_rnn, cell):
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, n_rnn=n_rnn, cond_dim=3,
                      cell=cell)
  graphdef, params = make(cfg)
  lookback, t_len = cfg.lookback, 32
  x = random_x(2, lookback + 2 * t_len)
  cond = jnp.eye(3)[:2]
  whole, carry_whole = forward(graphdef, params, x, cond)
  first, carry = forward(graphdef, params, x[:, :lookback + t_len], cond)
  second, carry = forward(graphdef, params, x[:, t_len:], cond, carry)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole,
                             atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(carry),
                  jax.tree_util.tree_leaves(carry_whole)):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cond_dim,n_rnn,frame_sizes,options",
                         [(0, 1, (4, 4, 16), {}), (3, 2, (4, 4, 16), {}),
                          (3, 1, (2, 8), {}),
                          (3, 1, (4, 4, 16), dict(cond_mlp=True)),
                          (3, 1, (2, 8), dict(cond_mlp=True,
                                              cond_embed_dim=5)),
                          (3, 2, (2, 4, 8), dict(cell="lstm")),
                          (0, 1, (2, 2, 4, 8), dict(skip_conn=True)),
                          (3, 1, (2, 4, 8), dict(cell="lstm", skip_conn=True,
                                                 cond_mlp=True))])
def test_generation_steps_match_forward(cond_dim, n_rnn, frame_sizes, options):
  cfg = M.ModelConfig(frame_sizes=frame_sizes, dim=16, n_rnn=n_rnn,
                      cond_dim=cond_dim, **options)
  graphdef, params = make(cfg)
  lookback, t_len = cfg.lookback, 2 * cfg.lookback
  x = random_x(2, lookback + t_len)
  # Local conditioning: a different vector for each top frame.
  cond = jax.random.normal(jax.random.key(5), (2, t_len // lookback, cond_dim))
  logits, _ = forward(graphdef, params, x, cond if cond_dim else None)
  expected = jax.nn.log_softmax(logits)
  got = generator_log_probs(graphdef, params, x, cond)
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_condition_changes_logits_and_unconditional_builds():
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=4)
  graphdef, params = M.build(cfg)  # plain init: the real starting point
  x = random_x(1, 16 + 32)
  a, _ = forward(graphdef, params, x, jnp.array([[1.0, 0, 0, 0]]))
  b, _ = forward(graphdef, params, x, jnp.array([[0, 0, 1.0, 1.0]]))
  assert float(jnp.abs(a - b).max()) > 1e-4
  uncond = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=0)
  graphdef, params = M.build(uncond)
  assert params["frame_tiers"][0]["input"]["v"].shape == (4, 16)
  m = M.bind(graphdef, params)
  logits, _ = forward(graphdef, params, x, None)
  assert logits.shape == (1, 32, 256)
  with pytest.raises(ValueError, match="cond_dim=0"):
    m.forward(x, jnp.ones((1, 2)), m.initial_carry(1))


def test_global_condition_equals_constant_local_condition():
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=2)
  graphdef, params = make(cfg)
  x = random_x(2, 16 + 48)
  cond = jnp.array([[0.3, 1.0], [1.0, -2.0]])
  glob, _ = forward(graphdef, params, x, cond)
  local, _ = forward(graphdef, params, x, jnp.repeat(cond[:, None], 3, 1))
  np.testing.assert_allclose(glob, local, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(frame_sizes=(16, 16, 40)), "frame_sizes.*multiple"),
    (dict(frame_sizes=(16,)), "frame_sizes.*K >= 2"),
    (dict(frame_sizes=(32, 16)), "FS\\(1\\)"),
    (dict(dim=0), "model.dim=0"),
    (dict(n_rnn=0), "model.n_rnn"),
    (dict(quantization="ulaw"), "linear, mu-law, linear-minmax"),
    (dict(sample_input="fft"), "taps, conv"),
    (dict(cond_embed_dim=-2), "model.cond_embed_dim=-2"),
    (dict(preemphasis=1.0), r"preemphasis=1.0 must be in \[0, 1\)"),
    (dict(preemphasis=True), "model.preemphasis=True must be a number"),
    (dict(cell="rnn"), "model.cell='rnn' is unknown; allowed values: gru, "
                       "lstm"),
    (dict(lstm_forget_bias=3.0), "lstm_forget_bias=3.0 .* set "
                                 "model.cell='lstm'"),
    (dict(rnn_dropout=1.0), r"rnn_dropout=1.0 must be in \[0, 1\)"),
    (dict(rnn_dropout="0.1"), "model.rnn_dropout='0.1' must be a number"),
    (dict(frame_sizes=(4, 8), skip_conn=True), "2-tier model has none"),
])
def test_bad_config_names_field_and_allowed_values(kwargs, match):
  with pytest.raises(ValueError, match=match):
    M.ModelConfig(**kwargs)


def test_window_length_must_be_multiple_of_top_frame():
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=8)
  graphdef, params = M.build(cfg)
  m = M.bind(graphdef, params)
  with pytest.raises(ValueError, match="multiple of FS\\(K\\)=16"):
    m.forward(random_x(1, 16 + 20), None, m.initial_carry(1))


@pytest.mark.parametrize("options", [{}, dict(cond_mlp=True,
                                              cond_embed_dim=3),
                                     dict(cell="lstm", skip_conn=True)])
def test_forward_same_with_and_without_jit_and_grads_flow(options):
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=2, n_rnn=2,
                      **options)
  graphdef, params = make(cfg)
  x = random_x(2, 16 + 32)
  cond = jnp.eye(2)

  def loss(params):
    m = M.bind(graphdef, params)
    logits, _ = m.forward(x, cond, m.initial_carry(2))
    return jnp.mean(M.token_nll(logits, x[:, 16:]))

  eager = loss(params)
  jitted = jax.jit(loss)(params)
  np.testing.assert_allclose(eager, jitted, rtol=1e-6)
  grads = jax.jit(jax.grad(loss))(params)
  # Every parameter receives a gradient (nothing disconnected).
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).max()) > 0, path


def test_weight_norm_starts_at_v_and_scales_with_g():
  cfg = M.ModelConfig(frame_sizes=(4, 8), dim=8)
  graphdef, params = M.build(cfg)
  up = M.bind(graphdef, params).frame_tiers[0].upsample
  np.testing.assert_allclose(up(), up.v[...], rtol=1e-5)
  params["frame_tiers"][0]["upsample"]["g"] = (
      params["frame_tiers"][0]["upsample"]["g"] * 2)
  up = M.bind(graphdef, params).frame_tiers[0].upsample
  np.testing.assert_allclose(up(), 2 * up.v[...], rtol=1e-5)
  # The norm is per input channel (axis 0), over (r, dim_out), as torch's
  # weight_norm(ConvTranspose1d, dim=0).
  norms = jnp.sqrt(jnp.sum(up() ** 2, axis=(1, 2)))
  np.testing.assert_allclose(norms, up.g[...], rtol=1e-5)


def test_initialisation_follows_reference():
  cfg = M.ModelConfig(frame_sizes=(16, 16, 64), dim=64, cond_dim=4,
                      weight_norm=False)
  graphdef, params = M.build(cfg)
  tier = params["frame_tiers"][1]
  assert float(jnp.abs(tier["input"]["w"]).max()) <= np.sqrt(6 / 68)
  assert float(jnp.abs(tier["upsample"]["w"]).max()) <= np.sqrt(6 / 64)
  gru = tier["gru"][0]
  assert float(jnp.abs(gru["w_ih"]).max()) <= np.sqrt(3 / 64)
  w_hn = gru["w_hh"][:, 128:]
  np.testing.assert_allclose(w_hn.T @ w_hn, np.eye(64), atol=1e-4)
  for leaf in (gru["b_ih"], gru["b_hh"], tier["h0"], tier["upsample_bias"],
               params["mlp"]["output_bias"]):
    assert float(jnp.abs(leaf).max()) == 0.0
  assert float(jnp.abs(params["mlp"]["input"]["w"]).max()) <= np.sqrt(
      6 / (256 * 16))


def test_abstract_is_traced_once_per_config_and_returns_fresh_dicts():
  """abstract is cached per config (generators and checkpoint loads ask for
  it each time); a caller that edits its dicts must not edit the next
  caller's."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=8, cond_dim=2)
  graphdef, params = M.abstract(cfg)
  params["mlp"]["output"] = None
  graphdef_again, params_again = M.abstract(cfg)
  assert graphdef_again is graphdef
  assert params_again["mlp"]["output"]["v"].shape == (8, cfg.q_levels)
  other = M.abstract(dataclasses.replace(cfg, dim=16))[1]
  assert other["mlp"]["output"]["v"].shape == (16, cfg.q_levels)


def test_ambient_size_and_cost():
  cfg = M.ModelConfig(frame_sizes=(16, 16, 64), dim=1024, cond_dim=4)
  _, params = M.abstract(cfg)
  d, c, q = 1024, 4, 256
  expected = 0
  for n, r in [(16, 16), (64, 4)]:
    expected += (n + c) * d + d + d  # input v, g, bias
    expected += 2 * 3 * d * d + 2 * 3 * d + d  # GRU weights, biases, h0
    expected += d * r * d + d + r * d  # upsampling v, g, bias
  expected += q * q + 16 * q * d + d  # embedding, input conv v, g
  expected += d * d + 2 * d + d * q + 2 * q  # hidden and output layers
  assert M.param_count(params) == expected
  macs = M.macs_per_sample(cfg)
  # docs/model.md's figures: ~7.1M multiply-adds per position for the
  # reference, of which ~4.2M are the sample-tier embedding+conv; ~2.9M with
  # tap tables.
  assert abs(macs["total_reference"] / 1e6 - 7.1) < 0.05
  assert abs(macs["sample_input"] / 1e6 - 4.2) < 0.05
  assert abs(macs["total_taps"] / 1e6 - 2.9) < 0.05


def test_frame_input_scaling_matches_reference():
  x = jnp.array([0, 64, 128, 255])
  np.testing.assert_allclose(audio.frame_input(x, 256),
                             [-2.0, -1.0, 0.0, 2 * (255 / 128 - 1)])


def test_cond_mlp_with_zero_weight_equals_the_reference_layout_exactly():
  base = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=3)
  graphdef, params = make(base)
  cond_graphdef, cond_params = M.build(
      M.ModelConfig(**{**base.__dict__, "cond_mlp": True}))
  assert cond_params["mlp"]["cond"].shape == (3, 16)
  assert not np.any(cond_params["mlp"]["cond"])  # initialised to zeros
  cond_params = {**params, "mlp": {**params["mlp"],
                                   "cond": cond_params["mlp"]["cond"]}}
  x = random_x(2, 16 + 32)
  cond = jnp.array([[1.0, 0, 0], [0, 0.5, 2.0]])
  m, cm = M.bind(graphdef, params), M.bind(cond_graphdef, cond_params)
  expected, _ = m.forward(x, cond, m.initial_carry(2))
  got, _ = cm.forward(x, cond, cm.initial_carry(2))
  np.testing.assert_array_equal(got, expected)
  # A nonzero weight reaches the logits (the test above can fail).
  cond_params["mlp"]["cond"] = jnp.ones((3, 16))
  cm = M.bind(cond_graphdef, cond_params)
  assert not np.allclose(cm.forward(x, cond, cm.initial_carry(2))[0],
                         expected)


@pytest.mark.parametrize("cond_mlp", [False, True])
def test_cond_embedding_is_the_plain_model_fed_the_embedded_condition(
    cond_mlp):
  """A model with a condition embedding (C=3 -> E=5) computes what the model
  with cond_dim=E and the same other weights computes on cond @ W_embed."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=3,
                      cond_embed_dim=5, cond_mlp=cond_mlp)
  graphdef, params = make(cfg)
  assert params["cond_embed"].shape == (3, 5)
  assert params["frame_tiers"][0]["input"]["v"].shape == (4 + 5, 16)
  plain_graphdef, _ = M.build(M.ModelConfig(
      frame_sizes=(4, 4, 16), dim=16, cond_dim=5, cond_mlp=cond_mlp))
  plain_params = {k: v for k, v in params.items() if k != "cond_embed"}
  x = random_x(2, 16 + 32)
  m, plain = M.bind(graphdef, params), M.bind(plain_graphdef, plain_params)
  for cond in (jnp.eye(3)[:2],  # global, and local (one per top frame)
               jax.random.normal(jax.random.key(2), (2, 2, 3))):
    got, _ = m.forward(x, cond, m.initial_carry(2))
    expected, _ = plain.forward(x, cond @ params["cond_embed"],
                                plain.initial_carry(2))
    # The same float32 operations in the same order: equal up to XLA's
    # choice of summation order in the matmuls (a few ulp of logits ~ 1).
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_generator_follows_forward_with_condition_options():
  """The compiled generator (weight norm folded) computes the training
  forward's log-probabilities for its own samples: the options are wired
  into the tiers' one definition, which every inner-step backend shares."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=3,
                      cond_embed_dim=4, cond_mlp=True)
  graphdef, params = make(cfg)
  generator = sampling.Generator(graphdef, params)
  cond = np.eye(3, dtype=np.float32)[[0, 2]]
  x, logp = generator.generate(cond, [3, 4], 32)
  window = jnp.concatenate([jnp.full((2, 16), 128, jnp.int32), x], 1)
  logits, _ = forward(graphdef, params, window, cond)
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None],
                                 -1)[..., 0]
  # float32 through two different summation orders (and folded weight norm):
  # 1e-4 on log-probabilities of order 5, as the other generator tests.
  np.testing.assert_allclose(logp, expected, atol=1e-4)


def test_condition_options_need_a_condition_and_count_their_cost():
  with pytest.raises(ValueError, match="cond_mlp=True.*unconditional"):
    M.build(M.ModelConfig(frame_sizes=(4, 8), dim=8, cond_mlp=True))
  with pytest.raises(ValueError, match="cond_embed_dim=4.*unconditional"):
    M.build(M.ModelConfig(frame_sizes=(4, 8), dim=8, cond_embed_dim=4))
  base = M.ModelConfig(frame_sizes=(16, 16, 64), dim=64, cond_dim=4)
  both = M.ModelConfig(**{**base.__dict__, "cond_mlp": True,
                          "cond_embed_dim": 8})
  _, base_params = M.abstract(base)
  _, params = M.abstract(both)
  # Embedding 4 x 8; each tier's input reads 8 entries instead of 4; the
  # MLP's condition weight 8 x 64.
  assert (M.param_count(params) - M.param_count(base_params)
          == 4 * 8 + 2 * (8 - 4) * 64 + 8 * 64)
  macs, base_macs = M.macs_per_sample(both), M.macs_per_sample(base)
  assert macs["tier2"] - base_macs["tier2"] == (4 * 8 + 4 * 64 + 8 * 64) / 16
  assert macs["tier3"] - base_macs["tier3"] == (4 * 8 + 4 * 64) / 64


def test_skip_connections_with_zero_weights_equal_the_default_exactly():
  base = M.ModelConfig(frame_sizes=(2, 2, 4, 8), dim=16, cond_dim=3)
  graphdef, params = make(base)
  skip_cfg = M.ModelConfig(**{**base.__dict__, "skip_conn": True})
  skip_graphdef, skip_params = M.build(skip_cfg)
  # Tiers 3 and 4 have a (dim, dim) weight to the MLP, zeros; tier 2 none.
  assert "skip" not in skip_params["frame_tiers"][0]
  for i in (1, 2):
    skip = skip_params["frame_tiers"][i]["skip"]
    assert skip.shape == (16, 16) and not np.any(skip)
  zero_skip = jax.tree_util.tree_map(lambda a: a, params)
  for i in (1, 2):
    zero_skip["frame_tiers"][i]["skip"] = skip_params["frame_tiers"][i]["skip"]
  x = random_x(2, 8 + 32)
  cond = jnp.array([[1.0, 0, 0], [0, 0.5, 2.0]])

  def forward(graphdef, params):
    m = M.bind(graphdef, params)
    return m.forward(x, cond, m.initial_carry(2))

  skip_forward = jax.jit(lambda p: forward(skip_graphdef, p))
  expected, base_carry = jax.jit(lambda p: forward(graphdef, p))(params)
  np.testing.assert_array_equal(skip_forward(zero_skip)[0], expected)

  # Every skip weight gets a gradient at its zero start, and each one, once
  # nonzero, moves the logits.
  grads = jax.jit(jax.grad(lambda p: jnp.mean(M.token_nll(
      skip_forward(p)[0], x[:, 8:]))))(zero_skip)
  for i in (1, 2):
    assert float(jnp.abs(grads["frame_tiers"][i]["skip"]).max()) > 0
  for i in (1, 2):
    moved = jax.tree_util.tree_map(lambda a: a, zero_skip)
    moved["frame_tiers"][i]["skip"] = jnp.eye(16)
    changed, carry = skip_forward(moved)
    assert not np.allclose(changed, expected)
    # Only the MLP's input moved: the frame tiers' states are the same.
    for a, b in zip(carry, base_carry):
      np.testing.assert_array_equal(a, b)


def dropout_model(rate, n_rnn=1, cell="gru"):
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=32, cond_dim=3,
                      n_rnn=n_rnn, cell=cell, rnn_dropout=rate)
  return make(cfg)


def test_rnn_dropout_masks_the_expected_share_in_training_only():
  rate = 0.25
  graphdef, params = dropout_model(rate)
  m = M.bind(graphdef, params)
  tier = m.frame_tiers[0]
  in_BxTxD = jax.random.normal(jax.random.key(0), (4, 16, 32))
  state = tier.initial_state(4)
  keys_B = jax.random.split(jax.random.key(1), 4)
  plain_BxTxD, plain_state = jax.jit(tier.rnn_stack)(in_BxTxD, state)
  dropped_BxTxD, dropped_state = jax.jit(tier.rnn_stack)(in_BxTxD, state,
                                                         keys_B)
  zero = np.asarray(dropped_BxTxD == 0)
  # 2048 units, each dropped with probability 0.25: the share's standard
  # deviation is sqrt(0.25 * 0.75 / 2048) = 0.0096; 0.04 is four of them.
  assert abs(zero.mean() - rate) < 0.04
  # The kept units are the plain outputs scaled by 1 / (1 - rate), and the
  # state the next window starts from is not dropped.
  np.testing.assert_array_equal(np.asarray(dropped_BxTxD)[~zero],
                                np.asarray(plain_BxTxD / (1 - rate))[~zero])
  np.testing.assert_array_equal(dropped_state, plain_state)
  # Each row's mask is its own: no two rows share one.
  assert all(np.mean(zero[a] != zero[b]) > 0.2
             for a in range(4) for b in range(a))

  # Without keys (evaluation, generation) the model is the one without
  # dropout, bit for bit.
  plain_graphdef, _ = dropout_model(0.0)
  x = random_x(4, 16 + 32)
  cond = jnp.eye(3)[jnp.array([0, 1, 2, 0])]
  def forward(graphdef, keys_B):
    m = M.bind(graphdef, params)
    return m.forward(x, cond, m.initial_carry(4), keys_B)[0]

  forward = jax.jit(forward, static_argnums=0)
  expected = forward(plain_graphdef, None)
  np.testing.assert_array_equal(forward(graphdef, None), expected)
  # The rate-0 model ignores keys.
  np.testing.assert_array_equal(forward(plain_graphdef, keys_B), expected)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_dropout_is_reproducible_from_each_rows_key(cell):
  graphdef, params = dropout_model(0.3, n_rnn=2, cell=cell)
  m = M.bind(graphdef, params)
  x = random_x(3, 16 + 32)
  cond = jnp.eye(3)
  keys_B = jax.random.split(jax.random.key(7), 3)
  fwd = jax.jit(lambda x, c, k: m.forward(x, c, m.initial_carry(x.shape[0]),
                                          k)[0])
  a = fwd(x, cond, keys_B)
  np.testing.assert_array_equal(fwd(x, cond, keys_B), a)
  # A row depends only on its own key, not on the rows beside it (so a
  # batch split over devices draws what one device draws).
  np.testing.assert_allclose(fwd(x[1:], cond[1:], keys_B[1:]), a[1:],
                             atol=1e-6)
  other = fwd(x, cond, jax.random.split(jax.random.key(8), 3))
  assert not np.allclose(other, a)
  without, _ = forward(graphdef, params, x, cond)
  assert not np.allclose(without, a)


@pytest.mark.slow
def test_training_with_rnn_dropout_is_the_same_on_four_devices():
  """The trainer hands each window's row keys to the model: dropout changes
  the training loss, and a batch split over the 4 CPU devices draws the
  masks one device draws (each row's from its own key). LSTM cells: their
  (h, c) carry is split over the devices too."""
  from csrnn_jax import configlib, sharding, trainer  # pylint: disable=import-outside-toplevel
  graphdef, params = dropout_model(0.3, cell="lstm")
  plain_graphdef, _ = dropout_model(0.0, cell="lstm")
  tx = trainer.make_optimizer(configlib.TrainConfig())
  x = random_x(4, 16 + 64)
  windows_NxBxW = jnp.stack([x[:, :48], x[:, 32:]])
  cond_BxC, mask_B = jnp.eye(3)[jnp.array([0, 1, 2, 0])], jnp.ones(4)

  def train(graphdef, mesh=None):
    state = jax.tree_util.tree_map(jnp.copy, (params, tx.init(params)))
    inputs = (windows_NxBxW, cond_BxC, mask_B)
    if mesh is not None:
      state = sharding.replicate(state, mesh)
      inputs = (sharding.shard_batch_rows(windows_NxBxW, mesh, 1),
                *sharding.shard_batch_rows((cond_BxC, mask_B), mesh))
    step = trainer.make_chunk_step(graphdef, tx, 16, mesh=mesh)
    new_params, _, metrics = step(*state, *inputs, jax.random.key(0))
    return new_params, np.asarray(metrics["bits"])

  params_one, bits_one = train(graphdef)
  _, bits_plain = train(plain_graphdef)
  assert np.all(np.abs(bits_one - bits_plain) > 1e-3)
  params_four, bits_four = train(graphdef, sharding.make_mesh())
  # The devices' gradients are summed in another order (one psum), as in
  # tests/test_sharding.py: the same bounds.
  np.testing.assert_allclose(bits_four, bits_one, rtol=0, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(params_four),
                  jax.tree_util.tree_leaves(params_one)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                               atol=1e-4)


def test_lstm_and_skip_count_their_parameters_and_cost():
  base = M.ModelConfig(frame_sizes=(16, 16, 64), dim=64, cond_dim=4)
  d = 64
  _, base_params = M.abstract(base)
  base_macs = M.macs_per_sample(base)
  lstm = M.ModelConfig(**{**base.__dict__, "cell": "lstm"})
  # Per tier: a fourth gate (d x d in w_ih and w_hh, d in each bias), c0.
  assert (M.param_count(M.abstract(lstm)[1]) - M.param_count(base_params)
          == 2 * (2 * d * d + 2 * d + d))
  macs = M.macs_per_sample(lstm)
  assert macs["tier2"] - base_macs["tier2"] == 2 * d * d / 16
  assert macs["tier3"] - base_macs["tier3"] == 2 * d * d / 64
  skip = M.ModelConfig(**{**base.__dict__, "skip_conn": True})
  # Tier 3's (d, d) weight, applied to each of its 4 vectors per frame.
  assert (M.param_count(M.abstract(skip)[1]) - M.param_count(base_params)
          == d * d)
  macs = M.macs_per_sample(skip)
  assert macs["tier3"] - base_macs["tier3"] == 4 * d * d / 64
  assert macs["tier2"] == base_macs["tier2"]
