"""Generate audio from a trained run: python sample.py --workdir RUN --cond happy"""
import sys

from csrnn_jax.cli.sample import main

if __name__ == "__main__":
  sys.exit(main())
