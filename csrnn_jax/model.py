"""Conditional SampleRNN as flax.nnx modules (docs/design.md §2).

K tiers, bottom first: tier 1 is the sample-level MLP, tiers 2..K are
frame-level GRU (or LSTM) tiers. ``ModelConfig.frame_sizes = (FS(1), ...,
FS(K))``.
Shape letters. A name ends in its array's shape (``x_BxT``: B rows of T
steps); each letter has one meaning across the package:

  B  rows of a batch: output streams, or chunks of a training batch
  R  rows of a generation program, every guidance pass of every output row
     (R = B G; R = B without guidance)
  G  guidance passes of one output row: its M components and the null
  M  components of a condition (a mix)
  C  the condition's length (classes of a one-hot, or a vector's size)
  Q  quantisation levels
  D  units of a tier's RNN and of the MLP (``ModelConfig.dim``)
  Z  an RNN cell's gate columns, gates times D (3D GRU, 4D LSTM)
  Y  RNN layers of a frame tier (``ModelConfig.n_rnn``)
  K  tiers (FS(K) is the top frame)
  L  samples per frame: a tier's FS(k) (FS(1): the MLP's taps), or the
     length of an analysis frame
  U  steps of a tier per frame of the tier above, FS(k + 1) / FS(k)
  T  time steps: a tier's frames over a window or segment, the samples of
     a waveform
  W  samples a training window reads: its look-back and T samples
  S  generated samples (a segment, a clip)
  P  prime samples
  N  items of a collection: windows of a chunk batch, chunks, clips, rows
  F  analysis frames of a waveform (crash detector, evaluation)
  E  spectral coefficients: FFT bins, mel bands, MFCCs, features of them
  J  lags of an autocorrelation
  I, O  a layer's inputs and outputs
  X  any trailing shape

Modules hold only parameters; ``build`` splits a model into a graphdef and a
plain dict of arrays, and ``bind`` merges them back inside jitted code, so
training, sampling and checkpoints all work on plain pytrees.

Entry points on ``CSampleRNN`` (shapes in their docstrings):
``forward`` (teacher-forced TBPTT window with an explicit carry) and
``initial_carry``. Each tier has one definition that training and
generation share: ``FrameTier.__call__`` serves T frames of a window and the
single frame of a generation step, and ``SampleMLP`` alone reads the MLP's
weights (``features``/``head`` over a window; ``step_tables``,
``running_sums``, ``push_sample`` and ``head`` one sample at a time, which
``sampling`` runs).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from csrnn_jax import audio
from csrnn_jax import numerics
from csrnn_jax.kernels import gru as gru_kernels
from csrnn_jax.kernels import lstm as lstm_kernels
from csrnn_jax.kernels import sample_step
from csrnn_jax.kernels import taps

SAMPLE_INPUTS = ("taps", "conv")
NULL_CONDS = ("zeros", "learned")
GRU_BACKENDS = ("auto",) + gru_kernels.BACKENDS
CELLS = ("gru", "lstm")
# Row keys fold in this tag for RNN dropout (augment.py's options use 1, 2).
DROPOUT_TAG = 3


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model: its tiers, sizes and options; validated on construction."""
  frame_sizes: tuple[int, ...] = (16, 16, 64)  # (FS(1), ..., FS(K)) in
                                               # samples, bottom first
  dim: int = 1024  # units of each frame tier's RNN and of the MLP
  n_rnn: int = 1  # RNN layers per frame tier
  q_levels: int = 256  # Q: quantisation levels (the softmax's size)
  cond_dim: int = 0  # C, the condition's length; -1 in a config file: from
                     # the dataset (number of classes / vector length)
  weight_norm: bool = True  # weight norm on the layers (the reference's)
  learn_h0: bool = True  # the RNNs' initial state is learned, else zeros
  quantization: str = "linear"  # linear | mu-law | linear-minmax
  sample_input: str = "taps"  # taps | conv (the plain reference)
  gru_backend: str = "auto"  # auto | scan (the reference) | fused | pallas
  cell: str = "gru"  # the frame tiers' RNN: gru (the reference) | lstm
  lstm_forget_bias: float = 0.0  # initial forget-gate bias of LSTM cells,
                                 # e.g. 3
  skip_conn: bool = False  # every frame tier's output also reaches the MLP
  rnn_dropout: float = 0.0  # dropout on each RNN layer's outputs, training
                            # only
  null_cond: str = "zeros"  # zeros | learned: the condition of "no
                            # condition"
  cond_mlp: bool = False  # the condition also enters the sample-level MLP
  cond_embed_dim: int = 0  # > 0: a learned linear condition embedding (no
                           # bias)
  preemphasis: float = 0.0  # noise shaping filter coefficient in [0, 1),
                            # e.g. 0.85
  compute_dtype: str = "float32"  # matmul operands: float32 | bfloat16
                                  # (mixed)
  matmul_precision: str = "highest"  # highest (float32) | high | default
                                     # (TF32)

  def __post_init__(self):
    object.__setattr__(self, "frame_sizes", tuple(self.frame_sizes))
    fs = self.frame_sizes
    if len(fs) < 2 or any(not isinstance(f, int) or f < 1 for f in fs):
      raise ValueError(
          f"model.frame_sizes={fs!r} must list K >= 2 positive integers, "
          "bottom first: (FS(1), FS(2), ..., FS(K)), e.g. (16, 16, 64)")
    for lower, upper in zip(fs[1:-1], fs[2:]):
      if upper % lower:
        raise ValueError(
            f"model.frame_sizes={fs!r}: frame size {upper} is not a multiple "
            f"of the tier below ({lower}); each FS(k+1) must divide by FS(k) "
            "for k >= 2, e.g. (16, 16, 64)")
    if fs[0] > fs[-1]:
      raise ValueError(
          f"model.frame_sizes={fs!r}: the MLP window FS(1)={fs[0]} must not "
          f"exceed the top frame FS(K)={fs[-1]}")
    for name, low in (("dim", 1), ("n_rnn", 1), ("q_levels", 2),
                      ("cond_dim", 0), ("cond_embed_dim", 0)):
      value = getattr(self, name)
      if not isinstance(value, int) or value < low:
        raise ValueError(
            f"model.{name}={value!r} must be an integer >= {low}")
    if isinstance(self.preemphasis, bool) or not isinstance(
        self.preemphasis, (int, float)):
      raise ValueError(
          f"model.preemphasis={self.preemphasis!r} must be a number in [0, 1)")
    object.__setattr__(self, "preemphasis", float(self.preemphasis))
    audio.check_preemphasis(self.preemphasis)
    audio.check_quantization(self.quantization)
    numerics.check_compute_dtype(self.compute_dtype)
    numerics.check_matmul_precision(self.matmul_precision)
    self._check_rnn_options()
    if self.gru_backend not in GRU_BACKENDS:
      raise ValueError(
          f"model.gru_backend={self.gru_backend!r} is unknown; allowed "
          f"values: {', '.join(GRU_BACKENDS)}")
    if self.null_cond not in NULL_CONDS:
      raise ValueError(
          f"model.null_cond={self.null_cond!r} is unknown; allowed values: "
          f"{', '.join(NULL_CONDS)}")
    if self.sample_input not in SAMPLE_INPUTS:
      raise ValueError(
          f"model.sample_input={self.sample_input!r} is unknown; allowed "
          f"values: {', '.join(SAMPLE_INPUTS)}")

  def _check_rnn_options(self):
    if self.cell not in CELLS:
      raise ValueError(f"model.cell={self.cell!r} is unknown; allowed values: "
                       f"{', '.join(CELLS)}")
    for name in ("lstm_forget_bias", "rnn_dropout"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"model.{name}={value!r} must be a number")
      object.__setattr__(self, name, float(value))
    if self.lstm_forget_bias and self.cell != "lstm":
      raise ValueError(
          f"model.lstm_forget_bias={self.lstm_forget_bias} initialises an "
          f"LSTM's forget gate, but model.cell={self.cell!r}; set "
          "model.cell='lstm' or leave it 0")
    if not 0.0 <= self.rnn_dropout < 1.0:
      raise ValueError(
          f"model.rnn_dropout={self.rnn_dropout} must be in [0, 1) (the share "
          "of each RNN layer's outputs dropped in training; 0 turns it off)")
    if not isinstance(self.skip_conn, bool):
      raise ValueError(f"model.skip_conn={self.skip_conn!r} must be a bool")
    if self.skip_conn and len(self.frame_sizes) < 3:
      raise ValueError(
          f"model.skip_conn=True with frame_sizes={self.frame_sizes}: skip "
          "connections join the frame tiers above tier 2 to the sample MLP, "
          "and a 2-tier model has none; use K >= 3 tiers or turn it off")

  @property
  def resolved_gru_backend(self) -> str:
    """``auto`` is the backend measured fastest: ``fused`` on the CPU
    (``bench/RESULTS.md``). No GPU has been measured yet
    (``bench/RESULTS_gpu.md``, written by ``bench/device_check.sh``), so on a
    GPU too it stays ``fused`` until the Pallas kernel is measured faster."""
    return "fused" if self.gru_backend == "auto" else self.gru_backend

  @property
  def cond_input_dim(self) -> int:
    """Entries of the condition that the tiers (and the MLP) read: the
    embedding's size with ``cond_embed_dim``, else cond_dim."""
    return self.cond_embed_dim or self.cond_dim

  @property
  def lookback(self) -> int:
    """Samples of context before a window: the top frame, FS(K)."""
    return self.frame_sizes[-1]

  @property
  def upsample_ratios(self) -> tuple[int, ...]:
    """r_k for frame tiers 2..K (bottom first): r_2 = FS(2), else
    FS(k)/FS(k-1)."""
    fs = self.frame_sizes
    return (fs[1],) + tuple(fs[k] // fs[k - 1] for k in range(2, len(fs)))


def _in_matmul_precision(method):
  """Runs a module's method under its model's ``matmul_precision``
  (``numerics``): every matmul it traces, and the transposes autodiff takes
  of them, carry that precision."""
  @functools.wraps(method)
  def run(self, *args, **kwargs):
    with numerics.matmul_precision_scope(self.matmul_precision):
      return method(self, *args, **kwargs)
  return run


def _uniform(rngs, shape, bound):
  return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)


def _kaiming_uniform(rngs, shape, fan_in):
  """torch.nn.init.kaiming_uniform (a=0, fan_in): bound sqrt(6 / fan_in)."""
  return _uniform(rngs, shape, math.sqrt(6.0 / fan_in))


def _lecun_uniform(rngs, shape, fan_in):
  return _uniform(rngs, shape, math.sqrt(3.0 / fan_in))


class Weight(nnx.Module):
  """A weight, optionally weight-normalised (torch.nn.utils.weight_norm).

  With weight norm the parameters are ``v`` and ``g`` (one per index of
  ``keep_axis``), and the weight is ``g * v / ||v||`` with the norm over every
  other axis; ``g`` starts at ``||v||`` so the first weight is ``v``.
  """

  def __init__(self, value, weight_norm: bool, keep_axis: int):
    self.keep_axis = keep_axis
    if weight_norm:
      self.v = nnx.Param(value)
      self.g = nnx.Param(self._norm(value))
    else:
      self.w = nnx.Param(value)

  def _norm(self, value):
    axes = tuple(a for a in range(value.ndim) if a != self.keep_axis)
    return jnp.sqrt(jnp.sum(jnp.square(value), axis=axes))

  def __call__(self):
    if not hasattr(self, "v"):
      return self.w[...]
    v = self.v[...]
    shape = [1] * v.ndim
    shape[self.keep_axis] = v.shape[self.keep_axis]
    return v * (self.g[...] / self._norm(v)).reshape(shape)


class GRULayer(nnx.Module):
  """One torch.nn.GRU layer (gate order r, z, n), stored for ``x @ W``; its
  state is h (B, dim)."""

  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.w_ih = nnx.Param(_lecun_uniform(rngs, (dim, 3 * dim), dim))
    w_hh_rz = _lecun_uniform(rngs, (dim, 2 * dim), dim)
    w_hh_n = jax.nn.initializers.orthogonal()(rngs.params(), (dim, dim))
    self.w_hh = nnx.Param(jnp.concatenate([w_hh_rz, w_hh_n], axis=1))
    self.b_ih = nnx.Param(jnp.zeros((3 * dim,)))
    self.b_hh = nnx.Param(jnp.zeros((3 * dim,)))

  def weights(self):
    return self.w_ih[...], self.w_hh[...], self.b_ih[...], self.b_hh[...]

  def sequence(self, x_BxTxD, h_BxD, backend: str, compute_dtype: str):
    """Over T steps: (outputs (B, T, dim), last state)."""
    return gru_kernels.gru_sequence(x_BxTxD, h_BxD, *self.weights(),
                                    backend=backend,
                                    compute_dtype=compute_dtype)


class LSTMLayer(nnx.Module):
  """One torch.nn.LSTM layer (gate order i, f, g, o), stored for ``x @ W``;
  its state is (h, c), each (B, dim). Initialised as the GRU layer (LeCun
  uniform weights, the candidate g's recurrent weight orthogonal, zero
  biases), with ``forget_bias`` in the forget gate's b_ih."""

  def __init__(self, dim: int, forget_bias: float, rngs: nnx.Rngs):
    self.w_ih = nnx.Param(_lecun_uniform(rngs, (dim, 4 * dim), dim))
    w_hh_if = _lecun_uniform(rngs, (dim, 2 * dim), dim)
    w_hh_g = jax.nn.initializers.orthogonal()(rngs.params(), (dim, dim))
    w_hh_o = _lecun_uniform(rngs, (dim, dim), dim)
    self.w_hh = nnx.Param(jnp.concatenate([w_hh_if, w_hh_g, w_hh_o], axis=1))
    self.b_ih = nnx.Param(
        jnp.zeros((4 * dim,)).at[dim:2 * dim].set(forget_bias))
    self.b_hh = nnx.Param(jnp.zeros((4 * dim,)))

  def weights(self):
    return self.w_ih[...], self.w_hh[...], self.b_ih[...], self.b_hh[...]

  def sequence(self, x_BxTxD, state, backend: str, compute_dtype: str):
    """Over T steps: (outputs h (B, T, dim), last state)."""
    return lstm_kernels.lstm_sequence(x_BxTxD, state, *self.weights(),
                                      backend=backend,
                                      compute_dtype=compute_dtype)


def _layer_state(state, layer: int):
  """One layer's state from a stack's (every leaf (n_rnn, B, dim))."""
  return jax.tree_util.tree_map(lambda s: s[layer], state)


def _stack_states(states):
  """The stack's state from its layers' (leaves stacked on a new axis 0)."""
  return jax.tree_util.tree_map(lambda *s: jnp.stack(s), *states)


def fold_keys(keys_B, data: int):
  """``fold_in(key, data)`` for each row's key: (B,) keys -> (B,) keys."""
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys_B)


def dropout(x_BxTxD, keys_B, rate: float):
  """Inverted dropout, each row's mask drawn from its own key: a unit is
  zeroed with probability ``rate`` and the others scaled by 1 / (1 - rate),
  so that the model without dropout (evaluation, generation) sees the same
  expected activations. (B, T, D) -> (B, T, D)."""
  keep_BxTxD = jax.vmap(lambda k: jax.random.bernoulli(
      k, 1.0 - rate, x_BxTxD.shape[1:]))(keys_B)
  return jnp.where(keep_BxTxD, x_BxTxD / (1.0 - rate), 0.0)


class FrameTier(nnx.Module):
  """Frame tier k: input projection of [frame ++ cond] plus the tier above's
  vector, RNN stack (GRU or LSTM layers), upsampling (``__call__``); with
  ``skip`` also the weight that takes its vectors to the sample-level MLP.

  ``frame_size`` = FS(k) samples in, ``ratio`` = r_k conditioning vectors out
  per frame (one per frame of the tier below, or per sample for tier 2). The
  stack's state is (n_rnn, B, dim) for GRU layers, the pair (h, c) of such
  arrays for LSTM layers.
  """

  def __init__(self, cfg: ModelConfig, frame_size: int, ratio: int,
               rngs: nnx.Rngs, skip: bool = False):
    self.frame_size, self.ratio = frame_size, ratio
    self.cell = cfg.cell
    self.gru_backend = cfg.resolved_gru_backend
    self.compute_dtype = cfg.compute_dtype
    self.rnn_dropout = cfg.rnn_dropout
    dim, in_dim = cfg.dim, frame_size + cfg.cond_input_dim
    self.input = Weight(_kaiming_uniform(rngs, (in_dim, dim), in_dim),
                        cfg.weight_norm, keep_axis=1)
    self.input_bias = nnx.Param(jnp.zeros((dim,)))
    if cfg.cell == "lstm":
      self.lstm = nnx.List([LSTMLayer(dim, cfg.lstm_forget_bias, rngs)
                            for _ in range(cfg.n_rnn)])
    else:
      self.gru = nnx.List([GRULayer(dim, rngs) for _ in range(cfg.n_rnn)])
    if cfg.learn_h0:
      self.h0 = nnx.Param(jnp.zeros((cfg.n_rnn, dim)))
      if cfg.cell == "lstm":
        self.c0 = nnx.Param(jnp.zeros((cfg.n_rnn, dim)))
    self.upsample = Weight(
        _uniform(rngs, (dim, ratio, dim), math.sqrt(6.0 / dim)),
        cfg.weight_norm, keep_axis=0)
    self.upsample_bias = nnx.Param(jnp.zeros((ratio, dim)))
    if skip:
      # Zeros, so training starts from the model without skip connections;
      # no weight norm (the norm of a zero weight is 0/0).
      self.skip = nnx.Param(jnp.zeros((dim, dim)))

  def layers(self):
    return self.lstm if self.cell == "lstm" else self.gru

  def initial_state(self, batch_size: int):
    """The stack's state at a sequence start: h0 (and c0 for LSTM layers),
    learned or zeros, broadcast to (n_rnn, B, dim)."""
    n_rnn, dim = len(self.layers()), self.input_bias[...].shape[0]

    def start(name):
      h0_YxD = (getattr(self, name)[...] if hasattr(self, name)
               else jnp.zeros((n_rnn, dim)))
      return jnp.broadcast_to(h0_YxD[:, None, :], (n_rnn, batch_size, dim))

    return (start("h0"), start("c0")) if self.cell == "lstm" else start("h0")

  @jax.named_scope("project")
  def project(self, u_BxTxL, cond_BxTxC):
    """W [f_t ++ C] + b for every frame: (B, T, FS(k)), (B, T, C) ->
    (B, T, dim)."""
    return (numerics.dense(jnp.concatenate([u_BxTxL, cond_BxTxC], axis=-1),
                           self.input(), self.compute_dtype)
            + self.input_bias[...])

  @jax.named_scope("upsample")
  def upsample_frames(self, h_BxTxD):
    """ConvTranspose1d (kernel = stride = r) + (r, dim) bias: (B, T*r, dim)."""
    b, t, d = h_BxTxD.shape
    # One 2-D GEMM, (B*T, dim) @ (dim, r*dim), whose rows are already in the
    # order the tier below reads: as a 4-D einsum XLA transposed its
    # gradient through a strided copy (a fifth of the ambient training step).
    up_BTxRD = (numerics.dense(h_BxTxD.reshape(b * t, d),
                               self.upsample().reshape(d, self.ratio * d),
                               self.compute_dtype)
                + self.upsample_bias[...].reshape(-1))
    return up_BTxRD.reshape(b, t * self.ratio, d)

  def rnn_stack(self, in_BxTxD, state, dropout_keys_B=None):
    """The n_rnn layers over T frames: returns (outputs (B, T, dim), last
    state). With ``dropout_keys_B`` (one key per row) and ``rnn_dropout``,
    each layer's outputs go through dropout, layer j's mask drawn from
    ``fold_in(key, j)``."""
    x_BxTxD, last = in_BxTxD, []
    with jax.named_scope(self.cell):  # names for profiles
      for j, layer in enumerate(self.layers()):
        x_BxTxD, layer_state = layer.sequence(
            x_BxTxD, _layer_state(state, j), self.gru_backend,
            self.compute_dtype)
        if dropout_keys_B is not None and self.rnn_dropout:
          x_BxTxD = dropout(x_BxTxD, fold_keys(dropout_keys_B, j),
                            self.rnn_dropout)
        last.append(layer_state)
    return x_BxTxD, _stack_states(last)

  def __call__(self, u_BxTxL, cond_BxTxC, upper_BxTxD, state,
               dropout_keys_B=None):
    """The tier over T frames: a training window's, or (T = 1) the frame of
    a generation step. u_BxTxL: each frame's FS(k) samples as the tier reads
    them (``audio.frame_input``); cond_BxTxC: the condition per frame (C may
    be 0); upper_BxTxD: the tier above's vector per frame, None at the top.
    Returns (conditioning vectors (B, T r, dim), one per frame of the tier
    below, or per sample for tier 2; the new state)."""
    in_BxTxD = self.project(u_BxTxL, cond_BxTxC)
    if upper_BxTxD is not None:
      in_BxTxD = in_BxTxD + upper_BxTxD
    h_BxTxD, state = self.rnn_stack(in_BxTxD, state, dropout_keys_B)
    return self.upsample_frames(h_BxTxD), state

  def skip_term(self, vectors_BxD):
    """This tier's vectors as they reach the MLP (``skip_conn``): (..., dim)
    -> (..., dim)."""
    return numerics.dense(vectors_BxD, self.skip[...], self.compute_dtype)


class SampleMLP(nnx.Module):
  """Tier 1: Embedding(Q, Q) -> Conv1d(Q -> dim, FS(1)) + c, ReLU, dim->dim
  ReLU, dim->Q. The embedding+conv runs as tap tables unless configured
  ``sample_input="conv"`` (the reference)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    fs1, q, dim = cfg.frame_sizes[0], cfg.q_levels, cfg.dim
    self.sample_input = cfg.sample_input
    self.compute_dtype = cfg.compute_dtype
    self.matmul_precision = cfg.matmul_precision
    self.embedding = nnx.Param(jax.random.normal(rngs.params(), (q, q)))
    self.input = Weight(_kaiming_uniform(rngs, (fs1, q, dim), q * fs1),
                        cfg.weight_norm, keep_axis=2)
    self.hidden = Weight(_kaiming_uniform(rngs, (dim, dim), dim),
                         cfg.weight_norm, keep_axis=1)
    self.hidden_bias = nnx.Param(jnp.zeros((dim,)))
    self.output = Weight(_lecun_uniform(rngs, (dim, q), dim),
                         cfg.weight_norm, keep_axis=1)
    self.output_bias = nnx.Param(jnp.zeros((q,)))
    if cfg.cond_mlp:
      # Zeros, so training starts from the reference layout's function; no
      # weight norm (the norm of a zero weight is 0/0).
      self.cond = nnx.Param(jnp.zeros((cfg.cond_input_dim, dim)))

  @_in_matmul_precision
  def condition(self, cond_BxTxC):
    """The condition's own term of the MLP input (``cond_mlp``), added to
    tier 2's vectors: (..., C') -> (..., dim)."""
    return cond_BxTxC @ self.cond[...]

  @_in_matmul_precision
  def tables(self):
    """Tap tables (FS(1), Q, dim) for the current parameters."""
    return taps.tap_tables(self.embedding[...], self.input())

  @jax.named_scope("mlp_input")
  def features(self, x_BxW, tables_LxQxD=None):
    """Embedding+conv of every FS(1) window: (B, W) int -> (B, W-FS(1)+1,
    dim). ``tables_LxQxD`` (``tables()``, computed once): read them instead
    of the weights, so a generation loop does not rebuild them per sample."""
    if tables_LxQxD is not None:
      return taps.taps_input(tables_LxQxD, x_BxW)
    if self.sample_input == "conv":
      return taps.conv_input(self.embedding[...], self.input(), x_BxW)
    return taps.taps_input(self.tables(), x_BxW)

  def step_tables(self) -> sample_step.StepTables:
    """What one generated sample reads of the input layer, computed once per
    segment: the tap tables and their push layout (``sample_step``)."""
    tables_LxQxD = self.tables()
    return sample_step.StepTables(tables_LxQxD,
                                  sample_step.push_tables(tables_LxQxD))

  @staticmethod
  def running_sums(tables: sample_step.StepTables, prev_BxL):
    """The running tap sums (FS(1), B, dim) after the FS(1) samples
    ``prev_BxL``: entry 0 is the next sample's features (``features`` of
    those samples), entry k what they add k samples further on."""
    return sample_step.initial_sums(tables.taps_LxQxD, prev_BxL)

  @staticmethod
  def push_sample(tables: sample_step.StepTables, sums_LxBxD, x_B):
    """The running sums one position on, after sample x_B (B,) int."""
    return sample_step.push(tables.push_QxLxD, sums_LxBxD, x_B)

  @jax.named_scope("mlp_head")
  @_in_matmul_precision
  def head(self, features_BxTxD, c_BxTxD, pallas: bool = False):
    """ReLU(features + c) -> ReLU(hidden) -> logits (B, T, Q). ``pallas``:
    the Pallas kernels for (B, dim) rows (``sample_step.head_pallas``)."""
    head = sample_step.head_pallas if pallas else sample_step.head_jnp
    return head(features_BxTxD, c_BxTxD, self.hidden(), self.hidden_bias[...],
                self.output(), self.output_bias[...], self.compute_dtype)


def cond_per_frame(cond, batch_size: int, n_frames: int, frame_size: int,
                   top_frame: int):
  """Condition for each of n_frames frames of ``frame_size`` samples.

  ``cond`` is None, global (B, C), or local (B, T_K, C) with one vector per
  top frame of ``top_frame`` samples. Returns (B, n_frames, C).
  """
  if cond is None:
    return jnp.zeros((batch_size, n_frames, 0), jnp.float32)
  cond = jnp.asarray(cond, jnp.float32)
  if cond.ndim == 2:
    return jnp.broadcast_to(cond[:, None, :],
                            (batch_size, n_frames, cond.shape[-1]))
  per_top = top_frame // frame_size
  if cond.shape[1] * per_top != n_frames:
    raise ValueError(
        f"local conditioning has {cond.shape[1]} vectors; this window needs "
        f"one per top-tier frame: {n_frames // per_top}")
  return jnp.repeat(cond, per_top, axis=1)


class CSampleRNN(nnx.Module):
  """The whole model. ``frame_tiers[i]`` is tier i + 2 (bottom first)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    # Checked here, not in ModelConfig: a config checked before its dataset
    # fills in cond_dim has none yet.
    if (cfg.cond_mlp or cfg.cond_embed_dim) and not cfg.cond_dim:
      raise ValueError(
          f"model.cond_mlp={cfg.cond_mlp}, model.cond_embed_dim="
          f"{cfg.cond_embed_dim} shape the condition, but this model is "
          "unconditional (cond_dim=0); turn them off or train on a labelled "
          "dataset")
    self.cfg = cfg
    self.frame_tiers = nnx.List([
        FrameTier(cfg, fs, r, rngs, skip=cfg.skip_conn and i > 0)
        for i, (fs, r) in enumerate(zip(cfg.frame_sizes[1:],
                                        cfg.upsample_ratios))])
    self.mlp = SampleMLP(cfg, rngs)
    if cfg.cond_embed_dim:
      # Bound sqrt(3 / E): a one-hot condition's embedding starts with an
      # expected squared norm of 1, the one-hot vector's own.
      self.cond_embed = nnx.Param(_lecun_uniform(
          rngs, (cfg.cond_dim, cfg.cond_embed_dim), cfg.cond_embed_dim))
    if cfg.null_cond == "learned":
      self.null_cond = nnx.Param(jnp.zeros((cfg.cond_dim,)))

  @property
  def matmul_precision(self) -> str:
    return self.cfg.matmul_precision

  def null_condition(self, batch_size: int):
    """The condition that stands for "no condition" (condition dropout in
    training, the contrast of classifier-free guidance): (B, C), zeros or the
    learned vector."""
    null_C = (self.null_cond[...] if self.cfg.null_cond == "learned" else
              jnp.zeros((self.cfg.cond_dim,), jnp.float32))
    return jnp.broadcast_to(null_C, (batch_size, self.cfg.cond_dim))

  def initial_carry(self, batch_size: int):
    """Hidden states at a sequence start: a tuple over frame tiers (bottom
    first) of each tier's h0, (n_rnn, B, dim); with LSTM cells the pair
    (h0, c0) of such arrays. Every leaf has the batch on axis 1."""
    return tuple(t.initial_state(batch_size) for t in self.frame_tiers)

  @_in_matmul_precision
  def embed_condition(self, cond):
    """The condition as the tiers and the MLP read it: (..., C) -> (..., C')
    through the learned linear embedding with ``cond_embed_dim``, else as
    given. No bias: every layer it feeds adds its own, and the zero vector
    (the null condition) stays zero."""
    if cond is None or not self.cfg.cond_embed_dim:
      return cond
    return jnp.asarray(cond, jnp.float32) @ self.cond_embed[...]

  def _check_cond(self, cond):
    c = 0 if cond is None else cond.shape[-1]
    if c != self.cfg.cond_dim:
      raise ValueError(
          f"condition vector has length {c}; this model has "
          f"cond_dim={self.cfg.cond_dim}")

  @_in_matmul_precision
  def forward(self, x_BxW, cond, carry, dropout_keys_B=None):
    """Teacher-forced forward over one TBPTT window.

    x_BxW: int (B, lookback + T), T a multiple of FS(K); the first ``lookback``
    samples are context. cond: None, (B, C) or (B, T / FS(K), C).
    dropout_keys_B: training only, one key per row (``augment.row_keys``):
    turns on ``rnn_dropout``, tier i's layer j drawing its mask from
    ``fold_in(fold_in(fold_in(key, DROPOUT_TAG), i), j)``; None: no dropout.
    Returns (logits_BxTxQ, carry) where logits[:, t] predicts
    x[:, lookback + t] from the samples before it.
    """
    c_BxTxD, new_carry = self.frame_tiers_forward(x_BxW, cond, carry,
                                                  dropout_keys_B)
    lookback, fs1 = self.cfg.lookback, self.cfg.frame_sizes[0]
    features_BxTxD = self.mlp.features(x_BxW[:, lookback - fs1:-1])
    return self.mlp.head(features_BxTxD, c_BxTxD), new_carry

  @_in_matmul_precision
  def frame_tiers_forward(self, x_BxW, cond, carry, dropout_keys_B=None):
    """The frame tiers alone over a window (as ``forward``): returns the
    MLP's per-sample conditioning vectors (B, T, dim: tier 2's, plus the
    higher tiers' with ``skip_conn`` and the condition's own term with
    ``cond_mlp``) and the new carry. Priming a generator needs only this
    part."""
    cfg = self.cfg
    self._check_cond(cond)
    cond = self.embed_condition(cond)
    b, w = x_BxW.shape
    lookback, t = cfg.lookback, w - cfg.lookback
    if t <= 0 or t % lookback:
      raise ValueError(
          f"window of {w} samples: after the lookback of {lookback} the "
          f"length T={t} must be a positive multiple of FS(K)={lookback}")
    if dropout_keys_B is not None:
      dropout_keys_B = fold_keys(dropout_keys_B, DROPOUT_TAG)
    upper, new_carry, skips = None, [None] * len(self.frame_tiers), []
    for i in reversed(range(len(self.frame_tiers))):
      n = self.frame_tiers[i].frame_size
      frames_BxTxL = x_BxW[:, lookback - n:lookback - n + t].reshape(
          b, t // n, n)
      upper, new_carry[i] = self.run_tier(
          i, frames_BxTxL, cond_per_frame(cond, b, t // n, n, lookback),
          upper, carry[i],
          None if dropout_keys_B is None else fold_keys(dropout_keys_B, i))
      if i and cfg.skip_conn:  # one vector per frame of the tier below
        skips.append(jnp.repeat(self.skip_term(i, upper),
                                self.frame_tiers[i - 1].frame_size, axis=1))
    for skip_BxTxD in skips:
      upper = upper + skip_BxTxD
    if cfg.cond_mlp:
      upper = upper + self.mlp.condition(cond_per_frame(cond, b, t, 1,
                                                        lookback))
    return upper, tuple(new_carry)

  @_in_matmul_precision
  def run_tier(self, tier_index: int, frames_BxTxL, cond_BxTxC, upper_BxTxD,
               state, dropout_keys_B=None):
    """Frame tier ``tier_index + 2`` (``FrameTier.__call__``) over T frames
    of int samples (B, T, FS(k)), T = 1 in a generation step. cond_BxTxC:
    the embedded condition per frame (``embed_condition``); upper_BxTxD:
    the tier above's vectors, None at the top. Returns ((B, T r_k, dim)
    vectors, new state)."""
    with jax.named_scope(f"tier{tier_index + 2}"):  # names for profiles
      return self.frame_tiers[tier_index](
          audio.frame_input(frames_BxTxL, self.cfg.q_levels), cond_BxTxC,
          upper_BxTxD, state, dropout_keys_B)

  @_in_matmul_precision
  def skip_term(self, tier_index: int, vectors_BxD):
    """With ``skip_conn``: what a vector of frame tier ``tier_index + 2``
    (>= 3) adds to the MLP's input at each sample of the frame below that it
    conditions. (..., dim) -> (..., dim)."""
    return self.frame_tiers[tier_index].skip_term(vectors_BxD)


def fold_weight_norm(graphdef, params):
  """The same function without weight norm: every ``v``/``g`` pair replaced
  by its weight ``w``. Generation uses this so no step recomputes norms.
  Returns (graphdef, params)."""
  m = bind(graphdef, params)
  if not m.cfg.weight_norm:
    return graphdef, params
  cfg = dataclasses.replace(m.cfg, weight_norm=False)
  plain_graphdef, _ = abstract(cfg)

  def fold(module, tree):
    out = {}
    for key, value in tree.items():
      child = (module[key] if isinstance(key, int) else getattr(module, key))
      if isinstance(child, Weight):
        out[key] = {"w": child()}
      elif isinstance(value, dict):
        out[key] = fold(child, value)
      else:
        out[key] = value
    return out

  return plain_graphdef, fold(m, params)


def build(cfg: ModelConfig, seed: int = 0):
  """A freshly initialised model as (graphdef, params), params a plain dict."""
  model = CSampleRNN(cfg, nnx.Rngs(params=seed))
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


def abstract(cfg: ModelConfig):
  """(graphdef, params of ShapeDtypeStructs) without initialising anything.
  Traced once per config (a checkpoint load and every generator ask for it);
  each call gets its own dicts."""
  graphdef, params = _abstract(cfg)
  return graphdef, jax.tree_util.tree_map(lambda leaf: leaf, params)


@functools.lru_cache(maxsize=32)
def _abstract(cfg: ModelConfig):
  model = nnx.eval_shape(lambda: CSampleRNN(cfg, nnx.Rngs(params=0)))
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


def bind(graphdef, params) -> CSampleRNN:
  """The model for a graphdef and a params dict (cheap; use inside jit)."""
  return nnx.merge(graphdef, params)


def token_nll(logits_BxTxQ, target_BxT):
  """Negative log-likelihood (nats) of each target sample: (B, T)."""
  logp_BxTxQ = jax.nn.log_softmax(logits_BxTxQ, axis=-1)
  return -jnp.take_along_axis(logp_BxTxQ, target_BxT[..., None],
                              axis=-1)[..., 0]


def param_count(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def macs_per_sample(cfg: ModelConfig) -> dict[str, float]:
  """Multiply-adds per generated sample, by tier (frame tiers amortised over
  their frame). ``sample_input`` counts the reference embedding+conv; the
  tap-table path replaces it with FS(1) * dim additions (``taps_adds``).
  The condition embedding, the MLP's condition term and the skip terms
  count where generation computes them: once per frame of each tier, of
  tier 2, and per vector of the tiers above it."""
  d, c, q, fs = cfg.dim, cfg.cond_input_dim, cfg.q_levels, cfg.frame_sizes
  out = {}
  gates = 4 if cfg.cell == "lstm" else 3
  for k, (n, r) in enumerate(zip(fs[1:], cfg.upsample_ratios), start=2):
    per_frame = (cfg.cond_dim * cfg.cond_embed_dim + (n + c) * d
                 + cfg.n_rnn * 2 * gates * d * d + d * d * r)
    if k == 2 and cfg.cond_mlp:
      per_frame += c * d
    if k > 2 and cfg.skip_conn:  # each of its r vectors, once
      per_frame += d * d * r
    out[f"tier{k}"] = per_frame / n
  out["sample_input"] = q * fs[0] * d
  out["sample_mlp"] = d * d + d * q
  out["taps_adds"] = fs[0] * d
  out["total_reference"] = sum(
      v for key, v in out.items() if key.startswith(("tier", "sample_")))
  out["total_taps"] = out["total_reference"] - out["sample_input"]
  return out
