"""One row of the quality study (docs/results.md): train a recipe on a
prepared dataset, generate with sample.py, and judge the clips.

    python scripts/quality_study.py --dataset DATA --workdir RUN \
        [--config configs/cpu.py] [--set model.preemphasis=0.85 ...] \
        [--sample "--temperature 0.9 --guidance 2"] [--label NAME]

Steps, each the public command a user would run (printed as it runs):
1. ``python train.py --config CONFIG:DATA --workdir RUN --config.KEY=VALUE``
   (skipped with ``--skip-train``; a finished run is reused);
2. ``python sample.py --workdir RUN --num N --seconds S`` per class, plus
   2-class mixes by composition (``--cond-mix a=0.5,b=0.5``, every pair,
   when the run has 3 classes or more), into RUN/samples/<label>;
3. ``python sample.py --workdir RUN --num L --seconds 30`` per class into
   RUN/samples/<label>_long, for the crash rate over 30 s;
4. ``audio_eval.evaluate_folder`` on both folders (both judges, flatness,
   periodicity, crashes, mixes), against the run's dataset or, with
   ``--judge-dataset``, another preparation of the same audio (so that runs
   trained on differently cut chunks are judged against the same clips).
Appends a JSON line to ``--results`` (default RUN/../quality.jsonl) and
prints a markdown row.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from csrnn_jax import audio_eval  # noqa: E402
from csrnn_jax import configlib  # noqa: E402
from csrnn_jax import dataset as dataset_lib  # noqa: E402
from csrnn_jax import metrics as metrics_lib  # noqa: E402
from csrnn_jax import rundir  # noqa: E402


def run(cmd: list[str]) -> float:
  """Runs a command from the repository root; returns its wall seconds."""
  print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
  start = time.perf_counter()
  subprocess.run(cmd, cwd=REPO, check=True)
  return time.perf_counter() - start


def train(args) -> float | None:
  if args.skip_train:
    return None
  cmd = [sys.executable, "train.py", f"--config={args.config}:{args.dataset}",
         f"--workdir={args.workdir}"]
  cmd += [f"--config.{kv}" for kv in args.set]
  return run(cmd)


def sample(args, config, label: str, num: int, seconds: float,
           mixes: bool) -> str:
  out = os.path.join(args.workdir, rundir.SAMPLES, label)
  base = [sys.executable, "sample.py", f"--workdir={args.workdir}",
          f"--seconds={seconds:g}", f"--out={out}"] + shlex.split(args.sample)
  run(base + [f"--num={num}", f"--seed={args.seed}"])
  classes = list(config.data.class_names)
  if mixes and args.mix_num and len(classes) > 2:
    pairs = list(itertools.combinations(classes, 2))
    cmd = base + [f"--num={args.mix_num}", f"--seed={args.seed + 10_000}"]
    for a, b in pairs:
      cmd.append(f"--cond-mix={a}=0.5,{b}=0.5")
    run(cmd)
  return out


def sampled_step(folder: str) -> int:
  """The checkpoint step that sample.py read for the clips in ``folder``
  (from any sidecar: sample.py loads one checkpoint per call)."""
  paths = sorted(glob.glob(os.path.join(folder, "*.json")))
  for path in paths:
    with open(path) as f:
      meta = json.load(f)
    if "checkpoint_step" in meta:
      return meta["checkpoint_step"]
  raise ValueError(f"{folder}: no sample.py sidecar names its checkpoint")


def valid_bits(workdir: str, step: int):
  """The validation NLL at the sampled checkpoint (None if not evaluated)."""
  records = [r for r in metrics_lib.read(rundir.metrics_path(workdir))
             if r["kind"] == "valid" and r["step"] == step]
  return records[-1]["bits"] if records else None


def summary(args, config, short, long, train_seconds, step) -> dict:
  gen, test = short["generated"]["per_class"], short["test"]["per_class"]
  classes = short["classes"]
  return {
      "label": args.label, "dataset": os.path.abspath(args.dataset),
      "workdir": os.path.abspath(args.workdir), "set": args.set,
      "sample": args.sample, "train_seconds": train_seconds,
      "checkpoint_step": step,
      "valid_bits": valid_bits(args.workdir, step),
      "chance": short["chance"], "ceilings": short["ceilings"],
      "accuracy": gen["all"]["accuracy"],
      "accuracy_robust": gen["all"]["accuracy_robust"],
      "accuracy_per_class": {n: gen[n]["accuracy"] for n in classes},
      "flatness_ratio": short["flatness_ratio_original"],
      "flatness_floor": short["flatness_floor"],
      "flatness_ratio_8bit": short["flatness_ratio"],
      "periodicity": {n: (gen[n]["periodicity"], test[n]["periodicity"])
                      for n in classes},
      "crash_rate_short": gen["all"]["crash_rate"],
      "crash_rate_long": long["generated"]["per_class"]["all"][
          "crash_rate_long"],
      "long_clips": long["generated"]["per_class"]["all"]["long_clips"],
      "mix": short["mix"],
      # Frechet distance of each class's MFCC statistics to its real train
      # clips (generated, and the real test clips' as the floor): lower
      # flatness that comes from a stuck, droning sound shows here.
      "frechet": {n: (short["frechet_to_train"]["generated"].get(n, {}).get(n),
                      short["frechet_to_train"]["test"].get(n, {}).get(n))
                  for n in classes}}


def markdown_row(s: dict) -> str:
  fmt = lambda v, spec=".2f": "–" if v is None else format(v, spec)
  ratios = [v for v in s["flatness_ratio"].values() if v is not None]
  per = [f"{g / r:.2f}" if g is not None and r else "–"
         for g, r in s["periodicity"].values()]
  mix = s["mix"] or {}
  return (f"| {s['label']} | {fmt(s['valid_bits'], '.3f')} | "
          f"{fmt(s['accuracy'])} / {fmt(s['ceilings']['plain'])} | "
          f"{fmt(s['accuracy_robust'])} | "
          f"{fmt(max(ratios) if ratios else None, '.1f')} "
          f"({', '.join(f'{v:.1f}' for v in ratios)}; floor "
          f"{', '.join(f'{v:.1f}' for v in s['flatness_floor'].values() if v)})"
          f" | {', '.join(per)} | "
          f"{fmt(s['crash_rate_long'])} of {s['long_clips']} | "
          f"{fmt(mix.get('plain'))} | "
          f"{', '.join(fmt(g, '.0f') for g, _ in s['frechet'].values())} | "
          f"{fmt(s['train_seconds'] and s['train_seconds'] / 60, '.1f')} |")


def judged_against(config, dataset_dir: str):
  """The run's config with another preparation of its audio as the dataset
  to judge against; it must hold the run's classes at its sample rate."""
  manifest = dataset_lib.read_manifest(dataset_dir)
  run = dataset_lib.read_manifest(config.data.dataset_dir)
  for key in ("class_names", "sample_rate"):
    if manifest[key] != run[key]:
      raise SystemExit(
          f"error: --judge-dataset {dataset_dir} has {key} {manifest[key]}, "
          f"the run's dataset {run[key]}; judge against a preparation of "
          "the same audio")
  return configlib.replace(
      config, **{"data.dataset_dir": os.path.abspath(dataset_dir)})


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--config", default="configs/cpu.py")
  p.add_argument("--set", action="append", default=[],
                 help="KEY=VALUE config override, e.g. model.dim=256")
  p.add_argument("--sample", default="",
                 help='extra sample.py flags, e.g. --sample "--min-p 0.02" '
                 "(one flag alone: --sample=--crash-guard, or argparse reads "
                 "it as a flag of this script)")
  p.add_argument("--label", default="run")
  p.add_argument("--num", type=int, default=6, help="clips per class")
  p.add_argument("--seconds", type=float, default=4.0)
  p.add_argument("--mix-num", type=int, default=2, help="clips per pair")
  p.add_argument("--long-num", type=int, default=4,
                 help="30-second clips per class (0: skip)")
  p.add_argument("--seed", type=int, default=100)
  p.add_argument("--skip-train", action="store_true")
  p.add_argument("--judge-dataset",
                 help="prepared dataset to judge against (default: the run's)")
  p.add_argument("--results")
  args = p.parse_args()
  train_seconds = train(args)
  config = rundir.read_config(args.workdir)
  if args.judge_dataset:
    config = judged_against(config, args.judge_dataset)
  evaluate = lambda folder: audio_eval.evaluate_generated_dir(config, folder)
  short_dir = sample(args, config, args.label, args.num, args.seconds,
                     mixes=True)
  short = evaluate(short_dir)
  long = (evaluate(sample(args, config, args.label + "_long", args.long_num,
                          audio_eval.LONG_CLIP_SECONDS, mixes=False))
          if args.long_num else {"generated": {"per_class": {"all": {
              "crash_rate_long": None, "long_clips": 0}}}})
  row = summary(args, config, short, long, train_seconds,
                sampled_step(short_dir))
  results = args.results or os.path.join(os.path.dirname(
      os.path.abspath(args.workdir)), "quality.jsonl")
  with open(results, "a") as f:
    f.write(json.dumps(row) + "\n")
  print("| recipe | valid bits | acc. / ceiling | robust acc. | flatness "
        "ratio to original, max (per class; 8-bit floor) | periodicity gen/real | crash rate 30 s | "
        "mix | Frechet to real per class | train min |")
  print(markdown_row(row))


if __name__ == "__main__":
  main()
