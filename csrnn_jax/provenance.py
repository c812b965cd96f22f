"""What a run needs to be reproduced: code revision, package versions,
devices, seeds, the data manifest's hash, the command line.

``collect`` makes one session's record; ``rundir`` keeps the records in the
run's provenance.json. ``check_dataset`` compares a dataset's manifest with
the hash the run's last session recorded, so that a run is neither resumed
nor scored on another dataset by mistake.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

from csrnn_jax import dataset
from csrnn_jax import rundir

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "librosa", "soundfile", "ml_collections", "csrnn-jax")


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def code_revision() -> str:
  """``git describe`` of this package's checkout (+ "-dirty"), or "unknown"."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
        capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def package_versions() -> dict[str, str]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def collect(seed: int, manifest_path: str | None = None,
            matmul_precision: str | None = None) -> dict:
  """One session's provenance record (``matmul_precision``: the model's, as
  it decides the float32 matmuls' numerics on the devices listed)."""
  return {
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "code_revision": code_revision(),
      "command": sys.argv,
      "python": sys.version.split()[0],
      "platform": platform.platform(),
      "packages": package_versions(),
      "devices": [str(d) for d in jax.devices()],
      "process_count": jax.process_count(),
      "seed": seed,
      "manifest_sha256": sha256(manifest_path) if manifest_path else None,
      "matmul_precision": matmul_precision,
  }


class DatasetChanged(ValueError):
  """A dataset that is not (or cannot be shown to be) the run's."""


def recorded_manifest_sha256(sessions: list[dict]) -> str | None:
  """The manifest hash of the last session that recorded one."""
  hashes = [s.get("manifest_sha256") for s in sessions
            if isinstance(s, dict) and s.get("manifest_sha256")]
  return hashes[-1] if hashes else None


def check_dataset(workdir: str, dataset_dir: str, trained_dir: str, *,
                  accept: bool, accept_flag: str, dir_flag: str) -> None:
  """Raises DatasetChanged unless ``dataset_dir``'s manifest has the hash
  the run recorded (it may have moved from ``trained_dir``). ``accept``:
  warn instead. ``accept_flag``/``dir_flag``: how the caller's user says so,
  or points at another dataset, for the message."""
  sessions, problem = rundir.read_sessions(workdir)
  recorded = recorded_manifest_sha256(sessions)
  manifest = str(dataset.manifest_path(dataset_dir))
  moved = bool(trained_dir) and (os.path.abspath(trained_dir)
                                 != os.path.abspath(dataset_dir))
  if recorded is None or not os.path.isfile(manifest):
    why = problem or (f"{rundir.provenance_path(workdir)} records no "
                      "manifest hash")
    if moved and not accept and os.path.isfile(manifest):
      raise DatasetChanged(
          f"cannot tell whether {dataset_dir} is the dataset {workdir} was "
          f"trained on ({trained_dir}): {why}. Point {dir_flag} at "
          f"{trained_dir}, or pass {accept_flag} to use {dataset_dir}")
    if problem:
      print(f"warning: {why}; the dataset is not checked against it",
            file=sys.stderr)
    return
  current = sha256(manifest)
  if current == recorded:
    return
  what = (f"{manifest} is not the dataset {workdir} was trained on: its "
          f"sha256 is {current[:12]}..., the run recorded {recorded[:12]}... "
          f"in {rundir.PROVENANCE} (prepared again, or another dataset in its "
          "place)")
  if not accept:
    raise DatasetChanged(
        f"{what}. Point {dir_flag} at the dataset the run was trained on, or "
        f"pass {accept_flag} to use this one anyway")
  print(f"warning: {what}; using it, as {accept_flag} asks", file=sys.stderr)
