"""Import and export of the original PyTorch Conditional SampleRNN checkpoints.

    csrnn-import-torch CKPT --frame-sizes 16 4 --dim 1024 --n-rnn 1 \\
        --nb-classes 4 --class-names happy,sad,space,creepy --workdir RUN
    csrnn-export-torch --workdir RUN --out OUT.pt [--step latest|best|N]

The original (a fork of samplernn-pytorch) saves ``torch.save`` of a state
dict whose keys start with ``model.`` and holds no hyperparameters.
``state_dict_layout(cfg)`` is the one table of every key: its shape, where
it lives in our params (docs/model.md) and the transposes between the two,
so import and export are exact inverses (pure reshapes and transposes: a
round trip is bitwise).

Decisions:

- Hyperparameters are read from the tensor shapes (``infer_hyperparameters``);
  a value the user gives that disagrees is an error naming the key and its
  shape. The original's ``frame_sizes`` are upsampling ratios: ``[16, 4]`` is
  our ``(16, 16, 64)``; the original ties the MLP window to the bottom frame,
  so only models with FS(1) == FS(2) convert.
- ``learn_h0``: with it off the original keeps ``h0`` as a buffer of zeros,
  which old and new checkpoints may or may not hold. A present, nonzero ``h0``
  means learned; a zero or absent one imports with learn_h0 off (it computes
  the same function; a zero learned h0 imports either way). Export always
  writes ``h0`` (zeros when not learned) so the original loads it strictly.
- Imported runs use ``quantization="linear-minmax"``, the original's.
- The original feeds the condition, as given, to the frame tiers only: models
  with ``cond_mlp`` or ``cond_embed_dim`` have no counterpart and are refused
  by name. Pre-emphasis changes no parameter: such a model exports, with a
  note that its output needs the inverse filter; so does RNN dropout.
- samplernn-pytorch's checkpoints have the same layout (the original is its
  fork) with no class columns: they import as ``nb_classes`` 0.
- Both have GRU frame tiers only, and no skip connections. No LSTM layout of
  a SampleRNN state dict is known here, so LSTM models (``model.cell``) and
  ``skip_conn`` are refused by name both ways, and a state dict whose
  recurrent weights have four gates (an LSTM's) is refused on import.
- torch is an optional extra, imported only to read or write ``.pt`` files.
"""
from __future__ import annotations

import collections
import collections.abc
import dataclasses
import os
import pickle
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from csrnn_jax import checkpoint
from csrnn_jax import configlib
from csrnn_jax import provenance
from csrnn_jax import rundir
from csrnn_jax.model import ModelConfig

PREFIX = "model."
TIERS = PREFIX + "frame_level_rnns."
MLP = PREFIX + "sample_level_mlp."
INSTALL_HINT = ("pip install -e '.[torch]' in the checkout (or pip install "
                "torch==2.13.0)")
HYPERPARAMETERS = ("frame_sizes", "dim", "n_rnn", "q_levels", "nb_classes",
                   "weight_norm", "learn_h0")


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        f"reading and writing PyTorch checkpoints needs torch: {INSTALL_HINT}"
    ) from e
  return torch


def frame_sizes_from_reference(ratios) -> tuple[int, ...]:
  """The original's ``--frame_sizes`` (ratios, bottom first) -> our
  (FS(1), ..., FS(K)): [16, 4] -> (16, 16, 64)."""
  ratios = [int(r) for r in ratios]
  return (ratios[0],) + tuple(int(n) for n in np.cumprod(ratios))


def reference_frame_sizes(frame_sizes) -> list[int]:
  """Our (FS(1), ..., FS(K)) -> the original's ratios: (16, 16, 64) ->
  [16, 4]. Only FS(1) == FS(2) has a counterpart."""
  fs = tuple(frame_sizes)
  if len(fs) < 2 or fs[0] != fs[1]:
    raise ValueError(
        f"model.frame_sizes={fs!r} has no counterpart in the original code, "
        "which ties the MLP window to the bottom frame tier: FS(1) must equal "
        "FS(2), e.g. (16, 16, 64)")
  return [fs[1]] + [fs[k] // fs[k - 1] for k in range(2, len(fs))]


def _same(a):
  return a


def _transpose(a):
  return a.T


def _conv1x1_to_ours(a):
  return a[:, :, 0].T


def _conv1x1_to_torch(a):
  return a.T[:, :, None]


def _swap_last_two(a):
  return a.transpose(0, 2, 1)


def _reverse_axes(a):
  return a.transpose(2, 1, 0)


def _flatten(a):
  return a.reshape(-1)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One state-dict entry: torch key and shape, its place in our params
  (``path`` None: the zero h0 buffer of learn_h0 off) and the layout change
  each way."""
  key: str
  shape: tuple[int, ...]
  path: tuple | None
  to_ours: Callable = _same
  to_torch: Callable = _same

  def our_shape(self) -> tuple[int, ...]:
    return self.to_ours(np.broadcast_to(np.float32(0), self.shape)).shape


def _conv(key, path, bias_path, shape, to_ours, to_torch, weight_norm):
  """A conv's weight (and bias) in torch's key order: ``weight, bias``, or
  with weight norm ``bias, weight_g, weight_v`` (g (shape[0], 1, ...) is flat
  here, v laid out as w)."""
  bias = [] if bias_path is None else [
      Entry(key + "bias", shape[:1], bias_path)]
  if not weight_norm:
    return [Entry(key + "weight", shape, path + ("w",), to_ours,
                   to_torch)] + bias
  g_shape = (shape[0],) + (1,) * (len(shape) - 1)
  return bias + [
      Entry(key + "weight_g", g_shape, path + ("g",), _flatten,
             lambda a: a.reshape(g_shape)),
      Entry(key + "weight_v", shape, path + ("v",), to_ours, to_torch)]


def state_dict_layout(cfg: ModelConfig) -> list[Entry]:
  """Every key of the original's state dict for ``cfg``, in torch's order."""
  reference_frame_sizes(cfg.frame_sizes)
  if cfg.cell != "gru" or cfg.skip_conn:
    raise ValueError(
        f"model.cell={cfg.cell!r}, model.skip_conn={cfg.skip_conn}: the "
        "original code (and samplernn-pytorch) has GRU frame tiers and no "
        "skip connections; only models with cell='gru' and skip_conn=False "
        "convert")
  if cfg.cond_mlp or cfg.cond_embed_dim:
    raise ValueError(
        f"model.cond_mlp={cfg.cond_mlp}, model.cond_embed_dim="
        f"{cfg.cond_embed_dim}: the original code feeds the condition, "
        "unembedded, to its frame tiers only; only models with "
        "cond_mlp=False and cond_embed_dim=0 convert")
  d, q, c, wn = cfg.dim, cfg.q_levels, cfg.cond_dim, cfg.weight_norm
  out = []
  for i, (n, r) in enumerate(zip(cfg.frame_sizes[1:], cfg.upsample_ratios)):
    key, path = f"{TIERS}{i}.", ("frame_tiers", i)
    out.append(Entry(key + "h0", (cfg.n_rnn, d),
                      path + ("h0",) if cfg.learn_h0 else None))
    out += _conv(key + "input_expand.", path + ("input",),
                 path + ("input_bias",), (d, n + c, 1), _conv1x1_to_ours,
                 _conv1x1_to_torch, wn)
    for j in range(cfg.n_rnn):
      gru = path + ("gru", j)
      out += [
          Entry(f"{key}rnn.weight_ih_l{j}", (3 * d, d), gru + ("w_ih",),
                 _transpose, _transpose),
          Entry(f"{key}rnn.weight_hh_l{j}", (3 * d, d), gru + ("w_hh",),
                 _transpose, _transpose),
          Entry(f"{key}rnn.bias_ih_l{j}", (3 * d,), gru + ("b_ih",)),
          Entry(f"{key}rnn.bias_hh_l{j}", (3 * d,), gru + ("b_hh",))]
    out.append(Entry(key + "upsampling.bias", (d, r),
                      path + ("upsample_bias",), _transpose, _transpose))
    out += _conv(key + "upsampling.conv_t.", path + ("upsample",), None,
                 (d, d, r), _swap_last_two, _swap_last_two, wn)
  out.append(Entry(MLP + "embedding.weight", (q, q), ("mlp", "embedding")))
  out += _conv(MLP + "input.", ("mlp", "input"), None,
               (d, q, cfg.frame_sizes[0]), _reverse_axes, _reverse_axes, wn)
  out += _conv(MLP + "hidden.", ("mlp", "hidden"), ("mlp", "hidden_bias"),
               (d, d, 1), _conv1x1_to_ours, _conv1x1_to_torch, wn)
  out += _conv(MLP + "output.", ("mlp", "output"), ("mlp", "output_bias"),
               (q, d, 1), _conv1x1_to_ours, _conv1x1_to_torch, wn)
  return out


def describe(cfg: ModelConfig) -> str:
  """The hyperparameters in the original's terms, for messages."""
  ratios = " ".join(map(str, reference_frame_sizes(cfg.frame_sizes)))
  return (f"frame_sizes={cfg.frame_sizes} (original --frame_sizes {ratios}), "
          f"dim={cfg.dim}, n_rnn={cfg.n_rnn}, q_levels={cfg.q_levels}, "
          f"nb_classes={cfg.cond_dim}, weight_norm={cfg.weight_norm}, "
          f"learn_h0={cfg.learn_h0}")


def to_numpy(state_dict) -> dict[str, np.ndarray]:
  """float32 NumPy arrays from a state dict of torch tensors or arrays. Keys
  of the bare SampleRNN (no ``model.`` prefix) get the prefix."""
  out = {}
  for key, value in state_dict.items():
    if hasattr(value, "detach"):  # a torch tensor; torch itself not needed.
      value = value.detach().cpu().float().numpy()
    if key.startswith(("frame_level_rnns.", "sample_level_mlp.")):
      key = PREFIX + key
    out[key] = np.asarray(value, np.float32)
  return out


def _key_list(entries):
  return ", ".join(f"{e.key} {e.shape}" for e in entries)


def params_from_torch(state_dict, cfg: ModelConfig) -> dict:
  """Our params dict (as ``model.build``'s) from an original state dict.

  Raises ValueError naming a missing key, a key of the wrong shape (with both
  shapes) or an unexpected key, and a nonzero h0 when learn_h0 is off.
  """
  arrays = to_numpy(state_dict)
  layout = state_dict_layout(cfg)
  missing = [entry for entry in layout
             if entry.key not in arrays and entry.path is not None]
  if missing:
    raise ValueError(
        f"the state dict has no {_key_list(missing)}, which a model with "
        f"{describe(cfg)} needs; check the hyperparameters")
  unexpected = sorted(set(arrays) - {entry.key for entry in layout})
  if unexpected:
    raise ValueError(
        "the state dict has keys that a model with "
        f"{describe(cfg)} does not: "
        + ", ".join(f"{k} {arrays[k].shape}" for k in unexpected)
        + "; check the hyperparameters")
  params = {}
  for entry in layout:
    if entry.key not in arrays:  # the zero h0 buffer, absent in some files.
      continue
    value = arrays[entry.key]
    if value.shape != entry.shape:
      raise ValueError(
          f"{entry.key} has shape {value.shape}; a model with "
          f"{describe(cfg)} needs {entry.shape}")
    if entry.path is None:
      if np.any(value):
        raise ValueError(
            f"{entry.key} is not zero: the checkpoint has a learned h0, but "
            "learn_h0 is off; import it with learn_h0 on")
      continue
    node = params
    for name in entry.path[:-1]:
      node = node.setdefault(name, {})
    node[entry.path[-1]] = jnp.asarray(
        np.ascontiguousarray(entry.to_ours(value)))
  return params


def _leaf_paths(tree, prefix=()):
  if isinstance(tree, dict):
    for name, sub in tree.items():
      yield from _leaf_paths(sub, prefix + (name,))
  else:
    yield prefix


def _path_name(path) -> str:
  return "/".join(map(str, path))


def params_to_torch(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The original's state dict (float32 arrays, ``model.`` keys) for our
  params: the exact inverse of ``params_from_torch``."""
  out, used = {}, set()
  for entry in state_dict_layout(cfg):
    if entry.path is None:
      out[entry.key] = np.zeros(entry.shape, np.float32)
      continue
    node = params
    for name in entry.path:
      if not isinstance(node, dict) or name not in node:
        raise ValueError(
            f"params have no {_path_name(entry.path)}, which {entry.key} "
            f"needs for a model with {describe(cfg)}")
      node = node[name]
    value = np.asarray(node, np.float32)
    if value.shape != entry.our_shape():
      raise ValueError(
          f"parameter {_path_name(entry.path)} has shape {value.shape}; "
          f"{entry.key} needs {entry.our_shape()} for a model with "
          f"{describe(cfg)}")
    out[entry.key] = np.array(entry.to_torch(value), order="C")  # writable
    used.add(entry.path)
  extra = [p for p in _leaf_paths(params) if p not in used]
  if extra:
    raise ValueError(
        "parameters with no counterpart in the original code: "
        + ", ".join(map(_path_name, extra)))
  return out


@dataclasses.dataclass(frozen=True)
class _Seen:
  """A hyperparameter read from the state dict, the evidence as text, and
  the values it allows (a zero h0 allows learn_h0 either way)."""
  value: object
  evidence: str
  allowed: tuple = ()

  def allows(self, value) -> bool:
    return value == self.value or value in self.allowed


def _read_hyperparameters(arrays) -> dict[str, _Seen]:
  def shape(key):
    if key not in arrays:
      raise ValueError(
          f"the state dict has no {key}; an original Conditional SampleRNN "
          f"checkpoint has keys under {TIERS}0. and {MLP}")
    return arrays[key].shape

  def seen(key):
    return f"{key} has shape {shape(key)}"

  seen_dim = _Seen(shape(MLP + "hidden.bias")[0], seen(MLP + "hidden.bias"))
  seen_q = _Seen(shape(MLP + "embedding.weight")[0],
                 seen(MLP + "embedding.weight"))
  wn = MLP + "hidden.weight_g" in arrays
  seen_wn = _Seen(wn, f"{MLP}hidden has "
                  + ("weight_g and weight_v" if wn else "weight, no weight_g"))
  n_tiers = 1 + max((int(k[len(TIERS):].split(".")[0])
                     for k in arrays if k.startswith(TIERS)), default=0)
  bias_keys = [f"{TIERS}{i}.upsampling.bias" for i in range(n_tiers)]
  ratios = [shape(k)[1] for k in bias_keys]
  seen_fs = _Seen(frame_sizes_from_reference(ratios),
                  "; ".join(map(seen, bias_keys)) + " (dim, ratio)")
  rnn = f"{TIERS}0.rnn.weight_ih_l"
  if shape(rnn + "0")[0] != 3 * seen_dim.value:
    lstm = shape(rnn + "0")[0] == 4 * seen_dim.value
    raise ValueError(
        f"{seen(rnn + '0')}; a GRU's is (3 dim, dim) = "
        f"({3 * seen_dim.value}, {seen_dim.value})"
        + (": four gates, an LSTM's. No layout of LSTM SampleRNN "
           "checkpoints is known here; only GRU checkpoints (the original "
           "code's, samplernn-pytorch's) import" if lstm else ""))
  n_rnn = sum(1 for k in arrays if k.startswith(rnn))
  seen_rnn = _Seen(n_rnn, f"{TIERS}0.rnn has weight_ih_l0..l{n_rnn - 1}")
  in_key = f"{TIERS}0.input_expand.weight" + ("_v" if wn else "")
  seen_classes = _Seen(shape(in_key)[1] - ratios[0],
                       f"{seen(in_key)}: {ratios[0]} frame samples + classes")
  h0_keys = [f"{TIERS}{i}.h0" for i in range(n_tiers)]
  present = [k for k in h0_keys if k in arrays]
  if any(np.any(arrays[k]) for k in present):
    seen_h0 = _Seen(True, f"{present[0]} is a nonzero (learned) h0")
  elif present:
    seen_h0 = _Seen(False, f"{present[0]} is zero", allowed=(True,))
  else:
    seen_h0 = _Seen(False, f"the state dict has no {h0_keys[0]}")
  return dict(frame_sizes=seen_fs, dim=seen_dim, n_rnn=seen_rnn,
              q_levels=seen_q, nb_classes=seen_classes, weight_norm=seen_wn,
              learn_h0=seen_h0)


def infer_hyperparameters(state_dict) -> dict:
  """frame_sizes (ours), dim, n_rnn, q_levels, nb_classes, weight_norm and
  learn_h0 of an original state dict, from its tensor shapes."""
  seen = _read_hyperparameters(to_numpy(state_dict))
  return {name: s.value for name, s in seen.items()}


def _show(name, value) -> str:
  if name == "frame_sizes" and len(value) > 1 and value[0] == value[1]:
    ratios = " ".join(map(str, reference_frame_sizes(value)))
    return f"{value} (original --frame_sizes {ratios})"
  return str(value)


def resolve_hyperparameters(state_dict, **given) -> dict:
  """The inferred hyperparameters, checked against those ``given`` (None or
  absent: not given; frame_sizes in our form). A disagreement is a
  ValueError naming the key and shape that show the checkpoint's value."""
  unknown = set(given) - set(HYPERPARAMETERS)
  if unknown:
    raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: "
                     f"{', '.join(HYPERPARAMETERS)}")
  seen = _read_hyperparameters(to_numpy(state_dict))
  out = {}
  for name, s in seen.items():
    value = given.get(name)
    if name == "frame_sizes" and value is not None:
      value = tuple(value)
    if value is not None and not s.allows(value):
      raise ValueError(
          f"{name}={_show(name, value)} was given, but the checkpoint has "
          f"{name}={_show(name, s.value)}: {s.evidence}")
    out[name] = s.value if value is None else value
  return out


def model_config(hparams: dict,
                 quantization: str = "linear-minmax") -> ModelConfig:
  """Our ModelConfig for the original's hyperparameters (as inferred)."""
  return ModelConfig(
      frame_sizes=tuple(hparams["frame_sizes"]), dim=hparams["dim"],
      n_rnn=hparams["n_rnn"], q_levels=hparams["q_levels"],
      cond_dim=hparams["nb_classes"], weight_norm=hparams["weight_norm"],
      learn_h0=hparams["learn_h0"], quantization=quantization)


def load_torch_checkpoint(path) -> dict[str, np.ndarray]:
  """An original checkpoint file (``torch.save`` of a state dict) as float32
  arrays, read with ``weights_only=True`` (no arbitrary code runs)."""
  torch = _import_torch()
  path = os.fspath(path)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError) as e:
    reason = str(e).strip().split("\n")[0]
    raise ValueError(
        f"{path}: torch.load(weights_only=True) cannot read it as a state "
        f"dict ({type(e).__name__}: {reason})") from e
  if not isinstance(obj, collections.abc.Mapping) or not all(
      isinstance(v, torch.Tensor) for v in obj.values()):
    keys = list(obj)[:5] if isinstance(obj, collections.abc.Mapping) else []
    raise ValueError(
        f"{path}: expected a state dict (names -> tensors, as "
        f"torch.save(model.state_dict()) writes); found {type(obj).__name__}"
        + (f" with keys {keys}" if keys else ""))
  return to_numpy(obj)


def save_torch_checkpoint(state_dict, path) -> None:
  """``torch.save`` of the arrays as tensors, in the legacy (pre-1.6) format
  so that the original code's old torch can read it too."""
  torch = _import_torch()
  tensors = collections.OrderedDict(
      (k, torch.from_numpy(np.array(v, order="C")))
      for k, v in state_dict.items())
  torch.save(tensors, os.fspath(path), _use_new_zipfile_serialization=False)


def import_run(checkpoint_path, workdir, class_names=None, **given):
  """Writes a run directory (config, provenance, params checkpoint) for an
  original checkpoint; returns the run config. ``given`` as in
  ``resolve_hyperparameters``."""
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise ValueError(f"{workdir} exists and is not empty; choose a new "
                     "--workdir")
  state_dict = load_torch_checkpoint(checkpoint_path)
  hparams = resolve_hyperparameters(state_dict, **given)
  nb_classes = hparams["nb_classes"]
  names = tuple(class_names or (f"class{i}" for i in range(nb_classes)))
  if len(names) != nb_classes:
    raise ValueError(
        f"{len(names)} class names ({', '.join(names)}) for a checkpoint with "
        f"nb_classes={nb_classes}; give one name per class, in one-hot order")
  cfg = model_config(hparams)
  params = params_from_torch(state_dict, cfg)
  config = configlib.RunConfig(
      name="imported", workdir=os.fspath(workdir), model=cfg,
      data=configlib.DataConfig(class_names=names))
  record = provenance.collect(seed=config.seed)
  record["imported_from"] = {
      "path": os.path.abspath(checkpoint_path),
      "sha256": provenance.sha256(checkpoint_path),
      "format": "original Conditional SampleRNN (PyTorch) state dict",
      "given": {k: v for k, v in given.items() if v is not None},
      "hyperparameters": hparams,
  }
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  rundir.write_config(workdir, config)
  rundir.append_session(workdir, record)
  checkpoint.save_params(workdir, params)
  return config


def export_run(workdir, out_path, step=None) -> ModelConfig:
  """Writes a run's params (``step``: None/"latest", "best" or an int) as an
  original state dict; returns the model config."""
  _, cfg, _, params, _ = checkpoint.load_run(os.fspath(workdir), step)
  save_torch_checkpoint(params_to_torch(jax.device_get(params), cfg), out_path)
  return cfg
