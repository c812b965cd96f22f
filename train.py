"""Train a Conditional SampleRNN: python train.py --config configs/ambient.py"""
from csrnn_jax.train_cli import main

if __name__ == "__main__":
  main()
