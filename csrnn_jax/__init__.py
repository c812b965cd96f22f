"""csrnn_jax: Conditional SampleRNN in JAX/Flax (README.md, docs/design.md)."""

__version__ = "0.1.0"
