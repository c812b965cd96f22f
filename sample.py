"""Generate audio from a trained run: python sample.py --workdir RUN --cond happy"""
import sys

from csrnn_jax.sample_cli import main

if __name__ == "__main__":
  sys.exit(main())
