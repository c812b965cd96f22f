"""Data parallelism (docs/design.md §7) on the 4 fake CPU devices of
conftest: the sharded step equals the single-device one, checkpoints move
between device counts, batch sizes that do not divide are refused, and two
processes joined by jax.distributed train bitwise like one process with as
many devices."""
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import data as data_lib
from csrnn_jax import evaluate
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import model as model_lib
from csrnn_jax import rundir
from csrnn_jax import sharding
from csrnn_jax import trainer
from helpers import REPO, assert_trees_equal, final_params, one_device
from helpers import assert_trees_equal_to_rounding
from helpers import WINDOWS_PER_BATCH as WINDOWS
from helpers import tiny_config, tiny_run_config, train_run


def assert_trees_close(a, b, atol=1e-4):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0,
                               atol=atol)


def run_config(dataset, batches):
  return tiny_config(dataset, num_steps=batches * WINDOWS,
                     checkpoint_every=WINDOWS, eval_every=0)


@pytest.fixture(scope="module")
def reference_run(tiny_dataset, tmp_path_factory):
  """3 chunk batches on one device, a checkpoint after each."""
  workdir = tmp_path_factory.mktemp("sharding") / "one_device"
  train_run(run_config(tiny_dataset, 3), workdir, one_device())
  return workdir


def test_mesh_spans_every_device_in_process_order():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == 4
  assert [d.id for d in mesh.devices] == sorted(d.id for d in jax.devices())


def test_sharded_training_scan_matches_one_device(tiny_dataset):
  """6 windows on 4 devices and on a 1-device mesh against no mesh.

  Window 0 starts from the same parameters, so its bits differ by rounding
  only (another program; 4 devices also sum the rows in another order).
  Adam then divides each gradient entry by its own running magnitude, so a
  rounding difference in an entry near zero can move that entry's update by
  up to the learning rate (3e-3) per window: after 6 windows the parameters
  are compared to 1e-4, a thirtieth of one window's step, and the later
  windows' bits to 1e-5."""
  config = tiny_run_config(tiny_dataset)
  mcfg = config.model
  stream = data_lib.BatchStream(str(tiny_dataset), "train", 4, 256,
                                mcfg.lookback, prefetch=0)
  batch = next(stream)
  windows_NxBxW = data_lib.windows(batch.x_BxT, 256, mcfg.lookback)[:6]
  graphdef, params = model_lib.build(mcfg, 0)
  tx = trainer.make_optimizer(config.train)
  assert config.train.learning_rate == 3e-3
  single = trainer.make_chunk_step(graphdef, tx, mcfg.lookback)
  key = jax.random.key(0)
  want, _, want_metrics = single(params, tx.init(params), windows_NxBxW,
                                 batch.cond_BxC, batch.mask_B, key)

  for mesh in (sharding.make_mesh(), one_device()):
    _, params = model_lib.build(mcfg, 0)  # the last copy was donated
    sharded = trainer.make_chunk_step(graphdef, tx, mcfg.lookback, mesh=mesh)
    got, opt_state, got_metrics = sharded(
        *sharding.replicate((params, tx.init(params)), mesh),
        sharding.shard_batch_rows(windows_NxBxW, mesh, 1),
        *sharding.shard_batch_rows((batch.cond_BxC, batch.mask_B), mesh),
        key)
    assert_trees_equal_to_rounding(got_metrics["bits"][0],
                                   want_metrics["bits"][0])
    np.testing.assert_allclose(got_metrics["bits"], want_metrics["bits"],
                               rtol=0, atol=1e-5)
    assert_trees_close(got, want, 1e-4)
    for leaf in jax.tree_util.tree_leaves((got, opt_state)):
      assert leaf.sharding.is_fully_replicated
      assert len(leaf.devices()) == mesh.devices.size


def test_sharded_validation_matches_one_device(tiny_dataset):
  # 6 rows round up to 8 on 4 devices; every chunk is still scored once.
  config = tiny_run_config(tiny_dataset, seq_len=256, eval_batch_size=6)
  mcfg = config.model
  graphdef, params = model_lib.build(mcfg, 0)
  want = evaluate.SplitEvaluator(config, mcfg, graphdef, "valid").run(params)
  mesh = sharding.make_mesh()
  got = evaluate.SplitEvaluator(config, mcfg, graphdef, "valid", mesh).run(
      sharding.replicate(params, mesh))
  assert got["chunks"] == want["chunks"] == 9
  assert got["bits"] == pytest.approx(want["bits"], abs=1e-5)
  assert got["per_class"] == pytest.approx(want["per_class"], abs=1e-5)


def test_batch_that_does_not_divide_names_the_nearest_sizes(tiny_dataset,
                                                            tmp_path):
  config = tiny_config(tiny_dataset, batch_size=6)
  with pytest.raises(ValueError, match=r"train.batch_size=6 does not divide "
                     r"over the 4 devices.*train.batch_size=4 or 8"):
    trainer.train_and_evaluate(configlib.resolve(config),  # all 4 devices
                               str(tmp_path / "run"))
  with pytest.raises(ValueError, match=r"=2 .*set train.batch_size=4, or"):
    sharding.check_batch_size(2, sharding.make_mesh())
  sharding.check_batch_size(6, sharding.make_mesh(jax.devices()[:2]))
  assert sharding.round_up_batch(6, sharding.make_mesh()) == 8


@pytest.mark.slow
def test_checkpoints_move_between_device_counts(reference_run, tiny_dataset,
                                                tmp_path):
  """1 device -> 4 devices -> 1 device: each checkpoint restores bitwise into
  the shardings it is asked for, and training ends where 1 device alone does.

  The end is compared by the training loss, not the parameters: 4 devices sum
  the gradient in another order, and Adam divides by sqrt(v), so an element
  whose gradient is near zero can move by up to 2 lr per step (6e-3 here) on
  rounding alone. The loss is smooth in all of them: rounding moves it by
  about 1e-5 bits, while a lost optimizer state or a skipped window moves it
  by more than 0.01 at this point of training (0.1 bits per step)."""
  workdir = tmp_path / "moved"
  shutil.copytree(reference_run, workdir)
  for step in (2 * WINDOWS, 3 * WINDOWS):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  mesh = sharding.make_mesh()
  train_run(run_config(tiny_dataset, 2), workdir, mesh)

  graphdef, params = model_lib.build(
      rundir.read_config(str(workdir)).model, 1)
  ckpt = checkpoint_lib.Checkpointer(str(workdir))
  for step in (WINDOWS, 2 * WINDOWS):  # saved by 1 and by 4 devices
    restored = {}
    for name, target in (("one", one_device()), ("four", mesh)):
      restored[name], _, meta = ckpt.restore(
          step, sharding.replicate(params, target))
      assert meta["step"] == step
      for leaf in jax.tree_util.tree_leaves(restored[name]):
        assert leaf.sharding.mesh == target
    assert_trees_equal(restored["one"], restored["four"])
  ckpt.close()

  train_run(run_config(tiny_dataset, 3), workdir, one_device())
  assert final_params(workdir)[1] == final_params(reference_run)[1] == (
      3 * WINDOWS)
  got, want = ({r["step"]: r for r in metrics_lib.read(str(w / "metrics.jsonl"))
                if r["kind"] == "train"} for w in (workdir, reference_run))
  assert sorted(got) == sorted(want) == [WINDOWS, 2 * WINDOWS, 3 * WINDOWS]
  assert got[WINDOWS] == want[WINDOWS]  # copied: the 1-device segment
  for step in (2 * WINDOWS, 3 * WINDOWS):
    assert got[step]["bits"] == pytest.approx(want[step]["bits"], abs=1e-3)
    assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"],
                                                   rel=1e-3)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_train_processes(workdir, dataset, num_processes: int, devices: int):
  """train.py for 2 chunk batches in ``num_processes`` processes (joined by
  jax.distributed on localhost when more than one) of ``devices`` CPU
  devices each; returns the processes' (returncode, stdout, stderr)."""
  cmd = [sys.executable, str(REPO / "train.py"), "--config=tiny",
         f"--config.data.dataset_dir={dataset}",
         "--config.train.seq_len=1024",
         f"--config.train.num_steps={2 * WINDOWS}",
         f"--config.train.checkpoint_every={WINDOWS}",
         f"--config.train.eval_every={2 * WINDOWS}",
         f"--config.train.sample_every={2 * WINDOWS}",
         "--config.train.sample_seconds=0.01", f"--workdir={workdir}"]
  ids = [[]]
  if num_processes > 1:
    cmd += ["--multihost", f"--coordinator_address=127.0.0.1:{free_port()}",
            f"--num_processes={num_processes}"]
    ids = [[f"--process_id={i}"] for i in range(num_processes)]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "JAX_NUM_CPU_DEVICES": str(devices)}
  procs = [subprocess.Popen(cmd + i, cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in ids]
  try:
    outputs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(p.returncode,) + out for p, out in zip(procs, outputs)]


@pytest.mark.slow
def test_two_processes_train_like_one(tiny_dataset, tmp_path):
  """2 processes x 1 CPU device, each reading half of every batch, joined by
  jax.distributed on localhost, end bitwise equal to 1 process x 2 devices;
  process 0 alone writes metrics, provenance and samples.

  Why bitwise: each device runs the same program on the same rows in both
  runs, and an all-reduce over two participants is a single addition, which
  IEEE arithmetic makes commutative, so no collective can order it
  differently. With more participants the grouping of the sum is the
  collective's choice (in-process and cross-process ones differ), and Adam's
  normalisation magnifies such last-bit differences in parameters whose
  gradient is near zero: a fixed tolerance on the parameters would then
  depend on the machine. How close several devices come to one device is
  test_sharded_training_scan_matches_one_device's question.
  """
  reference, two_hosts = tmp_path / "one_process", tmp_path / "two_hosts"
  for workdir, num_processes, devices in ((reference, 1, 2),
                                          (two_hosts, 2, 1)):
    for returncode, _, err in run_train_processes(workdir, tiny_dataset,
                                                  num_processes, devices):
      assert returncode == 0, err[-3000:]
  got, got_step = final_params(two_hosts)
  want, want_step = final_params(reference)
  assert got_step == want_step == 2 * WINDOWS
  assert_trees_equal(got, want)

  records = metrics_lib.read(str(two_hosts / "metrics.jsonl"))
  assert [r["step"] for r in records if r["kind"] == "train"] == [
      WINDOWS, 2 * WINDOWS]
  assert len([r for r in records if r["kind"] == "valid"]) == 1
  prov = (two_hosts / "provenance.json").read_text()
  assert '"process_count": 2' in prov and prov.count('"started"') == 1
  assert len(list((two_hosts / "train_samples").glob("step*/*.wav"))) == 3


def test_generation_sharded_over_devices_equals_one_device():
  from csrnn_jax import model as model_lib
  from csrnn_jax import sampling
  cfg = model_lib.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=2)
  graphdef, params = model_lib.build(cfg, 0)
  cond = np.eye(2, dtype=np.float32)[[0, 1, 1]]
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 4
  one_x, one_logp = sampling.Generator(graphdef, params).generate(
      cond, [1, 2, 3], 48)
  many_x, many_logp = sampling.Generator(graphdef, params, mesh).generate(
      cond, [1, 2, 3], 48)  # 3 rows padded to 4 and trimmed back
  np.testing.assert_array_equal(many_x, one_x)
  np.testing.assert_allclose(many_logp, one_logp, atol=1e-5)
