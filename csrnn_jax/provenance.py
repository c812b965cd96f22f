"""What a run needs to be reproduced: code revision, package versions,
devices, seeds, the data manifest's hash, the command line."""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

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


def collect(seed: int, manifest_path: str | None = None) -> dict:
  """One session's provenance record."""
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
  }
