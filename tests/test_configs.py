"""Every file in configs/ loads, passes configlib.validate, and builds its
model (abstractly: shapes only) with the condition length its data gives."""
import importlib.util
import pathlib

import pytest

from csrnn_jax import configlib
from csrnn_jax import model as model_lib

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs")
                 .glob("*.py"))
# cond_dim for a config that takes it from its dataset (model.cond_dim = -1)
# and names no classes: any dataset's, e.g. five speakers.
FROM_DATA = 5


def load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def data_cond_dim(config) -> int:
  """The condition length the config's data gives: its class or vector
  names, else FROM_DATA."""
  names = config.data.class_names or config.data.cond_names
  return len(names) if names else FROM_DATA


def test_every_paper_experiment_has_a_config():
  names = {p.stem for p in CONFIGS}
  assert names >= {"ambient", "demo", "emotify", "lastfm_emotions",
                   "piano_violin", "tiny", "voices"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_builds(path):
  module = load(path)
  config = configlib.validate(module.get_config())
  assert config.name == path.stem
  cond_dim = data_cond_dim(config)
  assert config.model.cond_dim in (-1, cond_dim)
  values = config.to_dict()
  values["model"]["cond_dim"] = cond_dim
  mcfg = configlib.from_dict(values).model
  assert mcfg.cond_dim == cond_dim
  _, params = model_lib.abstract(mcfg)
  assert model_lib.param_count(params) > 0
  # The header says how to run it.
  assert f"python train.py --config configs/{path.name}" in module.__doc__


@pytest.mark.parametrize("name", ["ambient", "voices", "piano_violin",
                                  "lastfm_emotions", "emotify"])
def test_paper_configs_use_the_paper_hyperparameters(name):
  config = load(next(p for p in CONFIGS if p.stem == name)).get_config()
  assert tuple(config.model.frame_sizes) == (16, 16, 64)
  assert (config.model.dim, config.model.n_rnn) == (1024, 1)
  assert (config.train.batch_size, config.train.seq_len) == (128, 1024)
  assert config.train.learning_rate == 1e-3
  assert config.train.clip == "value" and config.model.weight_norm


def test_emotify_condition_is_genres_then_emotions():
  config = load(next(p for p in CONFIGS if p.stem == "emotify")).get_config()
  assert config.model.cond_dim == 13
  assert list(config.data.cond_names[:4]) == ["pop", "rock", "classical",
                                              "electronic"]
