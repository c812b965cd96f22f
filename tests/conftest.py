"""Test-wide JAX settings: 4 fake CPU devices (for the sharding tests) and
strict checks that turn silent mistakes into errors."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_debug_nans", False)
jax.config.update("jax_default_matmul_precision", "highest")

from audio_fixtures import tiny_dataset  # noqa: E402,F401  (session fixture)
