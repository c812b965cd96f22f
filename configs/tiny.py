"""A CPU-sized model for tests and quick checks: 3 tiers, frame sizes
(4, 4, 16), dim 32. Trains a few dozen steps in seconds on 2 CPU cores.

Run (on a dataset written by csrnn-prepare):
    python train.py --config configs/tiny.py --config.data.dataset_dir DATA \
        --workdir runs/tiny
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.base_config()
  config.name = "tiny"
  config.model.frame_sizes = (4, 4, 16)
  config.model.dim = 32
  config.train.batch_size = 4
  config.train.seq_len = 256
  config.train.learning_rate = 3e-3
  config.train.num_steps = 48
  config.train.eval_every = 24
  config.train.eval_batch_size = 8
  config.train.checkpoint_every = 24
  config.train.tensorboard = False
  return config
