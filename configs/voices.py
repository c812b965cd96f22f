"""The paper's speaker-identity experiment: Conditional SampleRNN conditioned
on who speaks, with the paper's hyperparameters (those of configs/ambient.py):
3 tiers, frame sizes (16, 16, 64), 1 GRU layer of 1024, 16 kHz, Q = 256,
batch 128, TBPTT windows of 1024 samples, Adam lr 1e-3 after element-wise
clipping. The paper trained it for about one epoch.

Data: speech, one sub-folder per speaker (the folder name is the class; any
number of speakers: model.cond_dim comes from the dataset), for example a
handful of speakers of a read-speech corpus such as VCTK:
    ~/audio/voices/p225/*.wav  ~/audio/voices/p226/*.wav  ...
Prepare into 8 s chunks (the paper's), split by file, equal time per speaker,
each file scaled to the same peak (read speech is recorded at many levels):
    csrnn-prepare ~/audio/voices data/voices --balance --peak-normalize
Run:
    python train.py --config configs/voices.py --workdir runs/voices
Hardware: one GPU (the paper: 24-30 h on one Tesla P100); far too slow for a
CPU (use configs/cpu.py there).
Expected: voices that mumble (there is no conditioning on phonemes) but that a
listener tells apart by speaker; the paper reports no NLL.
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.paper_config("voices")
  config.model.cond_dim = -1  # one per speaker folder, from the dataset.
  config.train.num_steps = 100_000
  return config
