"""How the model multiplies matrices: operand dtype (``model.compute_dtype``)
and float32 precision (``model.matmul_precision``).

``compute_dtype``:

- ``float32``: the reference; every matmul in float32.
- ``bfloat16``: mixed precision. Each matmul of the frame tiers and the
  sample-level MLP (forward and backward) reads bfloat16 operands and
  accumulates and returns float32; parameters, optimizer state, activations
  and everything elementwise stay float32. On CPUs with AVX-512 BF16 (and on
  GPUs and TPUs) such a matmul runs about twice as fast. Rounding an operand
  to bfloat16 changes it by at most 2^-9 relatively (8 bits of mantissa,
  round to nearest), so a product changes by at most about 2^-8 relatively
  and a dot product by 2^-8 times the sum of its terms' magnitudes: the
  bound ``tests/test_numerics.py`` checks.

``matmul_precision`` (JAX's matmul precision, applied by the model to every
matmul it traces, ``matmul_precision_scope``):

- ``highest`` (the default): float32 products in full float32, as the
  PyTorch reference computes them (its TF32 switch is off by default). On
  the CPU every setting computes the same, bit for bit
  (``tests/test_gpu_lowering.py``), so this is what the CPU always did.
- ``high`` / ``default``: what the platform makes faster. NVIDIA GPUs since
  Ampere (XLA and Triton alike) read float32 operands as TF32, 10 bits of
  mantissa: a product moves by up to about 2^-10 relatively instead of
  2^-23; TPUs make 3 (``high``) or 1 (``default``) bfloat16 passes. The
  tests' parity tolerances are argued for float32 products: they hold for
  ``highest``.

A ``custom_vjp`` backward is traced after its forward, outside the scope the
forward ran in: those of this package take the precision their forward saw
(``ambient_precision``) as a static argument and trace under it again.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")
MATMUL_PRECISIONS = ("highest", "high", "default")


def check_compute_dtype(name: str) -> None:
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"model.compute_dtype={name!r} is unknown; allowed "
                     f"values: {', '.join(COMPUTE_DTYPES)}")


def check_matmul_precision(name: str) -> None:
  if name not in MATMUL_PRECISIONS:
    raise ValueError(f"model.matmul_precision={name!r} is unknown; allowed "
                     f"values: {', '.join(MATMUL_PRECISIONS)}")


def matmul_precision_scope(name: str | None):
  """Context in which every matmul traced carries precision ``name`` (None:
  JAX's default, unset)."""
  return jax.default_matmul_precision(name)


def ambient_precision() -> str | None:
  """The matmul precision that matmuls traced here get (None: unset)."""
  return jax.config.jax_default_matmul_precision


def operand_dtype(compute_dtype: str):
  """The dtype a matmul's operands are rounded to."""
  return jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32


def matmul(x, w, compute_dtype: str = "float32"):
  """``x @ w`` with operands in ``compute_dtype``, float32 result; no VJP of
  its own (Pallas kernels, which are not differentiated, and ``dense``)."""
  if compute_dtype == "float32":
    return x @ w
  return jnp.matmul(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_bf16(x, w, precision):
  del precision  # the backward's
  return matmul(x, w, "bfloat16")


def _dense_bf16_fwd(x, w, precision):
  return matmul(x, w, "bfloat16"), (x, w)


def _dense_bf16_bwd(precision, saved, g):
  """Both gradient matmuls with bfloat16 operands too (autodiff would run
  them in float32: the cotangent arrives as float32)."""
  x, w = saved
  with matmul_precision_scope(precision):
    dx = matmul(g, jnp.swapaxes(w, -1, -2), "bfloat16")
    x_2d = x.reshape(-1, x.shape[-1])
    dw = matmul(x_2d.T, g.reshape(-1, g.shape[-1]), "bfloat16")
  return dx, dw


_dense_bf16.defvjp(_dense_bf16_fwd, _dense_bf16_bwd)


def dense(x, w, compute_dtype: str = "float32"):
  """``x @ w`` for x (..., K) and a matrix w (K, N), in ``compute_dtype``,
  returned as float32."""
  if compute_dtype == "float32":
    return x @ w
  return _dense_bf16(x, w, ambient_precision())
