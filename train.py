"""Train a Conditional SampleRNN: python train.py --config configs/ambient.py"""
from csrnn_jax.cli.train import main

if __name__ == "__main__":
  main()
