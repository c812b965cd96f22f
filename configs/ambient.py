"""The paper's ambient model: 3 tiers, frame sizes (16, 16, 64), 1 GRU layer of
1024, 4 classes (happy, sad, space, creepy), 16 kHz, Q = 256, batch 128,
TBPTT windows of 1024 samples, Adam lr 1e-3 after element-wise clipping.

Data: a folder with one sub-folder per class of ambient music, prepared with
    csrnn-prepare ~/audio/ambient data/ambient --balance
Run:
    python train.py --config configs/ambient.py --workdir runs/ambient
Hardware: one GPU (the paper trained 24-30 h on one GPU); on a 2-core CPU this
model is far too slow to train (use configs/cpu.py there).
Expected: not yet measured with this code (no GPU run so far); the paper
reports no NLL, only listening (samples at its step 60k-ish checkpoints).
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.paper_config("ambient")
  config.model.cond_dim = 4
  config.data.class_names = ("happy", "sad", "space", "creepy")
  return config
