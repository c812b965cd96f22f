"""The paper's instrument experiment: Conditional SampleRNN conditioned on
piano or violin, with the paper's hyperparameters (those of
configs/ambient.py): 3 tiers, frame sizes (16, 16, 64), 1 GRU layer of 1024,
16 kHz, Q = 256, batch 128, TBPTT windows of 1024 samples, Adam lr 1e-3 after
element-wise clipping.

Data: solo recordings, one sub-folder per instrument (hours of each, e.g.
piano and violin sonatas or études):
    ~/audio/instruments/piano/*.flac  ~/audio/instruments/violin/*.flac
Prepare into 8 s chunks (the paper's), split by file, equal time per class:
    csrnn-prepare ~/audio/instruments data/piano_violin --balance
The bundled data/demo (about 2.5 minutes per instrument) has the same two
classes and works for a smoke test, but it is far too small for this model:
train configs/demo.py on it instead.
Run:
    python train.py --config configs/piano_violin.py --workdir runs/piano_violin
Hardware: one GPU (the paper: 24-30 h on one Tesla P100); far too slow for a
CPU.
Expected: audio in which the instrument is recognisable though not
state-of-the-art (the paper's words); the paper reports no NLL.
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.paper_config("piano_violin")
  config.model.cond_dim = 2
  config.data.class_names = ("piano", "violin")
  return config
