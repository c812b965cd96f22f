"""Run configuration: one set of keys and defaults, the frozen ``RunConfig``
dataclasses (``ModelConfig`` and the sections here), which also document
every key (``train.py --help`` lists their comments).

Config files in ``configs/`` start from ``base_config()``, the defaults as an
ml_collections ConfigDict, and override values, as do --config.KEY=VALUE
flags. ``resolve`` converts that, once, into the RunConfig the library works
on, checked against its dataset. A key that does not exist is an error (a
typo must not be ignored), and so is a value of the wrong type; both are
one-line ``ConfigError``s naming the key (with the nearest known key for a
typo), as is a bad command-line override (``check_override``).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import os

import ml_collections

from csrnn_jax import dataset
from csrnn_jax.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the audio comes from."""
  dataset_dir: str = ""  # a folder written by csrnn-prepare
  sample_rate: int = 16000  # must match the dataset's
  class_names: tuple[str, ...] = ()  # filled from the dataset manifest when
                                     # empty
  cond_names: tuple[str, ...] = ()  # names of the condition vector's entries
                                    # (vector labels)
  prefetch: int = 2  # batches read ahead in a thread; 0: none


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The optimiser, its schedule, and how often to evaluate and save."""
  batch_size: int = 128  # chunks per batch, over all devices
  seq_len: int = 1024  # TBPTT window (samples); one Adam step per window
  num_steps: int = 100_000  # Adam steps; training stops at the first
                            # chunk-batch boundary at or after this
  learning_rate: float = 1e-3  # Adam's (the schedules' peak)
  lr_schedule: str = "constant"  # constant | cosine | exponential | plateau
  warmup_steps: int = 0  # cosine: linear warmup from 0
  lr_decay_steps: int = 10_000  # exponential: lr * rate^((step - begin) /
                                # steps)
  lr_decay_rate: float = 0.5  # exponential: factor per lr_decay_steps
  lr_decay_begin: int = 0  # exponential: constant until this step
  lr_plateau_factor: float = 0.5  # plateau: the lr's scale at each plateau
  lr_plateau_patience: int = 5  # plateau: averages without improvement
  lr_plateau_steps: int = 100  # plateau: steps per averaged training loss
  early_stop_patience: int = 0  # evaluations without a better valid NLL;
                                # 0 = off
  early_stop_min_delta: float = 0.0  # bits: a smaller gain is no improvement
  clip: str = "value"  # value (element-wise, the reference) | global_norm |
                       # none
  clip_value: float = 1.0  # the bound of train.clip
  cond_dropout: float = 0.0  # share of chunks trained with the null condition
  input_noise: float = 0.0  # share of input samples moved by a random error
  input_noise_levels: int = 2  # the error: an integer in [-k, k] \ {0} levels
  own_state_share: float = 0.0  # share of chunk batches that start from a
                                # state the model generated (own_state)
  own_state_seconds: float = 2.0  # how long it generates to reach it
  scan_windows: bool = True  # all windows of a chunk batch in one dispatch
  eval_every: int = 1000  # steps; validation over the whole valid split
  eval_batch_size: int = 32  # chunks per validation batch
  checkpoint_every: int = 1000  # steps
  keep_checkpoints: int = 3  # the latest (beside the best and sampled)
  sample_every: int = 0  # steps; 0 = no periodic samples
  sample_seconds: float = 2.0  # length of each periodic sample
  tensorboard: bool = True  # when tensorboardX is installed


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """What sample.py does by default for this run (its flags override these):
  a recipe records the sampling settings it was measured with."""
  temperature: float = 1.0  # > 0; 1 = the model's distribution
  guidance: float = 1.0  # classifier-free guidance scale; 1 = off
  guide: str = "logits"  # where guidance applies: logits | cond_vectors
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  min_p: float = 0.0  # 0 = off
  typical_p: float = 1.0  # 1 = off
  truncate_above: int = -1  # the filters only where the audio is louder
                            # than this many levels; -1 = at every step
  crash_guard: bool = False  # rewind and redraw a row that crashes
  redraw_unfiltered: bool = False  # the guard redraws unfiltered, s = 1
  guard_rewinds: int = 8  # the guard's rewinds per row, at most
  guard_backoff: float = 0.0  # s further back per repeat of the same crash
  denoise: float = 0.0  # the output post-filter's strength; 0 = off


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One run: what the library works on, frozen and resolved against its
  dataset (``resolve``). The defaults are the paper's model and training
  (``PAPER``), except its schedule."""
  name: str = "run"  # shown in reports
  seed: int = 0  # initialisation, data order, noise
  workdir: str = ""  # default: runs/<name>
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
            "sample": SampleConfig}
# model.cond_dim in a config file: take the condition's length from the data.
FROM_DATASET = -1


def base_config() -> ml_collections.ConfigDict:
  """Every key a run understands, with its default (``RunConfig``'s), as the
  ConfigDict that config files and --config.KEY=VALUE flags edit."""
  c = ml_collections.ConfigDict(dataclasses.asdict(RunConfig()))
  c.model.cond_dim = FROM_DATASET
  return c


def paper_config(name: str) -> ml_collections.ConfigDict:
  """The paper's preset, shared by its experiments: the default model and
  training (3 tiers, frame sizes (16, 16, 64), 1 GRU layer of 1024, Q = 256,
  batch 128, TBPTT windows of 1024, Adam lr 1e-3 after element-wise
  clipping) on data/<name>, with its schedule of steps, validations and
  samples."""
  config = base_config()
  config.name = name
  config.data.dataset_dir = f"data/{name}"
  config.train.num_steps = 250_000
  config.train.eval_every = 2_500
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
    if (not isinstance(section, ml_collections.ConfigDict)
        or part not in section):
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
  values = config.to_dict()
  values["model"]["cond_dim"] = max(values["model"]["cond_dim"], 0)
  from_dict(values)
  return config


def from_dict(values: dict) -> RunConfig:
  """The RunConfig of nested plain values (missing keys: the defaults; lists
  become tuples)."""
  def build(cls, fields: dict):
    return cls(**{
        name: tuple(value) if isinstance(value, list) else value
        for name, value in fields.items()})
  return RunConfig(**{
      name: build(SECTIONS[name], value) if name in SECTIONS else value
      for name, value in values.items()})


def _check_dataset(config, manifest: dict) -> None:
  data, where = config.data, config.data.dataset_dir
  if config.model.cond_dim not in (FROM_DATASET, manifest["cond_dim"]):
    raise ConfigError(
        f"model.cond_dim={config.model.cond_dim} but the dataset {where} has "
        f"condition vectors of length {manifest['cond_dim']}; set "
        f"model.cond_dim={manifest['cond_dim']} (or {FROM_DATASET})")
  if data.sample_rate != manifest["sample_rate"]:
    raise ConfigError(
        f"data.sample_rate={data.sample_rate} but the dataset {where} is at "
        f"{manifest['sample_rate']} Hz; set data.sample_rate="
        f"{manifest['sample_rate']} or prepare it again with --sample-rate "
        f"{data.sample_rate}")
  if data.class_names and set(data.class_names) != set(
      manifest["class_names"]):
    raise ConfigError(
        f"data.class_names={list(data.class_names)} but the dataset {where} "
        f"has classes {list(manifest['class_names'])}; fix the config (or "
        "leave data.class_names empty to take the dataset's)")


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
  """The frozen RunConfig of a config file's ConfigDict (with its
  --config.KEY=VALUE overrides), checked and resolved against the dataset
  in ``data.dataset_dir``: the condition's length (``model.cond_dim = -1``)
  and the class names' one-hot order come from its manifest, and the folder
  becomes absolute so that evaluate and sample.py find it from anywhere.
  The one conversion: everything past the command line works on the
  RunConfig."""
  validate(config)
  if not config.data.dataset_dir:
    raise ConfigError("data.dataset_dir is not set: give "
                      "--config.data.dataset_dir=DATA, a folder written by "
                      "csrnn-prepare")
  manifest = dataset.read_manifest(config.data.dataset_dir)
  _check_dataset(config, manifest)
  values = config.to_dict()
  values["model"]["cond_dim"] = manifest["cond_dim"]
  values["data"].update(class_names=manifest["class_names"],
                        dataset_dir=os.path.abspath(config.data.dataset_dir))
  return from_dict(values)


def replace(config: RunConfig, **changes) -> RunConfig:
  """``config`` with dotted keys changed: ``replace(c, **{"data.dataset_dir":
  d})``."""
  values = dataclasses.asdict(config)
  for dotted, value in changes.items():
    *sections, key = dotted.split(".")
    fields = values
    for section in sections:
      fields = fields[section]
    if key not in fields:
      raise _unknown_key(dotted)
    fields[key] = value
  return from_dict(values)


def lookup(config: RunConfig, dotted: str):
  """The value at a dotted key (a section as a dict)."""
  for part in dotted.split("."):
    config = getattr(config, part)
  return (dataclasses.asdict(config) if dataclasses.is_dataclass(config)
          else config)


def to_json(config: RunConfig) -> str:
  return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def from_json(text: str) -> RunConfig:
  """A run directory's config.json, back as the RunConfig it was."""
  return from_dict(json.loads(text))
