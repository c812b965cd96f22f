"""``python sample.py --workdir RUN`` (console script ``csrnn-sample``):
generate wav files from a run's checkpoint.

  python sample.py --workdir runs/ambient --cond happy,sad --num 2
  python sample.py --workdir runs/ambient --cond-vector 0,0,1,1  # a mix
  python sample.py --workdir runs/ambient --cond space --seconds 600 \
      --temperature 0.95 --top-p 0.99 --prime intro.wav
  python sample.py --workdir runs/ambient --cond happy --guidance 3
  python sample.py --workdir runs/ambient --cond happy --denoise 3
  python sample.py --workdir runs/ambient --cond-mix space=0.5,creepy=0.5
  python sample.py --workdir runs/ambient --cond-schedule happy@0,sad@10 \
      --seconds 20 [--morph-mix experts]

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

import jax
import numpy as np

from csrnn_jax import audio
from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import crash_guard
from csrnn_jax import dataset
from csrnn_jax import outputs
from csrnn_jax import rundir
from csrnn_jax import sampling
from csrnn_jax import sharding
from csrnn_jax.cli import common


def _floats(text: str) -> list[float]:
  """``0.9,1`` -> [0.9, 1.0] (an argparse type)."""
  try:
    return [float(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a comma-separated list of numbers") from None


def _finite(text: str) -> float | None:
  """The number ``text`` holds if it is finite, else None."""
  try:
    value = float(text)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


def _cond_mix(text: str) -> list[tuple[str, float]]:
  """``name=weight,...`` -> [(name, weight)] (an argparse type)."""
  pairs = []
  for item in text.split(","):
    name, sep, weight = item.partition("=")
    value = _finite(weight)
    if not sep or not name or value is None:
      raise argparse.ArgumentTypeError(
          f"{text!r}: give name=weight pairs with finite weights, "
          "comma-separated, e.g. happy=0.5,sad=0.5")
    pairs.append((name, value))
  if len({n for n, _ in pairs}) < len(pairs):
    raise argparse.ArgumentTypeError(f"{text!r} names a class twice")
  return pairs


def _cond_schedule(text: str) -> list[tuple[float, list[tuple[str, float]]]]:
  """``happy@0,sad@10,space=0.5+creepy=0.5@20`` -> [(seconds, [(name,
  weight)])], keyframes in strictly increasing time from 0 or later (an
  argparse type)."""
  keyframes = []
  for item in text.split(","):
    key, sep, when = item.rpartition("@")
    seconds = _finite(when)
    pairs = [(name, _finite(weight) if has_weight else 1.0)
             for name, has_weight, weight in (part.partition("=")
                                              for part in key.split("+"))]
    if (not sep or not key or seconds is None or seconds < 0
        or not all(n and w is not None for n, w in pairs)):
      raise argparse.ArgumentTypeError(
          f"{text!r}: give class@seconds keyframes, comma-separated, e.g. "
          "happy@0,sad@10 (a keyframe may be a mix: happy=0.5+sad=0.5@5)")
    keyframes.append((seconds, pairs))
  times = [t for t, _ in keyframes]
  if any(b <= a for a, b in zip(times, times[1:])):
    raise argparse.ArgumentTypeError(
        f"{text!r}: the keyframes' times must increase")
  return keyframes


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
    train = dataset.split_chunks(
        dataset.read_manifest(config.data.dataset_dir), "train")
    vectors_NxC = np.array([c["vector"] for c in train], np.float64)
    if vectors_NxC.ndim == 2 and len(vectors_NxC):
      return vectors_NxC.min(axis=0), vectors_NxC.max(axis=0)
  except (KeyError, TypeError, ValueError):  # DatasetError is a ValueError
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
               guidances=(1.0,), cond_mixes=(), cond_schedules=(),
               morph="linear", morph_mix="vector"):
  """One Row per output: each condition (class name, vector, mix of classes
  or morph) times ``num``."""
  class_names = list(config.data.class_names)
  cond_dim = config.model.cond_dim

  def one_hot(name):
    if name not in class_names:
      raise ValueError(
          f"class {name!r} is not one of this run's classes: "
          f"{', '.join(class_names) or '(none: the model is unconditional)'}")
    return outputs.one_hot(class_names.index(name), cond_dim)

  def weighted(pairs):
    return tuple(sum(w * one_hot(n)[j] for n, w in pairs)
                 for j in range(cond_dim))

  conds = [(name, one_hot(name), (), ()) for name in cond_names]
  for vector in cond_vectors:
    if len(vector) != cond_dim:
      names = list(config.data.cond_names) or class_names
      raise ValueError(
          f"--cond-vector has {len(vector)} values; this run's condition "
          f"vectors have {cond_dim}" + (f" ({', '.join(names)})" if names
                                        else ""))
    _check_vector(config, vector, ",".join(f"{v:g}" for v in vector))
    conds.append(("mix-" + "-".join(f"{v:g}" for v in vector), tuple(vector),
                  (), ()))
  for pairs in cond_mixes:
    mix = tuple((name, w, one_hot(name)) for name, w in pairs)
    conds.append(("+".join(f"{name}{w:g}" for name, w in pairs),
                  weighted(pairs), mix, ()))
  for keyframes in cond_schedules:
    schedule = tuple((t, weighted(pairs)) for t, pairs in keyframes)
    name = "-".join("+".join(f"{n}{w:g}" if len(pairs) > 1 else n
                             for n, w in pairs) + f"@{t:g}s"
                    for t, pairs in keyframes)
    experts = "experts-" if morph_mix == "experts" else ""
    conds.append((f"morph-{morph}-{experts}{name}", schedule[0][1], (),
                  schedule))
  if not conds:
    conds = [(name, vector, (), ()) for name, vector in
             outputs.per_class_conditions(class_names, cond_dim)]
  n_out = len(conds) * num
  temps = _per_output(_checked(temperatures, "--temperature", True), n_out,
                      "--temperature")
  scales = _per_output(_checked(list(guidances), "--guidance"), n_out,
                       "--guidance")
  rows = []
  for i, (name, vector, mix, schedule) in enumerate(c for c in conds
                                                    for _ in range(num)):
    rows.append(outputs.Row(name, vector, seed + i, temps[i], scales[i], mix,
                            schedule, morph, morph_mix))
  return rows


def sampling_settings(args, run_defaults) -> dict:
  """Each sampling setting from its flag, else the run's ``config.sample``
  (temperature and guidance as lists, like the flags: one value, or one per
  output)."""
  settings = {}
  for key in ("temperature", "guidance", "guide", "top_k", "top_p", "min_p",
              "typical_p", "truncate_above", "crash_guard",
              "redraw_unfiltered", "guard_rewinds", "guard_backoff",
              "denoise"):
    value = getattr(args, key)
    if value is None:
      value = getattr(run_defaults, key)
      if key in ("temperature", "guidance"):
        value = [float(value)]
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


def condition_order(workdir: str | None) -> str | None:
  """The names of a run's condition vector entries, in order (its
  config.json's data.cond_names, else data.class_names: the dataset's
  order, which --cond-vector follows), or None if it has none to read."""
  try:
    config = rundir.read_config(workdir) if workdir else None
  except (ValueError, FileNotFoundError):  # --help goes on without it
    return None
  names = config and (list(config.data.cond_names)
                      or list(config.data.class_names))
  return ", ".join(names) if names else None


def parser(argv=None) -> common.Parser:
  """The flags; ``argv``'s --workdir, if any, puts its run's condition
  vector order into --help."""
  first = common.Parser(add_help=False)  # the run, for the help
  first.add_argument("--workdir")
  order = condition_order(first.parse_known_args(argv)[0].workdir)
  p = common.Parser(
      prog="csrnn-sample", description=__doc__.split("\n\n")[0],
      epilog=(f"This run's condition vector order: {order}." if order else
              "sample.py --workdir RUN --help prints RUN's condition vector "
              "order."))
  common.add_workdir(p)
  common.add_step(p)
  p.add_argument("--cond", default="", help="class names, comma-separated")
  p.add_argument("--cond-vector", action="append", default=[], type=_floats,
                 help="a condition vector such as 0,0,1,1 (repeatable); its "
                 "entries follow the run's order, data.cond_names or "
                 "data.class_names in RUN/config.json (the dataset's, "
                 "alphabetical for class folders), printed below")
  p.add_argument("--cond-mix", action="append", default=[], type=_cond_mix,
                 help="a product of experts of classes, name=weight,... such "
                 "as space=0.5,creepy=0.5 (repeatable)")
  p.add_argument("--cond-schedule", action="append", default=[],
                 type=_cond_schedule,
                 help="a morph: class@seconds keyframes such as "
                 "happy@0,sad@10,space@20 (a keyframe may be a mix: "
                 "happy=0.5+sad=0.5@5); writes class_probabilities.png "
                 "(repeatable)")
  p.add_argument("--morph", choices=outputs.MORPHS, default="linear",
                 help="between keyframes: interpolate the condition vector "
                 "or hold the last keyframe's")
  p.add_argument("--morph-mix", choices=outputs.MORPH_MIXES, default="vector",
                 help="a morph enters as its (interpolated) condition vector, "
                 "or as a product of experts of its classes, weighted by "
                 "their (interpolated) weights, like --cond-mix")
  p.add_argument("--num", type=int, default=1, help="outputs per condition")
  p.add_argument("--seconds", type=float, default=4.0)
  # The sampling settings default to the run's config.sample (the recipe's
  # recommendation; base defaults: temperature 1, no guidance, no filters).
  p.add_argument("--temperature", type=_floats,
                 help="one value, or one per output, comma-separated "
                 "(default: the run's sample.temperature)")
  p.add_argument("--guidance", type=_floats,
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
  p.add_argument("--truncate-above", type=int, metavar="LEVELS",
                 help="apply the filters above (top-k/p, min-p, typical) "
                 "only where the previous FS(1) samples reach more than "
                 "LEVELS from the centre, and draw from the full "
                 "distribution in quieter passages (-1: everywhere)")
  p.add_argument("--prime", help="a wav (any audio) whose end is continued")
  p.add_argument("--start", choices=sampling.STARTS, default="h0",
                 help="hidden state at the start: learned h0 or zeros")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the first output; the others count up")
  p.add_argument("--crash-guard", action=argparse.BooleanOptionalAction,
                 help="rewind a row to its last good 0.25 s and resample it "
                 "when the crash detector fires (csrnn_jax.crash_guard; "
                 "default: the run's sample.crash_guard)")
  p.add_argument("--redraw-unfiltered",
                 action=argparse.BooleanOptionalAction,
                 help="the crash guard redraws a rewound stretch from the "
                 "plain conditional distribution, without the filters and "
                 "at guidance 1 (default: the run's "
                 "sample.redraw_unfiltered)")
  p.add_argument("--guard-rewinds", type=int, metavar="N",
                 help="the crash guard's rewinds per row, at most (default: "
                 "the run's sample.guard_rewinds)")
  p.add_argument("--guard-backoff", type=float, metavar="SECONDS",
                 help="a row that falls into the same crash again goes back "
                 "this much further than the time before (default: the "
                 "run's sample.guard_backoff)")
  p.add_argument("--denoise", type=float, metavar="STRENGTH",
                 help="take the sampling noise out of the written audio, down "
                 "to the run's quantisation noise (csrnn_jax.postfilter; the "
                 "noise level estimated per frame times STRENGTH is "
                 "subtracted; 0: the audio as drawn; default: the run's "
                 "sample.denoise)")
  p.add_argument("--segment-seconds", type=float, default=4.0,
                 help="generate long audio in pieces of this length")
  p.add_argument("--out", help="output folder (default RUN/samples/step<N>)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace outputs of the same names made with other "
                 "settings")
  return p


def main(argv=None) -> int:
  args = parser(argv).parse_args(argv)
  try:
    rundir.check(args.workdir)
    step = common.parse_step(args.step)
    _check_lengths(args)
    config = rundir.read_config(args.workdir)
    settings = sampling_settings(args, config.sample)
    if not (math.isfinite(settings["denoise"]) and settings["denoise"] >= 0):
      raise ValueError(f"--denoise {settings['denoise']:g}: give a strength "
                       ">= 0 (0 keeps the audio as drawn)")
    if settings["guard_rewinds"] < 0:
      raise ValueError(f"--guard-rewinds {settings['guard_rewinds']}: give "
                       "a count >= 0 (0: the guard never rewinds)")
    if not (math.isfinite(settings["guard_backoff"])
            and settings["guard_backoff"] >= 0):
      raise ValueError(f"--guard-backoff {settings['guard_backoff']:g}: give "
                       "seconds >= 0 (0: every rewind goes to the crash's "
                       "onset)")
    rows = build_rows(config, [c for c in args.cond.split(",") if c],
                      args.cond_vector, args.num, args.seed,
                      settings["temperature"], settings["guidance"],
                      args.cond_mix, args.cond_schedule, args.morph,
                      args.morph_mix)
    guided = any(r.guided for r in rows)
    options = sampling.SamplingOptions(
        settings["top_k"], settings["top_p"], settings["min_p"],
        settings["typical_p"], settings["truncate_above"],
        guide=settings["guide"] if guided else "off")
    if (not config.train.cond_dropout
        and any(abs(r.null_weight) > 1e-6 for r in rows)):
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
    mcfg = config.model
    prime = None
    if args.prime:
      prime = audio.encode(audio.load_audio(args.prime, sample_rate),
                           mcfg.q_levels, mcfg.quantization, mcfg.preemphasis)
    config, mcfg, graphdef, params, step = checkpoint_lib.load_run(
        args.workdir, step)
    out = args.out or rundir.samples_dir(args.workdir, step)
    metadata = {"workdir": os.path.abspath(args.workdir),
                "checkpoint_step": step,
                "config_sha256": hashlib.sha256(
                    configlib.to_json(config).encode()).hexdigest(),
                "prime": args.prime}
    # The rows are split over every visible device (the crash guard rewinds
    # rows one by one, on one device).
    mesh = (sharding.make_mesh() if jax.device_count() > 1
            and not settings["crash_guard"] else None)
    paths = outputs.generate_to_files(
        sampling.Generator(graphdef, params, mesh), rows, args.seconds,
        sample_rate, out, options, prime, args.start, args.segment_seconds,
        metadata, guard=(crash_guard.CrashGuard(
            sample_rate, max_rewinds=settings["guard_rewinds"],
            redraw_unfiltered=settings["redraw_unfiltered"],
            backoff_seconds=settings["guard_backoff"])
                         if settings["crash_guard"] else None),
        overwrite=args.overwrite, denoise=settings["denoise"])
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    return common.fail(e)
  for path in paths:
    print(path)
  print(os.path.join(out, "spectrograms.png"))
  morphs = [(p, r) for p, r in zip(paths, rows) if r.schedule]
  if morphs:
    figure = os.path.join(out, "class_probabilities.png")
    try:
      judge_morphs(config, morphs, figure)
      print(figure)
    except (ValueError, OSError) as e:  # DatasetError is a ValueError
      print(f"warning: no class_probabilities.png: the judge needs the run's "
            f"dataset ({e})", file=sys.stderr)
  return 0


def judge_morphs(config, morphs, png_path: str) -> None:
  """Plots, per morph, the class probabilities over time that the plain
  judge of ``audio_eval`` (trained on the run's train split, as the model
  hears it) gives each segment, with the keyframes marked."""
  from csrnn_jax import audio_eval  # pylint: disable=import-outside-toplevel
  from csrnn_jax import plots  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  m = config.model
  train = audio_eval.load_dataset_clips(config.data.dataset_dir, "train",
                                        m.q_levels, m.quantization,
                                        m.preemphasis)
  names = list(config.data.class_names)
  sr = config.data.sample_rate
  judge = audio_eval.ConditionClassifier(names).fit(
      [audio_eval.segment_features(c.wave_T, sr) for c in train],
      [c.label for c in train])
  curves = []
  for path, row in morphs:
    wave_T, _ = sf.read(path, dtype="float32")
    probs_NxC = judge.segment_probs(audio_eval.segment_features(wave_T, sr))
    curves.append((os.path.basename(path)[:-4], probs_NxC,
                   len(wave_T) / sr / len(probs_NxC),
                   [t for t, _ in row.schedule]))
  plots.class_probabilities(curves, names, png_path)
