"""The CPU recipe: the best samples per minute of 2 CPU cores, on any dataset
written by csrnn-prepare (classes and condition size come from its
manifest). Chosen by measurement, not from the paper (docs/results.md).

Run:
    csrnn-prepare SRC DATA --chunk-seconds 2 --balance --trim-db -36
    python train.py --config configs/cpu.py:DATA --workdir runs/cpu
    python sample.py --workdir runs/cpu --num 4      # the recipe's settings
Hardware and time: 2 idle CPU cores train the 6200 steps in about 20
minutes (18.4 to 21.9 with the fourth tier on the machine of
docs/results.md), inside 30; make demo runs 3100 of them. What it
reaches on three datasets, and what each option did: docs/results.md.
``--trim-db -36`` cuts each file's quiet ends: a file that ends in silence
teaches the model a silence that never ends (the demo piano's 30-s
clips: 25 of 48 crashed without it, 6 of 72 with it; docs/results.md).
"""
from csrnn_jax import configlib


def get_config(dataset_dir: str = ""):
  """``dataset_dir``: the prepared dataset (``--config configs/cpu.py:DATA``)."""
  config = configlib.base_config()
  config.name = "cpu"
  config.data.dataset_dir = dataset_dir or "data/demo_prepared"
  # A fourth tier that steps every 256 samples (16 ms) above (8, 8, 32):
  # the piano and marimba strike new notes where the 3-tier model let one
  # decay into silence. 30-s crashes 6 -> 1 of 24 on the held-out
  # instruments (marimba 6 -> 1 of 6), 5 -> 2 and 11 -> 11 of 24 on two
  # demo seeds (the second's piano playing 11 s before it falls silent,
  # not 1.2 s); a higher validation NLL (docs/results.md). The figures of
  # the options below were measured with the three tiers of (8, 8, 32).
  config.model.frame_sizes = (8, 8, 32, 256)
  # dim 256 against 128: 0.1 bits lower validation NLL on the voices and the
  # held-out instruments, less noise on the voices, no 30-s crash on either.
  config.model.dim = 256
  config.train.batch_size = 16
  config.train.seq_len = 512
  config.train.learning_rate = 3e-3
  config.train.lr_schedule = "cosine"
  config.train.warmup_steps = 62
  config.train.num_steps = 6200  # 100 chunk batches
  config.train.eval_every = 1240
  config.train.checkpoint_every = 620
  config.train.keep_checkpoints = 2
  config.train.tensorboard = False
  # Noise shaping: the one option that won on the voices (accuracy 0.33 ->
  # 0.67, noise-robust 0.67 -> 0.89, flatness lower on 2 of 3 voices).
  config.model.preemphasis = 0.85
  # Trains the null condition so that guidance can be used; neutral at s = 1.
  config.train.cond_dropout = 0.2
  # Every other chunk batch starts from the state the model reaches after
  # generating 2 s on its own: the demo's 30-s crashes 24 of 24 -> 11 of 24
  # (violin 12 -> 0), the voices and the held-out instruments as before
  # (accuracy, flatness, Frechet distance); training takes 1.5 to 6.7 min
  # more (the generation: about 7 s per such batch).
  config.train.own_state_share = 0.5
  # sample.py's defaults for runs of this recipe: the crash guard rewinds a
  # row that falls into near-silence (demo: accuracy 0.58 -> 0.92 with it;
  # a row that never crashes is the same audio without it). Guidance 1.5
  # with min-p 0.1 at the steps louder than 3 levels: plain accuracy 1.00 on
  # the voices, the held-out instruments and the demo (0.72, 0.79 and 0.75
  # without them), cleaner on 8 of the 9 classes, the same 30-s crashes.
  config.sample.crash_guard = True
  # A row that falls silent again near where it was rewound to goes back
  # 0.5 s further each time, up to 32 rewinds: on one demo run the 30-s
  # piano crashes 11 -> 5 of 12, cleaner and more periodic piano (a run of
  # another seed still lost 11 of 12); rows that never crash are the same
  # audio. Generation of 30-s clips takes 1.7 to 2 times as
  # long where rows crash (bench/RESULTS_guard.md).
  config.sample.guard_rewinds = 32
  config.sample.guard_backoff = 0.5
  config.sample.guidance = 1.5
  config.sample.min_p = 0.1
  config.sample.truncate_above = 3
  # The output post-filter at strength 3: flatness within 3x of the real
  # clips' on the three voices and on organ and flute (6.7-10.9 and 4.1-9.2
  # as drawn), closer to the real audio by the Frechet distance on 7 of 9
  # classes, accuracy kept (voices with 20 clips per class 0.85 -> 0.95).
  config.sample.denoise = 3.0
  return config
