"""Hot loops behind small interfaces, each with a plain-JAX reference."""
