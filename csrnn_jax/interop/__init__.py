"""Interoperability with other implementations (the original PyTorch code)."""
