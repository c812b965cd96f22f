"""The GPU programs lower for cuda on this CPU-only machine, and the matmul
precision reaches every matmul of the compiled programs.

Lowering for cuda runs Pallas's Triton lowering, which refuses what Triton
cannot take (arrays whose sizes are not powers of 2, unsupported ops): the
kernels are lowered at the ambient model's shapes (dim 1024, frame sizes
(16, 16, 64), training batch 128, generation batch 1 and 128) and at odd
ones (dim 96, batch 3, Q 100), alone and inside the whole train step and
generator segment. What only the card can refuse (ptxas: registers, shared
memory) is left to ``bench/device_check.sh``.
"""
import collections
import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csrnn_jax import configlib
from csrnn_jax import model as M
from csrnn_jax import sampling
from csrnn_jax import trainer
from csrnn_jax.kernels import gru
from csrnn_jax.kernels import lstm
from csrnn_jax.kernels import pallas_gpu
from csrnn_jax.kernels import sample_step
from helpers import gru_inputs, gru_loss

S = jax.ShapeDtypeStruct
# The custom call of a Triton kernel: jaxlib 0.10 names it the first way,
# later jaxlibs (which compile the kernel while lowering) the second.
TRITON_CALL = re.compile(r"custom_call @(__gpu\$xla\.gpu\.triton|"
                         r"triton_kernel_call)")


def lower_for_cuda(fn, *args) -> str:
  return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def triton_launches(text: str) -> int:
  """Triton kernels in a lowered program (a kernel inside a loop counts
  once)."""
  return len(TRITON_CALL.findall(text))


@functools.cache
def cross_lowering_error() -> str | None:
  """Why this jaxlib cannot lower a Pallas Triton kernel for cuda here, or
  None when it can."""
  def kernel(x_ref, out_ref):
    out_ref[...] = x_ref[...]

  def copy(x):
    return pallas_gpu.call(kernel, compiled=True,
                           out_shape=S((16, 16), jnp.float32))(x)

  try:
    lower_for_cuda(copy, S((16, 16), jnp.float32))
  except Exception as e:  # pylint: disable=broad-except
    return f"{type(e).__name__}: {e}"
  return None


@pytest.fixture
def pallas_for_cuda():
  error = cross_lowering_error()
  if error:
    pytest.skip(f"this jaxlib cannot lower Pallas for cuda: {error}")


def _recurrence_loss(cell, b, t, h):
  """A layer's loss over (B, T, H) of the pallas backend and its arguments
  as shapes: lowering it lowers the kernel and the fused backward."""
  gates = {"gru": 3, "lstm": 4}[cell]
  h0 = S((b, h), jnp.float32)
  args = (S((b, t, h), jnp.float32), (h0, h0) if cell == "lstm" else h0,
          S((h, gates * h), jnp.float32), S((h, gates * h), jnp.float32),
          S((gates * h,), jnp.float32), S((gates * h,), jnp.float32))
  sequence = gru.gru_sequence if cell == "gru" else lstm.lstm_sequence

  def loss(*a):
    return jnp.sum(sequence(*a, backend="pallas")[0])

  return jax.value_and_grad(loss, argnums=range(6)), args


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("b,t,h", [(128, 64, 1024), (128, 16, 1024),
                                   (3, 5, 96)])  # ambient tiers 2, 3; odd
def test_recurrence_kernel_lowers_for_cuda_as_one_launch(
    pallas_for_cuda, cell, b, t, h):
  fn, args = _recurrence_loss(cell, b, t, h)
  assert triton_launches(lower_for_cuda(fn, *args)) == 1


@pytest.mark.parametrize("b,d,q", [(1, 1024, 256), (128, 1024, 256),
                                   (3, 96, 100)])
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_sample_head_lowers_for_cuda_as_two_launches(pallas_for_cuda, b, d, q,
                                                     compute_dtype):
  args = (S((b, d), jnp.float32), S((b, d), jnp.float32), S((d, d),
          jnp.float32), S((d,), jnp.float32), S((d, q), jnp.float32),
          S((q,), jnp.float32))
  head = functools.partial(sample_step.head_pallas,
                           compute_dtype=compute_dtype)
  assert triton_launches(lower_for_cuda(head, *args)) == 2


def _ambient(**model):
  config = configlib.paper_config("ambient")
  config.model.cond_dim = 4
  config.model.update(model)
  run = configlib.from_dict(configlib.validate(config).to_dict())
  return run, run.model


@pytest.mark.parametrize("backend,kernels", [("fused", 0), ("pallas", 2)])
def test_ambient_train_step_lowers_for_cuda(backend, kernels, request):
  """The whole chunk step (every window's forward, backward and Adam
  update) at batch 128: plain JAX, or with one recurrence kernel per frame
  tier."""
  if kernels:
    request.getfixturevalue("pallas_for_cuda")
  config, cfg = _ambient(gru_backend=backend)
  graphdef, params = M.abstract(cfg)
  tx = trainer.make_optimizer(config.train)
  step = trainer.make_chunk_step(graphdef, tx, cfg.lookback)
  b, w = config.train.batch_size, config.train.seq_len + cfg.lookback
  args = (params, jax.eval_shape(tx.init, params), S((2, b, w), jnp.int32),
          S((b, 4), jnp.float32), S((b,), jnp.float32),
          jax.eval_shape(lambda: jax.random.key(0)))
  text = step.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
  assert triton_launches(text) == kernels


def _segment_program(cfg, batch: int, options):
  """The generator's segment program (``Generator.segment``) over two top
  frames, as a function of shapes."""
  graphdef, params = M.abstract(dataclasses.replace(cfg, weight_norm=False))

  def segment(params, state, cond, keys, temperature, scales):
    return sampling.generate_segment(M.bind(graphdef, params), state, cond,
                                     keys, temperature, scales, 0, options)

  state = jax.eval_shape(
      lambda p: sampling.initial_state(M.bind(graphdef, p), batch), params)
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
  return segment, (params, state, S((batch, 1, 2, cfg.cond_dim), jnp.float32),
                   keys, S((batch,), jnp.float32),
                   S((batch, 1, 2), jnp.float32))


@pytest.mark.parametrize("batch", [1, 128])
@pytest.mark.parametrize("backend,kernels", [("fused", 0), ("pallas", 2)])
def test_ambient_generator_segment_lowers_for_cuda(batch, backend, kernels,
                                                   request):
  if kernels:
    request.getfixturevalue("pallas_for_cuda")
  _, cfg = _ambient()
  fn, args = _segment_program(cfg, batch,
                              sampling.SamplingOptions(backend=backend))
  assert triton_launches(lower_for_cuda(fn, *args)) == kernels


def _dot_precisions(text: str) -> collections.Counter:
  """How many ``dot_general``s of a lowered program carry each precision
  (None: no precision attribute)."""
  dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
  found = [re.search(r"precision = \[(\w+), \w+\]", line) for line in dots]
  return collections.Counter(m.group(1) if m else None for m in found)


def _tiny_loss(cfg):
  graphdef, params = M.abstract(cfg)

  def loss(params, x_BxW):
    m = M.bind(graphdef, params)
    logits, _ = m.forward(x_BxW, None, m.initial_carry(2))
    return jnp.mean(M.token_nll(logits, x_BxW[:, cfg.lookback:]))

  return loss, params


@pytest.mark.parametrize("precision", ["highest", "high", "default"])
@pytest.mark.parametrize("cell,compute_dtype", [("gru", "float32"),
                                                ("lstm", "bfloat16")])
def test_matmul_precision_reaches_every_matmul(precision, cell, compute_dtype):
  """Every matmul of a training step's gradient (the custom VJPs' backward
  scans and bf16 matmuls too) and of a generator segment carries
  ``model.matmul_precision``. The tests' global default is "highest"
  (conftest), so a matmul the setting missed would show HIGHEST."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cell=cell,
                      compute_dtype=compute_dtype,
                      matmul_precision=precision)
  loss, params = _tiny_loss(cfg)
  grad_text = jax.jit(jax.grad(loss)).trace(
      params, S((2, 48), jnp.int32)).lower().as_text()
  segment, args = _segment_program(
      dataclasses.replace(cfg, cond_dim=2), 2, sampling.SamplingOptions())
  segment_text = jax.jit(segment).trace(*args).lower().as_text()
  want = {"highest": "HIGHEST", "high": "HIGH", "default": "DEFAULT"}
  for text in (grad_text, segment_text):
    counts = _dot_precisions(text)
    assert sum(counts.values()) > 10
    assert set(counts) == {want[precision]}, counts


def _kernel_dot_precisions(jaxpr, in_kernel=False):
  """The precision of every dot_general inside a pallas_call of a jaxpr."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general" and in_kernel:
      yield eqn.params["precision"]
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple) else (value,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _kernel_dot_precisions(
              sub, in_kernel or eqn.primitive.name == "pallas_call")


@pytest.mark.parametrize("precision", ["highest", "default"])
def test_pallas_kernels_trace_their_matmuls_in_the_model_precision(precision):
  """Inside the Pallas kernels too (the recurrence in training, the head in
  generation); Triton reads DEFAULT and HIGH as TF32, HIGHEST as float32."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=2,
                      gru_backend="pallas", matmul_precision=precision)
  loss, params = _tiny_loss(dataclasses.replace(cfg, cond_dim=0))
  segment, args = _segment_program(cfg, 2,
                                   sampling.SamplingOptions(backend="pallas"))
  level = getattr(jax.lax.Precision, precision.upper())
  for jaxpr in (jax.make_jaxpr(jax.grad(loss))(params, S((2, 48), jnp.int32)),
                jax.make_jaxpr(segment)(*args)):
    found = list(_kernel_dot_precisions(jaxpr.jaxpr))
    assert found and set(found) == {(level, level)}


def test_matmul_precision_changes_nothing_on_the_cpu():
  """On the CPU every setting computes the same, bit for bit: a GRU layer's
  outputs and gradients (its matmuls, the fused backward's) and a bf16
  matmul's. So the default ("highest") keeps the CPU's numerics of before
  the setting existed."""
  from csrnn_jax import numerics
  args = gru_inputs()
  x, w = args[0], args[2]
  results = []
  for precision in ("highest", "default"):
    with numerics.matmul_precision_scope(precision):
      results.append(jax.jit(jax.value_and_grad(
          lambda *a: gru_loss("fused", *a), argnums=range(6)))(*args))
      results.append(jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(
          numerics.dense(x, w, "bfloat16"))), argnums=(0, 1)))(x, w))
  for a, b in zip(*map(jax.tree_util.tree_leaves, (results[:2], results[2:]))):
    np.testing.assert_array_equal(a, b)


def test_unknown_matmul_precision_names_allowed_values():
  with pytest.raises(ValueError, match="highest, high, default"):
    M.ModelConfig(matmul_precision="tf32")
