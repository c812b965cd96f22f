"""Run configuration: the full set of keys, their defaults, and checks.

Every config file in ``configs/`` starts from ``base_config()`` and overrides
values; a key that is not here is an error (a typo must not be ignored), and so
is a value of the wrong type; both are one-line ``ConfigError``s naming the
key (with the nearest known key for a typo), as is a bad command-line
override (``check_override``). ``model_config`` turns the ``model`` section
into the frozen ``ModelConfig`` the model is built from.
"""
from __future__ import annotations

import ast
import difflib
import json

import ml_collections

from csrnn_jax.model import ModelConfig


def base_config() -> ml_collections.ConfigDict:
  """Every key a run understands, with its default."""
  c = ml_collections.ConfigDict()
  c.name = "run"  # shown in reports
  c.seed = 0  # initialisation, data order, noise
  c.workdir = ""  # default: runs/<name>
  c.model = ml_collections.ConfigDict(dict(
      frame_sizes=(16, 16, 64),  # (FS(1), ..., FS(K)) in samples, bottom first
      dim=1024,  # units of each frame tier's RNN and of the MLP
      n_rnn=1,  # RNN layers per frame tier
      q_levels=256,  # Q: quantisation levels (the softmax's size)
      cond_dim=-1,  # -1: from the dataset (number of classes / vector length)
      weight_norm=True,  # weight norm on the layers (the reference's)
      learn_h0=True,  # the RNNs' initial state is learned, else zeros
      quantization="linear",  # linear | mu-law | linear-minmax
      sample_input="taps",  # taps | conv (the plain reference)
      gru_backend="auto",  # auto | scan (the reference) | fused | pallas
      cell="gru",  # the frame tiers' RNN: gru (the reference) | lstm
      lstm_forget_bias=0.0,  # initial forget-gate bias of LSTM cells, e.g. 3
      skip_conn=False,  # every frame tier's output also reaches the MLP
      rnn_dropout=0.0,  # dropout on each RNN layer's outputs, training only
      null_cond="zeros",  # zeros | learned: the condition of "no condition"
      cond_mlp=False,  # the condition also enters the sample-level MLP
      cond_embed_dim=0,  # > 0: a learned linear condition embedding (no bias)
      preemphasis=0.0,  # noise shaping filter coefficient in [0, 1), e.g. 0.85
      compute_dtype="float32",  # matmul operands: float32 | bfloat16 (mixed)
      matmul_precision="highest",  # highest (float32) | high | default (TF32)
  ))
  c.data = ml_collections.ConfigDict(dict(
      dataset_dir="",  # a folder written by csrnn-prepare
      sample_rate=16000,  # must match the dataset's
      class_names=(),  # filled from the dataset manifest when empty
      cond_names=(),  # names of the condition vector's entries (vector labels)
      prefetch=2,  # batches read ahead in a thread; 0: none
  ))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=128,  # chunks per batch, over all devices
      seq_len=1024,  # TBPTT window (samples); one Adam step per window
      num_steps=100_000,  # Adam steps; training stops at the first chunk-batch
                          # boundary at or after this
      learning_rate=1e-3,  # Adam's (the schedules' peak)
      lr_schedule="constant",  # constant | cosine | exponential | plateau
      warmup_steps=0,  # cosine: linear warmup from 0
      lr_decay_steps=10_000,  # exponential: lr * rate^((step - begin) / steps)
      lr_decay_rate=0.5,  # exponential: factor per lr_decay_steps
      lr_decay_begin=0,  # exponential: constant until this step
      lr_plateau_factor=0.5,  # plateau: the lr's scale at each plateau
      lr_plateau_patience=5,  # plateau: averages without improvement
      lr_plateau_steps=100,  # plateau: steps per averaged training loss
      early_stop_patience=0,  # evaluations without a better valid NLL; 0 = off
      early_stop_min_delta=0.0,  # bits: a smaller gain is no improvement
      clip="value",  # value (element-wise, the reference) | global_norm | none
      clip_value=1.0,  # the bound of train.clip
      cond_dropout=0.0,  # share of chunks trained with the null condition
      input_noise=0.0,  # share of input samples moved by a random error
      input_noise_levels=2,  # the error: an integer in [-k, k] \ {0} levels
      scan_windows=True,  # all windows of a chunk batch in one dispatch
      eval_every=1000,  # steps; validation over the whole valid split
      eval_batch_size=32,  # chunks per validation batch
      checkpoint_every=1000,  # steps
      keep_checkpoints=3,  # the latest (beside the best and sampled)
      sample_every=0,  # steps; 0 = no periodic samples
      sample_seconds=2.0,  # length of each periodic sample
      tensorboard=True,  # when tensorboardX is installed
  ))
  # What sample.py does by default for this run (its flags override these):
  # a recipe records the sampling settings it was measured with.
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0,  # > 0; 1 = the model's distribution
      guidance=1.0,  # classifier-free guidance scale; 1 = off
      guide="logits",  # where guidance applies: logits | cond_vectors
      top_k=0,  # 0 = off
      top_p=1.0,  # 1 = off
      min_p=0.0,  # 0 = off
      typical_p=1.0,  # 1 = off
      crash_guard=False,  # rewind and redraw a row that crashes
  ))
  return c


def paper_config(name: str) -> ml_collections.ConfigDict:
  """The paper's model and training (shared by its experiments): 3 tiers,
  frame sizes (16, 16, 64), 1 GRU layer of 1024, Q = 256, batch 128, TBPTT
  windows of 1024, Adam lr 1e-3 after element-wise clipping."""
  config = base_config()
  config.name = name
  config.model.frame_sizes = (16, 16, 64)
  config.model.dim = 1024
  config.model.n_rnn = 1
  config.model.q_levels = 256
  config.data.dataset_dir = f"data/{name}"
  config.train.batch_size = 128
  config.train.seq_len = 1024
  config.train.learning_rate = 1e-3
  config.train.num_steps = 250_000
  config.train.eval_every = 2_500
  config.train.checkpoint_every = 1_000
  config.train.sample_every = 10_000
  return config


class ConfigError(ValueError):
  """A config key that does not exist or a value of the wrong type."""


def _dotted_keys(config, prefix=""):
  for key, value in config.items():
    yield prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      yield from _dotted_keys(value, prefix + key + ".")


def _unknown_key(path: str) -> ConfigError:
  """'does not exist', with the nearest existing key when there is one."""
  close = difflib.get_close_matches(path, list(_dotted_keys(base_config())),
                                    n=1, cutoff=0.6)
  hint = f"; did you mean {close[0]!r}?" if close else (
      "; see csrnn_jax/configlib.py base_config() for every key")
  return ConfigError(f"config key {path!r} does not exist{hint}")


def _check_keys(config, reference, prefix=""):
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in reference:
      raise _unknown_key(path)
    value, default = config[key], reference[key]
    if isinstance(default, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f"config key {path!r} must be a section, got "
                          f"{value!r}")
      _check_keys(value, default, prefix=path + ".")
    elif not _same_type(value, default):
      raise ConfigError(
          f"config key {path!r} = {value!r} has type {type(value).__name__}; "
          f"expected {type(default).__name__} (like the default {default!r})")


def _parse_like(text: str, default):
  """A command-line value read as the type of ``default``, or ValueError."""
  if isinstance(default, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(text)
    return text.lower() in ("true", "1")
  if isinstance(default, (int, float)):
    return type(default)(text)
  if isinstance(default, (tuple, list)):
    value = ast.literal_eval(text)
    if not isinstance(value, (tuple, list)):
      raise ValueError(text)
    return value
  return text


def check_override(path: str, text: str | None) -> None:
  """Raises ConfigError for ``--config.<path>=<text>`` naming a key that does
  not exist (with the nearest one) or a value that is not of its type."""
  section = base_config()
  parts = path.split(".")
  for i, part in enumerate(parts):
    if not isinstance(section, ml_collections.ConfigDict) or part not in section:
      raise _unknown_key(path)
    section = section[part]
    if i < len(parts) - 1 and not isinstance(section,
                                              ml_collections.ConfigDict):
      raise _unknown_key(path)
  if isinstance(section, ml_collections.ConfigDict):
    raise ConfigError(f"config key {path!r} is a section; set one of its "
                      f"keys: {', '.join(sorted(section.keys()))}")
  if text is None:
    return
  try:
    _parse_like(text, section)
  except (ValueError, SyntaxError):
    raise ConfigError(
        f"--config.{path}={text}: expected {type(section).__name__} (like "
        f"the default {section!r})") from None


def _same_type(value, default):
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming an unknown key or a mistyped value; checks the
  model section by building its ModelConfig. Returns the config."""
  _check_keys(config, base_config())
  model_config(config, cond_dim=max(config.model.cond_dim, 0))
  return config


def model_config(config, cond_dim: int | None = None) -> ModelConfig:
  """The ModelConfig of a run config; ``cond_dim`` fills in a -1 (from data)."""
  fields = dict(config.model)
  if fields["cond_dim"] < 0:
    if cond_dim is None:
      raise ValueError("model.cond_dim=-1 (from the dataset) needs the dataset")
    fields["cond_dim"] = cond_dim
  fields["frame_sizes"] = tuple(int(f) for f in fields["frame_sizes"])
  return ModelConfig(**fields)


def to_json(config) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
  """The resolved config saved in a run directory, back as a ConfigDict."""
  config = base_config()
  config.update(ml_collections.ConfigDict(json.loads(text)))
  config.model.frame_sizes = tuple(config.model.frame_sizes)
  return config
