"""A non-editable ``pip install .`` holds every module and the paper's
configs, and ``csrnn-train --config ambient`` resolves from it alone.

The install uses this environment's setuptools and dependencies (no build
isolation, no deps), so it reaches no network and takes seconds."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocesses end to end

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("csrnn_jax", "configs", "pyproject.toml", "README.md", "LICENSE")


def py_files(root):
  return {p.relative_to(root).as_posix() for p in root.rglob("*.py")
          if "__pycache__" not in p.parts}


def test_pip_install_ships_configs_and_resolves_a_bare_config(tmp_path):
  source = tmp_path / "source"  # a copy: the build writes build/ and egg-info
  for name in SOURCES:
    copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
    copy(REPO / name, source / name, **(
        {"ignore": shutil.ignore_patterns("__pycache__")}
        if (REPO / name).is_dir() else {}))
  target = tmp_path / "site"
  done = subprocess.run(
      [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
       "--no-build-isolation", "--target", str(target), str(source)],
      capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]

  package = target / "csrnn_jax"
  assert py_files(REPO / "csrnn_jax") <= py_files(package)
  assert py_files(REPO / "configs") == py_files(package / "configs")
  assert (target / "csrnn_jax-0.1.0.dist-info" / "licenses" / "LICENSE"
          ).read_text() == (REPO / "LICENSE").read_text()

  elsewhere = tmp_path / "elsewhere"  # no configs/ folder here
  elsewhere.mkdir()
  env = {**os.environ, "PYTHONPATH": str(target), "JAX_PLATFORMS": "cpu"}
  where = subprocess.run(
      [sys.executable, "-c", "import csrnn_jax; print(csrnn_jax.__file__)"],
      cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
  assert where.stdout.strip() == str(package / "__init__.py")
  train = subprocess.run(
      [str(target / "bin" / "csrnn-train"), "--config", "ambient",
       "--print_config"],
      cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
  assert train.returncode == 0, train.stderr[-3000:]
  assert f"config file: {package / 'configs' / 'ambient.py'}" in train.stderr
  config = json.loads(train.stdout)
  assert config["name"] == "ambient"
  assert config["data"]["class_names"] == ["happy", "sad", "space", "creepy"]
  assert config["model"]["frame_sizes"] == [16, 16, 64]
