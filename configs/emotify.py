"""The paper's Emotify experiment: Conditional SampleRNN conditioned on a
13-long vector per song (4 genres one-hot, then 9 emotion scores in 0..3),
with the paper's hyperparameters (those of configs/ambient.py): 3 tiers,
frame sizes (16, 16, 64), 1 GRU layer of 1024, 16 kHz, Q = 256, batch 128,
TBPTT windows of 1024 samples, Adam lr 1e-3 after element-wise clipping.

Data: the Emotify dataset (Aljanaki, Wiering and Veltkamp, 2016): 400
one-minute songs, 100 each of pop, rock, classical and electronic, rated by
listeners on the 9 GEMS emotions. Average each song's ratings over its
listeners and scale them to 0..3 (3: felt strongly, 0: not felt), as the paper
did, and write one row per song (paths relative to the CSV's folder):
    path,pop,rock,classical,electronic,amazement,solemnity,tenderness,nostalgia,calmness,power,joyful_activation,tension,sadness
    classical/1.mp3,0,0,1,0,1.2,0.9,0.6,0.3,1.5,0,0.3,0,0.6
Prepare into 8 s chunks (the paper's); vector labels are one group, split
80/10/10 by song:
    csrnn-prepare ~/audio/emotify data/emotify --labels ~/audio/emotify/labels.csv
Run:
    python train.py --config configs/emotify.py --workdir runs/emotify
Hardware: one GPU (the paper: 24-30 h on one Tesla P100); far too slow for a
CPU.
Expected: the paper's model generated only noise here (too many genres and
emotions for 400 minutes of audio); the paper reports no NLL.
"""
from csrnn_jax import configlib

GENRES = ("pop", "rock", "classical", "electronic")
EMOTIONS = ("amazement", "solemnity", "tenderness", "nostalgia", "calmness",
            "power", "joyful_activation", "tension", "sadness")


def get_config():
  config = configlib.paper_config("emotify")
  config.model.cond_dim = len(GENRES) + len(EMOTIONS)
  config.data.cond_names = GENRES + EMOTIONS
  return config
