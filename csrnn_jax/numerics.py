"""How the model multiplies matrices (``model.compute_dtype``).

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
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute_dtype(name: str) -> None:
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"model.compute_dtype={name!r} is unknown; allowed "
                     f"values: {', '.join(COMPUTE_DTYPES)}")


def _bf16_matmul(x, w):
  return jnp.matmul(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


@jax.custom_vjp
def _dense_bf16(x, w):
  return _bf16_matmul(x, w)


def _dense_bf16_fwd(x, w):
  return _bf16_matmul(x, w), (x, w)


def _dense_bf16_bwd(saved, g):
  """Both gradient matmuls with bfloat16 operands too (autodiff would run
  them in float32: the cotangent arrives as float32)."""
  x, w = saved
  dx = _bf16_matmul(g, jnp.swapaxes(w, -1, -2))
  x_2d = x.reshape(-1, x.shape[-1])
  dw = _bf16_matmul(x_2d.T, g.reshape(-1, g.shape[-1]))
  return dx, dw


_dense_bf16.defvjp(_dense_bf16_fwd, _dense_bf16_bwd)


def dense(x, w, compute_dtype: str = "float32"):
  """``x @ w`` for x (..., K) and a matrix w (K, N), in ``compute_dtype``,
  returned as float32."""
  if compute_dtype == "float32":
    return x @ w
  return _dense_bf16(x, w)
