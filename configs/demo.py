"""The laptop demo: piano vs violin on the bundled data/demo, sized for a
2-core CPU. 3 tiers, frame sizes (8, 8, 32), dim 128 (780,672 parameters),
batch 16 chunks of 2 s, TBPTT windows of 512 samples (62 Adam steps per chunk
batch), lr 3e-3 with warmup and cosine decay, 3100 steps (about 8 passes over
the 3.1 minutes of training audio).

Data: data/demo (2.5 minutes per instrument, made by
scripts/make_demo_data.py), prepared into 2 s chunks with equal time per
class:
    csrnn-prepare data/demo data/demo_prepared --chunk-seconds 2 --balance
Run:
    python train.py --config configs/demo.py --workdir runs/demo
Hardware and time (measured): 2 CPU cores, jax 0.10.2. On an otherwise idle
machine a chunk batch takes 6.1 s (83k samples/s), so the 50 batches take
about 5 minutes, 5.5 with start-up, compilation (8 s) and the 5 evaluations.
A full run with other jobs sharing the 2 cores took 17 minutes (19 s a batch).
Expected (measured): valid 3.63 bits/sample (piano 3.56, violin 3.70), train
3.2-3.5; valid is 4.03 after 620 steps and 3.71 after 1860. The model uses the
class: the same valid chunks scored with the other instrument's label give
4.71 bits/sample (with [0.5, 0.5]: 3.97).
"""
from csrnn_jax import configlib


def get_config():
  config = configlib.base_config()
  config.name = "demo"
  config.model.frame_sizes = (8, 8, 32)
  config.model.dim = 128
  config.model.cond_dim = 2
  config.data.dataset_dir = "data/demo_prepared"
  config.data.class_names = ("piano", "violin")
  config.train.batch_size = 16
  config.train.seq_len = 512
  config.train.learning_rate = 3e-3
  config.train.lr_schedule = "cosine"
  config.train.warmup_steps = 62
  config.train.num_steps = 3100  # 50 chunk batches: 8.4 passes over train.
  config.train.eval_every = 620
  config.train.eval_batch_size = 18  # the whole valid split in one batch.
  config.train.checkpoint_every = 310
  config.train.keep_checkpoints = 2
  config.train.sample_every = 0
  config.train.tensorboard = False
  return config
