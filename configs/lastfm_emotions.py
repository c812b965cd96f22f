"""The paper's last.fm experiment: Conditional SampleRNN conditioned on one of
four emotion tags (angry, happy, relax, sad), with the paper's
hyperparameters (those of configs/ambient.py): 3 tiers, frame sizes
(16, 16, 64), 1 GRU layer of 1024, 16 kHz, Q = 256, batch 128, TBPTT windows
of 1024 samples, Adam lr 1e-3 after element-wise clipping.

Data: the tracks of "Evaluation of musical features for emotion
classification" (Song, Dixon and Pearce, ISMIR 2012): the most popular last.fm
tracks tagged angry, happy, relax and sad, one sub-folder per tag:
    ~/audio/lastfm/angry/*.mp3  .../happy  .../relax  .../sad
Prepare into 8 s chunks (the paper's), split by track, equal time per tag:
    csrnn-prepare ~/audio/lastfm data/lastfm_emotions --balance
Run:
    python train.py --config configs/lastfm_emotions.py \
        --workdir runs/lastfm_emotions
Hardware: one GPU (the paper: 24-30 h on one Tesla P100); far too slow for a
CPU.
Expected: not noise, but a "mean" of many genres and instruments rather than
a recognisable emotion (the paper's finding); the paper reports no NLL.
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.paper_config("lastfm_emotions")
  config.model.cond_dim = 4
  config.data.class_names = ("angry", "happy", "relax", "sad")
  return config
