"""The paper's ambient model: 3 tiers, frame sizes (16, 16, 64), 1 GRU layer of
1024, 4 classes (happy, sad, space, creepy), 16 kHz, Q = 256, batch 128,
TBPTT windows of 1024 samples, Adam lr 1e-3 after element-wise clipping.

Data: a folder with one sub-folder per class of ambient music, prepared with
    csrnn-prepare ~/audio/ambient data/ambient --balance
Run:
    python train.py --config configs/ambient.py --workdir runs/ambient
Hardware: one GPU (the paper trained 24-30 h on one GPU); on a 2-core CPU this
model is far too slow to train (use configs/demo.py there).
Expected: valid NLL around 2 bits/sample after a day (the paper does not
report NLL; this figure is what SampleRNN models of this size reach on music).
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.base_config()
  config.name = "ambient"
  config.model.frame_sizes = (16, 16, 64)
  config.model.dim = 1024
  config.model.n_rnn = 1
  config.model.q_levels = 256
  config.model.cond_dim = 4
  config.data.dataset_dir = "data/ambient"
  config.data.class_names = ("happy", "sad", "space", "creepy")
  config.train.batch_size = 128
  config.train.seq_len = 1024
  config.train.learning_rate = 1e-3
  config.train.num_steps = 250_000
  config.train.eval_every = 2_500
  config.train.checkpoint_every = 1_000
  config.train.sample_every = 10_000
  return config
