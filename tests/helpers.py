"""What many test files share: the tiny recipe, training it, and comparing
what runs left behind. Test files import from here, never from each other.

Letters: W = WINDOWS_PER_BATCH, the Adam steps of one chunk batch of the
tiny dataset (audio_fixtures) under configs/tiny.py.
"""
import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import model as model_lib
from csrnn_jax import sampling
from csrnn_jax import sharding
from csrnn_jax import trainer
from csrnn_jax.kernels import gru

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


def assert_trees_equal_to_rounding(a, b, ulps=16):
  """Two different compiled programs of the same float32 arithmetic: XLA
  may order, fuse and contract their operations differently, which moves a
  value by a few units in the last place of the magnitudes involved (2 to 4
  of a leaf's largest value, seen with XLA's legacy CPU emitters). ``ulps``
  of each leaf's largest magnitude is far below what a change in the
  arithmetic itself gives (1e-3 and up, relatively)."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    scale = float(np.max(np.abs(y))) if y.size else 0.0
    np.testing.assert_allclose(
        x, y, rtol=0, atol=ulps * np.finfo(np.float32).eps * scale)


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
  """Every parameter random (init zeros biases and h0, which hide bugs);
  drawn on the host, as ``random_x``."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda x: jnp.asarray(np.asarray(x) + scale * rng.standard_normal(
          x.shape, np.float32), x.dtype), params)


def make(cfg, seed=0):
  """(graphdef, params) of a ModelConfig, every parameter random."""
  graphdef, params = model_lib.build(cfg, seed)
  return graphdef, randomize(params, seed)


def random_x(batch, length, q=256, seed=1):
  """int32 (batch, length) random levels in [0, q), drawn on the host (an
  eager jax.random draw compiles a program for every shape)."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(0, q, (batch, length), dtype=np.int32))


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef, params, x_BxT, cond, carry=None):
  """The training forward, (logits (B, T - FS(K), Q), carry after), from
  ``carry`` (default h0), as one compiled program: run eagerly, each of its
  ops and scans compiles a program of its own per shape."""
  m = model_lib.bind(graphdef, params)
  if carry is None:
    carry = m.initial_carry(x_BxT.shape[0])
  return m.forward(x_BxT, cond, carry)


def forward_logits(graphdef, params, x_BxT, cond):
  """``forward``'s logits from h0."""
  return forward(graphdef, params, x_BxT, cond)[0]


def teacher_forced_logp(graphdef, params, x_BxN, cond, prefix_BxP=None):
  """log p(x_t | x_<t) from the training forward, after q_zero silence (and
  an optional prefix whose length is a multiple of FS(K))."""
  lookback = model_lib.bind(graphdef, params).cfg.lookback
  parts = [jnp.full((x_BxN.shape[0], lookback), 128, jnp.int32)]
  if prefix_BxP is not None:
    parts.append(prefix_BxP)
  x = jnp.concatenate(parts + [jnp.asarray(x_BxN)], axis=1)
  logits = forward_logits(graphdef, params, x, cond)
  logp = jax.nn.log_softmax(logits)
  skip = 0 if prefix_BxP is None else prefix_BxP.shape[1]
  return jnp.take_along_axis(logp[:, skip:], jnp.asarray(x_BxN)[..., None],
                             -1)[..., 0], logits[:, skip:]


def generator_log_probs(graphdef, params, x_BxW, cond_BxNxC):
  """The production generator fed x_BxW's samples after the first FS(K)
  (teacher forcing, ``Generator.score``), from the state a window starts
  in: h0, and those FS(K) samples as the frame before. Returns every level's
  log-probability at each position, (B, W - FS(K), Q), as ``forward``."""
  gen = sampling.Generator(graphdef, params)
  lookback = gen.cfg.lookback
  b, w = x_BxW.shape
  plan = gen.plan(cond_BxNxC, np.arange(b), w - lookback)
  start = sampling.GenState(model_lib.bind(graphdef, params).initial_carry(b),
                            jnp.asarray(x_BxW[:, :lookback], jnp.int32))
  _, logp_BxTxQ = gen.score(plan, start, np.arange(plan.n_frames),
                            x_BxW[:, lookback:])
  return logp_BxTxQ


def gru_inputs(seed=0, b=3, t=9, d=8, h=12):
  """Random (x_BxTxD, h0_BxD, w_ih, w_hh, b_ih, b_hh) of a GRU layer."""
  k = jax.random.split(jax.random.key(seed), 6)
  return (jax.random.normal(k[0], (b, t, d)), jax.random.normal(k[1], (b, h)),
          0.3 * jax.random.normal(k[2], (d, 3 * h)),
          0.3 * jax.random.normal(k[3], (h, 3 * h)),
          0.3 * jax.random.normal(k[4], (3 * h,)),
          0.3 * jax.random.normal(k[5], (3 * h,)))


def gru_loss(backend, *args):
  """A scalar of every output of ``gru.gru_sequence`` (their gradients
  reach every input)."""
  h_BxTxD, h_last = gru.gru_sequence(*args, backend=backend)
  weights = jnp.sin(jnp.arange(h_BxTxD.size).reshape(h_BxTxD.shape))
  return jnp.sum(h_BxTxD * weights) + jnp.sum(h_last ** 2)
