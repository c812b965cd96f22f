"""Checkpoints: which ones are kept (the last N and the best, across
restarts) and damaged checkpoints. Real Orbax checkpoints of small trees."""
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import model as model_lib
from csrnn_jax import rundir

PARAMS = {"w": jnp.arange(12.0).reshape(3, 4), "layers": {0: jnp.ones(5)}}


def saved(ckpt, step, valid_bits=None):
  params = {"w": PARAMS["w"] + step, "layers": PARAMS["layers"]}
  ckpt.save(step, params, None, {"note": f"step {step}"}, valid_bits)


def on_disk(workdir) -> list[int]:
  return sorted(int(p.name) for p in (pathlib.Path(workdir) / "checkpoints")
                .iterdir() if p.name.isdigit())


def test_best_checkpoint_survives_any_number_of_restarts(tmp_path):
  """keep=1: each session keeps its latest, and the best by valid_bits over
  every checkpoint on disk, even one written two restarts ago."""
  workdir = str(tmp_path)
  sessions = [[(1, 9.0), (2, 8.6), (3, 9.5)],  # the best: step 2
              [(4, None), (5, 10.24)],
              [(6, 9.9), (7, None)]]
  for session in sessions:  # every session is a fresh Checkpointer
    ckpt = checkpoint_lib.Checkpointer(workdir, keep=1)
    for step, bits in session:
      saved(ckpt, step, bits)
    ckpt.close()
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=1)
  assert on_disk(workdir) == ckpt.steps() == [2, 7]
  assert ckpt.best_step() == 2 and ckpt.resolve("best") == 2
  params, _, meta = ckpt.restore("best", PARAMS)
  assert meta["valid_bits"] == 8.6 and meta["note"] == "step 2"
  np.testing.assert_array_equal(params["w"], PARAMS["w"] + 2)
  saved(ckpt, 8, 8.1)  # a new best replaces the old one
  assert on_disk(workdir) == [8]
  ckpt.close()


def test_keep_last_n_without_any_validation(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
  for step in range(1, 5):
    saved(ckpt, step)
  assert on_disk(tmp_path) == [3, 4] and ckpt.best_step() == 4
  ckpt.close()


def truncate_arrays(step_dir: pathlib.Path):
  for path in (step_dir / "params").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      with open(path, "r+b") as f:
        f.truncate(10)


@pytest.mark.parametrize("damage", [
    truncate_arrays,
    lambda d: shutil.rmtree(d / "params"),
    lambda d: shutil.rmtree(d / "meta"),
], ids=["truncated-arrays", "deleted-params", "deleted-meta"])
def test_damaged_latest_checkpoint_falls_back_and_is_named(tmp_path, capsys,
                                                           damage):
  workdir = str(tmp_path)
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=3)
  for step in (1, 2, 3):
    saved(ckpt, step, 10.0 - step)
  ckpt.close()
  damage(tmp_path / "checkpoints" / "3")
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=3)
  params, _, meta = ckpt.restore("latest", PARAMS)
  assert meta["step"] == 2 and ckpt.damaged == [3]
  np.testing.assert_array_equal(params["w"], PARAMS["w"] + 2)
  err = capsys.readouterr().err
  assert "skipping the damaged checkpoint at step 3" in err
  assert len(err) < 600  # one line, not a tensorstore dump
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"checkpoint at step 3 .* is damaged .*use another "
                           r"step \(available: 1, 2, 3\)"):
    ckpt.restore(3, PARAMS)
  ckpt.set_aside_damaged()
  assert ckpt.steps() == [1, 2]
  assert (tmp_path / "checkpoints" / "3.damaged").is_dir()
  saved(ckpt, 3)  # the step can be written again
  assert ckpt.restore("latest", PARAMS)[2]["note"] == "step 3"
  ckpt.close()


def test_every_checkpoint_damaged_says_so(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path))
  saved(ckpt, 1)
  ckpt.close()
  shutil.rmtree(tmp_path / "checkpoints" / "1" / "params")
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"no checkpoint in .* can be read \(damaged: 1\)"):
    ckpt.restore("latest", PARAMS)
  ckpt.close()


def tiny_run_config():
  return configlib.RunConfig(model=model_lib.ModelConfig(
      frame_sizes=(4, 4, 16), dim=8, cond_dim=2))


def test_a_parameters_only_run_loads_from_its_workdir_alone(tmp_path):
  """save_params writes what an importer has (no optimizer state);
  load_run rebuilds the model from config.json and restores into it."""
  workdir = str(tmp_path)
  config = tiny_run_config()
  mcfg = config.model
  _, params = model_lib.build(mcfg, 0)
  rundir.write_config(workdir, config)
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"no checkpoint in .*; train first"):
    checkpoint_lib.load_run(workdir)
  checkpoint_lib.save_params(workdir, params, step=5)
  _, loaded_mcfg, _, loaded, step = checkpoint_lib.load_run(workdir, "best")
  assert step == 5 and loaded_mcfg == mcfg
  for want, got in zip(jax.tree_util.tree_leaves(params),
                       jax.tree_util.tree_leaves(loaded)):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"no checkpoint at step 7 .*available: 5, "
                           r"'latest' or 'best'"):
    checkpoint_lib.load_run(workdir, 7)
