"""What many test files share: the tiny recipe, training it, and comparing
what runs left behind. Test files import from here, never from each other.

Letters: W = WINDOWS_PER_BATCH, the Adam steps of one chunk batch of the
tiny dataset (audio_fixtures) under configs/tiny.py.
"""
import functools
import importlib.util
import pathlib

import jax
import numpy as np

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import model as model_lib
from csrnn_jax import sharding
from csrnn_jax import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
# A 0.5 s chunk of audio_fixtures (8000 samples) holds FS(K) = 16 samples of
# lookback and 7 whole windows of tiny_config's 1024.
WINDOWS_PER_BATCH = 7


def tiny_config(dataset, **train):
  """configs/tiny.py on ``dataset`` with TBPTT windows of 1024 samples (W
  per chunk batch) and no prefetch thread, then train.KEY overrides: a
  config file's ConfigDict, as the command line gives it."""
  spec = importlib.util.spec_from_file_location("tiny",
                                                REPO / "configs/tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.dataset_dir = str(dataset)
  config.data.prefetch = 0
  config.train.seq_len = 1024
  for key, value in train.items():
    config.train[key] = value
  return config


@functools.cache
def one_device():
  """The mesh of every run that is not about sharding: one device."""
  return sharding.make_mesh(jax.devices()[:1])


def train_run(config, workdir, mesh=None, **kwargs):
  """Trains a config file's ConfigDict (resolved as train.py does) in
  ``workdir``, on one device unless ``mesh`` says otherwise."""
  return trainer.train_and_evaluate(configlib.resolve(config), str(workdir),
                                    mesh or one_device(), **kwargs)


def final_params(workdir):
  """(params, step) of a run's latest checkpoint."""
  _, _, _, params, step = checkpoint_lib.load_run(str(workdir), "latest")
  return params, step


def assert_trees_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# A child process that holds a run directory's lock until killed.
HOLD_LOCK = """
import sys, time
from csrnn_jax import rundir
with rundir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def tiny_run_config(dataset, **train):
  """``tiny_config``'s RunConfig, resolved against ``dataset`` as train.py
  resolves it (condition length and class names from its manifest)."""
  return configlib.resolve(tiny_config(dataset, **train))


def randomize(params, seed=0, scale=0.3):
  """Every parameter random (init zeros biases and h0, which hide bugs)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, new)


def make(cfg, seed=0):
  """(graphdef, params) of a ModelConfig, every parameter random."""
  graphdef, params = model_lib.build(cfg, seed)
  return graphdef, randomize(params, seed)


def random_x(batch, length, q=256, seed=1):
  """int32 (batch, length) random levels in [0, q)."""
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, q)
