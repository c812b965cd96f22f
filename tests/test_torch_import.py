"""Import/export of the original PyTorch checkpoints: imported
random weights give the reference's log-probabilities
(csrnn_jax/interop/torch_reference.py)
over TBPTT windows and in generation steps; round trips are bitwise; bad state
dicts and disagreeing hyperparameters are errors naming the key; an
unconditional 2-tier samplernn-pytorch checkpoint imports and generates; LSTM
models and checkpoints are refused."""
import itertools
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the PyTorch interop tests need torch: "
    "pip install -e '.[torch]' in the checkout (or pip install torch==2.13.0)")

from helpers import generator_log_probs  # noqa: E402

from csrnn_jax import checkpoint  # noqa: E402
from csrnn_jax import model as M  # noqa: E402
from csrnn_jax.cli import export_torch  # noqa: E402
from csrnn_jax.cli import import_torch  # noqa: E402
from csrnn_jax.interop import torch_import as TI  # noqa: E402
from csrnn_jax.interop import torch_reference as R  # noqa: E402

torch.set_num_threads(2)


def reference(ratios, n_rnn=1, nb_classes=0, weight_norm=True, learn_h0=True,
              dim=16, q_levels=256, seed=0):
  """A random reference Predictor (float64) and its float32 state dict: the
  checkpoint holds exactly the reference's values."""
  torch.manual_seed(seed)
  predictor = R.Predictor(R.SampleRNN(ratios, n_rnn, dim, learn_h0, q_levels,
                                      weight_norm, nb_classes))
  R.randomize_(predictor, seed)
  state_dict = {k: v.numpy().copy() for k, v in predictor.state_dict().items()}
  return predictor.double(), state_dict


def random_params(cfg, seed):
  """Our params for ``cfg``, every leaf random (NumPy: no JAX init to
  compile)."""
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
      M.abstract(cfg)[1])


def imported_params(state_dict):
  """(graphdef, params) of the imported checkpoint."""
  cfg = TI.model_config(TI.infer_hyperparameters(state_dict))
  graphdef, _ = M.abstract(cfg)
  return graphdef, TI.params_from_torch(state_dict, cfg)


def imported(state_dict):
  return M.bind(*imported_params(state_dict))


def inputs(lookback, t_len, nb_classes, batch=2, seed=0):
  """Int samples (B, lookback + t_len) and one-hot classes (B, C) or None."""
  rng = np.random.RandomState(seed)
  x_BxW = rng.randint(0, 256, (batch, lookback + t_len))
  cond_BxC = np.eye(nb_classes)[rng.randint(0, nb_classes, batch)] if (
      nb_classes) else None
  return x_BxW, cond_BxC


def torch_or_none(a):
  return None if a is None else torch.from_numpy(a)


def jax_or_none(a):
  return None if a is None else jnp.asarray(a, jnp.float32)


@pytest.mark.parametrize("weight_norm,ratios,n_rnn,nb_classes", [
    pytest.param(wn, ratios, n_rnn, c,
                 id=f"{'wn' if wn else 'plain'}-K{len(ratios) + 1}-rnn{n_rnn}"
                 f"-classes{c}")
    for wn, ratios, n_rnn, c in itertools.product(
        [True, False], [[4], [4, 2]], [1, 2], [0, 3])])
def test_forward_matches_reference_over_two_windows(weight_norm, ratios,
                                                    n_rnn, nb_classes):
  predictor, state_dict = reference(ratios, n_rnn, nb_classes, weight_norm)
  m = imported(state_dict)
  lookback, t_len = m.cfg.lookback, 16
  x_BxW, cond_BxC = inputs(lookback, 2 * t_len, nb_classes)
  carry = m.initial_carry(2)
  for k, reset in enumerate([True, False]):
    window_BxW = x_BxW[:, k * t_len:lookback + (k + 1) * t_len]
    with torch.no_grad():
      expected = predictor(torch.from_numpy(window_BxW[:, :-1]), reset,
                           torch_or_none(cond_BxC)).numpy()
    logits, carry = m.forward(jnp.asarray(window_BxW), jax_or_none(cond_BxC),
                              carry)
    assert expected.shape == (2, t_len, 256)
    np.testing.assert_allclose(jax.nn.log_softmax(logits), expected,
                               atol=1e-4)
    for ours, theirs in zip(carry, predictor.hidden):
      np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


@pytest.mark.parametrize("ratios,n_rnn,nb_classes,weight_norm,learn_h0", [
    ([4, 2], 1, 3, True, True), ([2, 2, 2], 2, 0, False, False),
    ([4], 2, 2, True, True)], ids=["K3", "K4-h0-buffer", "K2"])
def test_generation_steps_match_reference_generator(ratios, n_rnn, nb_classes,
                                                    weight_norm, learn_h0):
  predictor, state_dict = reference(ratios, n_rnn, nb_classes, weight_norm,
                                    learn_h0)
  graphdef, params = imported_params(state_dict)
  lookback = M.bind(graphdef, params).cfg.lookback
  x_BxW, cond_BxC = inputs(lookback, 2 * lookback, nb_classes)
  expected = R.generate_log_probs(predictor, torch.from_numpy(x_BxW),
                                  torch_or_none(cond_BxC)).numpy()
  # The reference generator agrees with its own teacher-forced forward.
  with torch.no_grad():
    forward = predictor(torch.from_numpy(x_BxW[:, :-1]), True,
                        torch_or_none(cond_BxC)).numpy()
  np.testing.assert_allclose(expected, forward, atol=1e-10)
  cond_BxNxC = np.zeros((2, 2, nb_classes)) if cond_BxC is None else (
      np.repeat(cond_BxC[:, None], 2, axis=1))
  # The production generator, teacher-forced on the same sequences.
  got = generator_log_probs(graphdef, params, jnp.asarray(x_BxW),
                            jnp.asarray(cond_BxNxC, jnp.float32))
  np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("weight_norm,learn_h0", [(True, True),
                                                  (False, False)])
def test_round_trips_are_bitwise(weight_norm, learn_h0, tmp_path):
  _, state_dict = reference([4, 2], 2, 3, weight_norm, learn_h0)
  cfg = TI.model_config(TI.infer_hyperparameters(state_dict))
  assert cfg.learn_h0 == learn_h0  # the zero h0 buffer reads as not learned
  back = TI.params_to_torch(TI.params_from_torch(state_dict, cfg), cfg)
  assert list(back) == list(state_dict)  # torch's key order too
  for key, value in state_dict.items():
    assert back[key].dtype == np.float32
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  # Our params -> torch -> file -> ours.
  params = random_params(cfg, seed=3)
  path = tmp_path / "exported.pt"
  TI.save_torch_checkpoint(TI.params_to_torch(params, cfg), path)
  again = TI.params_from_torch(TI.load_torch_checkpoint(path), cfg)
  assert (jax.tree_util.tree_structure(again)
          == jax.tree_util.tree_structure(params))
  for (key, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                         jax.tree_util.tree_leaves(again)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(key))


def test_exported_file_loads_strictly_into_reference_and_agrees(tmp_path):
  cfg = M.ModelConfig(frame_sizes=(4, 4, 8), dim=16, n_rnn=2, cond_dim=2)
  graphdef, _ = M.abstract(cfg)
  params = random_params(cfg, seed=1)
  path = tmp_path / "ours.pt"
  TI.save_torch_checkpoint(TI.params_to_torch(params, cfg), path)
  predictor = R.Predictor(R.SampleRNN([4, 2], 2, 16, True, 256, True, 2))
  predictor.load_state_dict(torch.load(path, weights_only=True), strict=True)
  predictor.double()
  x_BxW, cond_BxC = inputs(8, 16, 2)
  m = M.bind(graphdef, params)
  logits, _ = m.forward(jnp.asarray(x_BxW), jnp.asarray(cond_BxC, jnp.float32),
                        m.initial_carry(2))
  with torch.no_grad():
    expected = predictor(torch.from_numpy(x_BxW[:, :-1]), True,
                         torch.from_numpy(cond_BxC)).numpy()
  np.testing.assert_allclose(jax.nn.log_softmax(logits), expected, atol=1e-4)


def test_infer_hyperparameters():
  _, state_dict = reference([2, 2, 2], n_rnn=2, nb_classes=5,
                            weight_norm=False, learn_h0=False, dim=24,
                            q_levels=64)
  assert TI.infer_hyperparameters(state_dict) == dict(
      frame_sizes=(2, 2, 4, 8), dim=24, n_rnn=2, q_levels=64, nb_classes=5,
      weight_norm=False, learn_h0=False)
  _, state_dict = reference([16, 4], dim=8)
  assert TI.infer_hyperparameters(state_dict) == dict(
      frame_sizes=(16, 16, 64), dim=8, n_rnn=1, q_levels=256, nb_classes=0,
      weight_norm=True, learn_h0=True)
  assert TI.frame_sizes_from_reference([16, 4]) == (16, 16, 64)
  assert TI.reference_frame_sizes((16, 16, 64)) == [16, 4]


@pytest.mark.parametrize("given,match", [
    (dict(dim=32), r"dim=32 was given.*dim=16: model\.sample_level_mlp\."
     r"hidden\.bias has shape \(16,\)"),
    (dict(frame_sizes=(16, 16, 64)), r"original --frame_sizes 16 4\).*"
     r"model\.frame_level_rnns\.1\.upsampling\.bias has shape \(16, 2\)"),
    (dict(n_rnn=1), r"n_rnn=1 was given.*weight_ih_l0\.\.l1"),
    (dict(nb_classes=4), r"nb_classes=4.*input_expand\.weight_v has shape "
     r"\(16, 7, 1\)"),
    (dict(weight_norm=False), r"hidden has weight_g and weight_v"),
    (dict(q_levels=128), r"embedding\.weight has shape \(256, 256\)"),
])
def test_disagreeing_hyperparameter_names_key_and_shape(given, match):
  _, state_dict = reference([4, 2], n_rnn=2, nb_classes=3)
  with pytest.raises(ValueError, match=match):
    TI.resolve_hyperparameters(state_dict, **given)
  # The values that agree pass.
  agreed = TI.resolve_hyperparameters(state_dict, dim=16, n_rnn=2,
                                      frame_sizes=(4, 4, 8))
  assert agreed == TI.infer_hyperparameters(state_dict)


def test_learn_h0_from_buffer_and_values():
  _, learned = reference([4], learn_h0=True)
  _, buffer = reference([4], learn_h0=False)
  assert not np.any(buffer["model.frame_level_rnns.0.h0"])
  assert TI.resolve_hyperparameters(buffer, learn_h0=True)["learn_h0"]
  with pytest.raises(ValueError, match=r"learn_h0=False.*"
                     r"frame_level_rnns\.0\.h0 is a nonzero"):
    TI.resolve_hyperparameters(learned, learn_h0=False)
  cfg = TI.model_config(TI.infer_hyperparameters(buffer))
  without_buffer = {k: v for k, v in buffer.items() if not k.endswith("h0")}
  assert "h0" not in TI.params_from_torch(without_buffer, cfg)["frame_tiers"][0]
  with pytest.raises(ValueError, match=r"learn_h0=True.*has no "
                     r"model\.frame_level_rnns\.0\.h0"):
    TI.resolve_hyperparameters(without_buffer, learn_h0=True)
  learned_cfg = TI.model_config({**TI.infer_hyperparameters(buffer),
                                 "learn_h0": True})
  with pytest.raises(ValueError, match=r"no model\.frame_level_rnns\.0\.h0 "
                     r"\(1, 16\)"):
    TI.params_from_torch(without_buffer, learned_cfg)
  with pytest.raises(ValueError, match=r"frame_level_rnns\.0\.h0 is not zero"):
    TI.params_from_torch(learned, cfg)


def test_missing_misshaped_and_unexpected_keys_are_named():
  _, state_dict = reference([4, 2], n_rnn=1, nb_classes=3)
  cfg = TI.model_config(TI.infer_hyperparameters(state_dict))
  key = "model.frame_level_rnns.1.rnn.weight_hh_l0"
  missing = {k: v for k, v in state_dict.items() if k != key}
  with pytest.raises(ValueError, match=rf"no {key} \(48, 16\)"):
    TI.params_from_torch(missing, cfg)
  misshaped = {**state_dict, key: np.zeros((48, 15), np.float32)}
  with pytest.raises(ValueError,
                     match=rf"{key} has shape \(48, 15\).*needs \(48, 16\)"):
    TI.params_from_torch(misshaped, cfg)
  extra = {**state_dict, "model.frame_level_rnns.0.rnn.bias_ih_l1":
           np.zeros(48, np.float32)}
  with pytest.raises(ValueError, match=r"rnn\.bias_ih_l1 \(48,\)"):
    TI.params_from_torch(extra, cfg)
  with pytest.raises(ValueError, match=r"no model\.sample_level_mlp\."
                     r"embedding\.weight"):
    TI.infer_hyperparameters({k: v for k, v in state_dict.items()
                              if "embedding" not in k})
  # A bare SampleRNN state dict (no "model." prefix) reads the same.
  bare = {k[len("model."):]: v for k, v in state_dict.items()}
  assert TI.infer_hyperparameters(bare) == TI.infer_hyperparameters(state_dict)


def test_export_refuses_what_the_original_cannot_load():
  cfg = M.ModelConfig(frame_sizes=(2, 4, 8), dim=8)
  with pytest.raises(ValueError, match=r"FS\(1\) must equal FS\(2\)"):
    TI.params_to_torch(random_params(cfg, 0), cfg)
  cfg = M.ModelConfig(frame_sizes=(4, 4), dim=8)
  params = random_params(cfg, 0)
  params["mlp"]["extra"] = jnp.zeros(3)
  with pytest.raises(ValueError, match="no counterpart.*mlp/extra"):
    TI.params_to_torch(params, cfg)


@pytest.mark.parametrize("options", [dict(cond_mlp=True),
                                     dict(cond_embed_dim=3)])
def test_condition_options_are_refused_by_name(options):
  cfg = M.ModelConfig(frame_sizes=(4, 4), dim=8, cond_dim=2, **options)
  message = "only models with cond_mlp=False and cond_embed_dim=0 convert"
  with pytest.raises(ValueError, match=message):
    TI.params_to_torch(random_params(cfg, 0), cfg)
  with pytest.raises(ValueError, match=message):
    TI.params_from_torch({}, cfg)


def test_checkpoint_files_and_missing_torch(tmp_path, monkeypatch):
  predictor, state_dict = reference([4])
  path = tmp_path / "ep1-it100"
  torch.save(predictor.float().state_dict(), path)  # the original's format
  loaded = TI.load_torch_checkpoint(path)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(loaded[key], value)
  torch.save({"epoch": 3, "state": [1, 2]}, tmp_path / "other")
  with pytest.raises(ValueError, match="expected a state dict"):
    TI.load_torch_checkpoint(tmp_path / "other")
  (tmp_path / "notes.txt").write_text("not a checkpoint")
  with pytest.raises(ValueError, match=r"notes\.txt: torch\.load"):
    TI.load_torch_checkpoint(tmp_path / "notes.txt")
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=re.escape(TI.INSTALL_HINT)):
    TI.load_torch_checkpoint(path)


def test_cli_import_then_export(tmp_path, capsys):
  predictor, state_dict = reference([4, 2], n_rnn=1, nb_classes=2)
  source = tmp_path / "best-ep3-it900"
  TI.save_torch_checkpoint(state_dict, source)
  run = tmp_path / "run"
  assert import_torch.main([str(source), "--frame-sizes", "4", "3",
                            "--workdir", str(run)]) == 2
  assert "upsampling.bias has shape (16, 2)" in capsys.readouterr().err
  assert import_torch.main([str(source), "--frame-sizes", "4", "2", "--dim",
                            "16", "--nb-classes", "2", "--class-names",
                            "happy,sad", "--workdir", str(run)]) == 0
  config, cfg, _, params, _ = checkpoint.load_run(str(run))
  assert tuple(config.data.class_names) == ("happy", "sad")
  assert cfg.quantization == "linear-minmax" and cfg.frame_sizes == (4, 4, 8)
  out = tmp_path / "back.pt"
  assert export_torch.main(["--workdir", str(run), "--out", str(out)]) == 0
  back = TI.load_torch_checkpoint(out)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_unconditional_two_tier_checkpoint_imports_and_generates(tmp_path):
  """samplernn-pytorch's layout is the original's without class columns:
  such a checkpoint (2 tiers, 2 GRU layers, nb_classes 0) imports from the
  CLI with no hyperparameter given, and the run's generator assigns its own
  samples the reference's log-probabilities."""
  predictor, state_dict = reference([4], n_rnn=2, nb_classes=0)
  source = tmp_path / "ep2-it500"
  torch.save(predictor.float().state_dict(), source)  # its trainer's format
  predictor.double()
  run = tmp_path / "run"
  assert import_torch.main([str(source), "--workdir", str(run)]) == 0
  config, cfg, graphdef, params, _ = checkpoint.load_run(str(run))
  assert (cfg.frame_sizes, cfg.n_rnn, cfg.cond_dim) == ((4, 4), 2, 0)
  assert tuple(config.data.class_names) == ()
  from csrnn_jax import sampling  # pylint: disable=import-outside-toplevel
  x_BxN, logp_BxN = sampling.Generator(graphdef, params).generate(
      np.zeros((2, 0), np.float32), [1, 2], 24)
  sequences = np.concatenate([np.full((2, 4), 128), x_BxN], axis=1)
  expected_BxNxQ = R.generate_log_probs(predictor,
                                        torch.from_numpy(sequences)).numpy()
  expected_BxN = np.take_along_axis(expected_BxNxQ, x_BxN[..., None],
                                    -1)[..., 0]
  np.testing.assert_allclose(logp_BxN, expected_BxN, atol=1e-4)


@pytest.mark.parametrize("options", [dict(cell="lstm"),
                                     dict(skip_conn=True)])
def test_lstm_and_skip_models_are_refused_by_name(options):
  cfg = M.ModelConfig(frame_sizes=(4, 4, 8), dim=8, **options)
  message = "only models with cell='gru' and skip_conn=False convert"
  with pytest.raises(ValueError, match=message):
    TI.params_to_torch(random_params(cfg, 0), cfg)
  with pytest.raises(ValueError, match=message):
    TI.params_from_torch({}, cfg)


def test_lstm_checkpoint_is_refused_on_import(tmp_path, capsys):
  """A SampleRNN whose frame tiers are torch.nn.LSTMs (no known layout):
  the same keys, with four gates' rows."""
  _, state_dict = reference([4, 2], n_rnn=1, nb_classes=2)
  for i in range(2):
    lstm = torch.nn.LSTM(16, 16, 1, batch_first=True)
    for name, value in lstm.state_dict().items():
      state_dict[f"model.frame_level_rnns.{i}.rnn.{name}"] = value.numpy()
  message = (r"weight_ih_l0 has shape \(64, 16\); a GRU's is \(3 dim, dim\) "
             r"= \(48, 16\): four gates, an LSTM's\. No layout of LSTM "
             r"SampleRNN checkpoints is known")
  with pytest.raises(ValueError, match=message):
    TI.infer_hyperparameters(state_dict)
  source = tmp_path / "lstm.pt"
  TI.save_torch_checkpoint(state_dict, source)
  assert import_torch.main([str(source), "--workdir",
                            str(tmp_path / "run")]) == 2
  assert "an LSTM's" in capsys.readouterr().err
