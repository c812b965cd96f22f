"""csrnn_jax: Conditional SampleRNN in JAX/Flax (see DESIGN and README)."""

__version__ = "0.1.0"
