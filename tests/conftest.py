"""Test-wide settings and the session fixtures.

- 4 fake CPU devices, for the tests about sharding. Every other run trains
  on one of them (``helpers.train``), as on a laptop.
- A persistent compilation cache in .cache/jax-tests
  (``JAX_COMPILATION_CACHE_DIR`` to move it), which the subprocesses that tests start inherit through the
  environment: a program compiled once, by any test or by an earlier session,
  is read back instead of compiled again.
- XLA's optimisation passes off (``JAX_DISABLE_MOST_OPTIMIZATIONS``): the
  tests' programs are tiny, so compiling them costs far more than running
  them. Every test passes with the passes on and off (float32 stays
  float32, matmuls stay at full precision).
- XLA's legacy CPU emitters (``--xla_cpu_use_fusion_emitters=false``, unless
  ``XLA_FLAGS`` already sets it, as the settings above yield to theirs): they
  compile a small program in half the time (the suite: 354 s of compiling
  down to 141 s). And each program's code generated in one piece
  (``--xla_cpu_parallel_codegen_split_count=1``): the default splits it for
  parallel threads, which for the tests' small programs costs more than it
  gains, and the xdist workers already use every core. Two different programs of the same arithmetic are then
  equal to a few units in the last place, not always bit for bit; the tests
  that compare such programs say so (``helpers.
  assert_trees_equal_to_rounding``), and one program run twice stays
  bitwise.
- float32 matmuls at full precision, as the tolerances assume.
- Python's cyclic garbage collector run less often (generation 0 at 50,000
  allocations instead of 700) and blind to what exists after the imports
  (``gc.freeze``): tracing allocates objects by the million, and collecting
  them every 700 cost about a tenth of the suite's time.
- ``tiny_dataset`` (audio_fixtures) and ``trained_run`` (helpers) are built
  once per session; read them only.
"""
import gc
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
for flag in ("--xla_cpu_use_fusion_emitters=false",
             "--xla_cpu_parallel_codegen_split_count=1"):
  if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS", ""), flag]))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_debug_nans", False)
jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

import helpers  # noqa: E402
from audio_fixtures import tiny_dataset  # noqa: E402,F401  (session fixture)

gc.freeze()
gc.set_threshold(50_000, 20, 20)


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory):  # noqa: F811
  """configs/tiny.py trained for one chunk batch (W steps, a checkpoint at
  the end, no validation) once per session, for the tests of sampling, its
  CLI and the evaluation. Read it only; copy it to change it."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  helpers.train_run(helpers.tiny_config(
      tiny_dataset, num_steps=helpers.WINDOWS_PER_BATCH, eval_every=0),
      workdir)
  return workdir
