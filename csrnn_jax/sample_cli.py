"""``python sample.py --workdir RUN`` (console script ``csrnn-sample``):
generate wav files from a run's checkpoint.

  python sample.py --workdir runs/ambient --cond happy,sad --num 2
  python sample.py --workdir runs/ambient --cond-vector 0,0,1,1  # a mix
  python sample.py --workdir runs/ambient --cond space --seconds 600 \
      --temperature 0.95 --top-p 0.99 --prime intro.wav
  python sample.py --workdir runs/ambient --cond happy --guidance 3
  python sample.py --workdir runs/ambient --cond-mix space=0.5,creepy=0.5

Every output is named ``<condition>_seed<seed>_t<temperature>`` plus the
settings that change its audio (``outputs.file_stem``), ``.wav``, with a JSON
sidecar (checkpoint step, config hash, condition, every sampling setting,
seed, log-likelihood, wall time); ``spectrograms.png`` shows the batch. An
existing file of other settings (another checkpoint step, say, in the same
``--out``) is never overwritten without ``--overwrite``. Every argument is
checked before the checkpoint is loaded or anything is generated.

Guidance (``--guidance s``): each sample is drawn from ``l_null + s (l_cond -
l_null)``, the logits under the condition and under the model's null
condition (``--guide cond_vectors``: the same on the tier-2 vectors that
enter the sample-level MLP). ``--cond-mix a=w_a,b=w_b`` is a product of
experts of the classes: ``l_null + sum_i s w_i (l_i - l_null)`` with s the
row's guidance (weights summing to 1 at s = 1: the weighted mean of the
classes' logits).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys

import numpy as np

from csrnn_jax import audio
from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import crash_guard
from csrnn_jax import data
from csrnn_jax import outputs
from csrnn_jax import sampling


def _floats(text: str) -> list[float]:
  try:
    return [float(v) for v in text.split(",")]
  except ValueError:
    raise SystemExit(f"error: {text!r} is not a comma-separated list of "
                     "numbers") from None


def _cond_mix(text: str) -> list[tuple[str, float]]:
  """``name=weight,...`` -> [(name, weight)]."""
  pairs = []
  for item in text.split(","):
    name, sep, weight = item.partition("=")
    try:
      value = float(weight)
    except ValueError:
      value = None
    if not sep or not name or value is None or not math.isfinite(value):
      raise SystemExit(f"error: --cond-mix {text!r}: give name=weight pairs "
                       "with finite weights, comma-separated, e.g. "
                       "happy=0.5,sad=0.5")
    pairs.append((name, value))
  if len({n for n, _ in pairs}) < len(pairs):
    raise SystemExit(f"error: --cond-mix {text!r} names a class twice")
  return pairs


def _checked(values: list[float], flag: str, positive: bool = False):
  """``values`` if all finite (and > 0 with ``positive``), else ValueError."""
  bad = [v for v in values if not math.isfinite(v) or (positive and v <= 0)]
  if bad:
    raise ValueError(
        f"{flag} {','.join(f'{v:g}' for v in values)}: give finite values"
        + (" > 0 (--top-k 1 samples greedily)" if positive else ""))
  return values


def trained_cond_range(config):
  """(lo_C, hi_C): the range of each condition entry the run was trained on
  (its dataset's train split; one-hot classes: 0 to 1), or None."""
  try:
    chunks = data.load_manifest(config.data.dataset_dir)["chunks"]
    vectors_NxC = np.array([c["vector"] for c in chunks
                            if c["split"] == "train"], np.float64)
    if vectors_NxC.ndim == 2 and len(vectors_NxC):
      return vectors_NxC.min(axis=0), vectors_NxC.max(axis=0)
  except (data.DatasetError, KeyError, TypeError, ValueError):
    pass
  if config.data.class_names:
    ones = np.ones(config.model.cond_dim)
    return 0 * ones, ones
  return None


def _check_vector(config, vector: list[float], text: str) -> None:
  """Refuses a non-finite vector, warns about one outside the range the run
  was trained on; both messages name that range."""
  trained = trained_cond_range(config)
  names = list(config.data.cond_names) or list(config.data.class_names)
  where = "an unknown range (its dataset is not readable)"
  if trained is not None:
    names = names if len(names) == len(vector) else [
        f"entry {j}" for j in range(len(vector))]
    where = ", ".join(f"{n} in [{lo:g}, {hi:g}]"
                      for n, lo, hi in zip(names, *trained))
  if not all(math.isfinite(v) for v in vector):
    raise ValueError(f"--cond-vector {text} has a non-finite value; give "
                     f"finite numbers (this run was trained on {where})")
  if trained is not None and (np.any(np.array(vector) < trained[0])
                              or np.any(np.array(vector) > trained[1])):
    print(f"warning: --cond-vector {text} lies outside what this run was "
          f"trained on ({where})", file=sys.stderr)


def _per_output(values: list[float], n_out: int, flag: str) -> list[float]:
  if len(values) not in (1, n_out):
    raise ValueError(f"{flag} has {len(values)} values; give one or one per "
                     f"output ({n_out})")
  return values * n_out if len(values) == 1 else values


def build_rows(config, cond_names, cond_vectors, num, seed, temperatures,
               guidances=(1.0,), cond_mixes=()):
  """One Row per output: each condition (class name, vector or mix of
  classes) times ``num``."""
  class_names = list(config.data.class_names)
  cond_dim = config.model.cond_dim

  def one_hot(name):
    if name not in class_names:
      raise ValueError(
          f"class {name!r} is not one of this run's classes: "
          f"{', '.join(class_names) or '(none: the model is unconditional)'}")
    vector = [0.0] * cond_dim
    vector[class_names.index(name)] = 1.0
    return tuple(vector)

  conds = [(name, one_hot(name), ()) for name in cond_names]
  for vector in cond_vectors:
    if len(vector) != cond_dim:
      names = list(config.data.cond_names) or class_names
      raise ValueError(
          f"--cond-vector has {len(vector)} values; this run's condition "
          f"vectors have {cond_dim}" + (f" ({', '.join(names)})" if names
                                        else ""))
    _check_vector(config, vector, ",".join(f"{v:g}" for v in vector))
    conds.append(("mix-" + "-".join(f"{v:g}" for v in vector), tuple(vector),
                  ()))
  for pairs in cond_mixes:
    mix = tuple((name, w, one_hot(name)) for name, w in pairs)
    weighted = tuple(sum(w * v[j] for _, w, v in mix) for j in range(cond_dim))
    conds.append(("+".join(f"{name}{w:g}" for name, w in pairs), weighted,
                  mix))
  if not conds:
    conds = ([(n, tuple(float(i == j) for j in range(cond_dim)), ())
              for i, n in enumerate(class_names)] if cond_dim else
             [("uncond", (), ())])
  n_out = len(conds) * num
  temps = _per_output(_checked(temperatures, "--temperature", True), n_out,
                      "--temperature")
  scales = _per_output(_checked(list(guidances), "--guidance"), n_out,
                       "--guidance")
  rows = []
  for i, (name, vector, mix) in enumerate(c for c in conds
                                          for _ in range(num)):
    rows.append(outputs.Row(name, vector, seed + i, temps[i], scales[i], mix))
  return rows


def sampling_settings(args, run_defaults) -> dict:
  """Each sampling setting from its flag, else the run's ``config.sample``
  (temperature and guidance as comma-separated text, like the flags)."""
  settings = {}
  for key in ("temperature", "guidance", "guide", "top_k", "top_p", "min_p",
              "typical_p", "crash_guard"):
    value = getattr(args, key)
    if value is None:
      value = run_defaults[key]
      if key in ("temperature", "guidance"):
        value = f"{value:g}"
    settings[key] = value
  return settings


def _check_lengths(args) -> None:
  """--num, --seconds, --segment-seconds and --out, before anything runs."""
  if args.num < 1:
    raise ValueError(f"--num {args.num}: give at least 1 output per "
                     "condition")
  for flag, value in (("--seconds", args.seconds),
                      ("--segment-seconds", args.segment_seconds)):
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"{flag} {value:g}: give a length > 0 in seconds")
  if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
    raise ValueError(f"--out {args.out} is a file; give a folder (it is "
                     "created if missing)")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="csrnn-sample",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a run directory")
  p.add_argument("--step", default="latest",
                 help="N (a step number), 'latest' or 'best'")
  p.add_argument("--cond", default="", help="class names, comma-separated")
  p.add_argument("--cond-vector", action="append", default=[],
                 help="a condition vector such as 0,0,1,1 (repeatable)")
  p.add_argument("--cond-mix", action="append", default=[],
                 help="a product of experts of classes, name=weight,... such "
                 "as space=0.5,creepy=0.5 (repeatable)")
  p.add_argument("--num", type=int, default=1, help="outputs per condition")
  p.add_argument("--seconds", type=float, default=4.0)
  # The sampling settings default to the run's config.sample (the recipe's
  # recommendation; base defaults: temperature 1, no guidance, no filters).
  p.add_argument("--temperature",
                 help="one value, or one per output, comma-separated "
                 "(default: the run's sample.temperature)")
  p.add_argument("--guidance",
                 help="classifier-free guidance scale (1: off): one value, or "
                 "one per output, comma-separated (default: the run's "
                 "sample.guidance)")
  p.add_argument("--guide", choices=sampling.GUIDES[1:],
                 help="apply guidance to the logits or to the tier-2 vectors "
                 "that enter the sample-level MLP (default: the run's "
                 "sample.guide)")
  p.add_argument("--top-k", type=int)
  p.add_argument("--top-p", type=float)
  p.add_argument("--min-p", type=float,
                 help="keep tokens with p >= min_p * p_max (0: off)")
  p.add_argument("--typical-p", type=float,
                 help="typical sampling's mass (1: off)")
  p.add_argument("--prime", help="a wav (any audio) whose end is continued")
  p.add_argument("--start", choices=sampling.STARTS, default="h0",
                 help="hidden state at the start: learned h0 or zeros")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the first output; the others count up")
  p.add_argument("--crash-guard", action=argparse.BooleanOptionalAction,
                 help="rewind a row to its last good 0.25 s and resample it "
                 "when the crash detector fires (csrnn_jax.crash_guard; "
                 "default: the run's sample.crash_guard)")
  p.add_argument("--segment-seconds", type=float, default=4.0,
                 help="generate long audio in pieces of this length")
  p.add_argument("--out", help="output folder (default RUN/samples/step<N>)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace outputs of the same names made with other "
                 "settings")
  args = p.parse_args(argv)
  try:
    step = checkpoint_lib.Checkpointer.parse_step(args.step)
    _check_lengths(args)
    config = checkpoint_lib.read_config(args.workdir)
    settings = sampling_settings(args, config.sample)
    rows = build_rows(config, [c for c in args.cond.split(",") if c],
                      [_floats(v) for v in args.cond_vector], args.num,
                      args.seed, _floats(settings["temperature"]),
                      _floats(settings["guidance"]),
                      [_cond_mix(m) for m in args.cond_mix])
    guided = any(r.guided for r in rows)
    options = sampling.SamplingOptions(
        settings["top_k"], settings["top_p"], settings["min_p"],
        settings["typical_p"], guide=settings["guide"] if guided else "off")
    if guided and not config.train.cond_dropout:
      print("warning: this model was trained without condition dropout "
            "(train.cond_dropout=0): its null condition was never trained, "
            "so guidance contrasts the condition with an input it never saw",
            file=sys.stderr)
    sample_rate = config.data.sample_rate
    if args.seconds * sample_rate > sampling.MAX_SAMPLES:
      raise ValueError(
          f"--seconds {args.seconds:g} is more than one generation makes "
          f"({sampling.MAX_SAMPLES / sample_rate / 3600:.1f} h at "
          f"{sample_rate} Hz); generate shorter files")
    mcfg = configlib.model_config(config)
    prime = None
    if args.prime:
      prime = audio.encode(audio.load_audio(args.prime, sample_rate),
                           mcfg.q_levels, mcfg.quantization, mcfg.preemphasis)
    config, mcfg, graphdef, params, step = checkpoint_lib.load_run(
        args.workdir, step)
    out = args.out or os.path.join(args.workdir, "samples", f"step{step}")
    metadata = {"workdir": os.path.abspath(args.workdir),
                "checkpoint_step": step,
                "config_sha256": hashlib.sha256(
                    configlib.to_json(config).encode()).hexdigest(),
                "prime": args.prime}
    paths = outputs.generate_to_files(
        sampling.Generator(graphdef, params), rows, args.seconds,
        sample_rate, out, options, prime, args.start, args.segment_seconds,
        metadata, guard=(crash_guard.CrashGuard(sample_rate)
                         if settings["crash_guard"] else None),
        overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path in paths:
    print(path)
  print(os.path.join(out, "spectrograms.png"))
  return 0
