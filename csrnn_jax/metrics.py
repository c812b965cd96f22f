"""Run metrics as JSON lines (``metrics.jsonl``), mirrored to TensorBoard
(``<workdir>/tensorboard``: the scalars, and each set of periodic samples as
audio and its spectrograms as an image) when asked for; without tensorboardX
that is one warning per process, and the JSON lines alone.

Each line is ``{"step": int, "kind": "train" | "valid" | ..., ...numbers}``.
On resume, lines past the restored step are dropped first: a run killed after
logging but before its checkpoint repeats those steps, and the log must not
hold them twice.
"""
from __future__ import annotations

import json
import math
import os
import sys

from csrnn_jax import rundir

LN2 = math.log(2.0)
TENSORBOARD_MISSING = (
    "warning: train.tensorboard is on but tensorboardX is not installed, so "
    "nothing goes to TensorBoard (metrics.jsonl and loss_curve.png are still "
    "written); pip install tensorboardX tensorboard (the package's "
    "'tensorboard' extra), or set --config.train.tensorboard=False")
_warned = []  # TENSORBOARD_MISSING once per process


def read(path: str) -> list[dict]:
  """All records of a metrics.jsonl (a half-written last line is ignored)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


class MetricsWriter:
  """Appends records to ``<workdir>/metrics.jsonl`` (and TensorBoard)."""

  def __init__(self, workdir: str, resume_step: int, tensorboard: bool,
               enabled: bool = True):
    self.path = rundir.metrics_path(workdir)
    self.enabled = enabled
    self.tb = None
    if not enabled:
      return
    kept = [r for r in read(self.path) if r["step"] <= resume_step]
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      except ImportError:
        if not _warned:
          print(TENSORBOARD_MISSING, file=sys.stderr, flush=True)
          _warned.append(True)
        return
      self.tb = SummaryWriter(rundir.tensorboard_dir(workdir))

  def write(self, step: int, kind: str, values: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "kind": kind, **values}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for key, value in values.items():
        if isinstance(value, (int, float)):
          self.tb.add_scalar(f"{kind}/{key}", value, step)
      self.tb.flush()

  def write_samples(self, step: int, wavs: dict[str, str],
                    image_path: str) -> None:
    """A set of samples to TensorBoard: each wav of {tag: path} as audio,
    the PNG (their spectrograms) as an image."""
    if self.tb is None:
      return
    import matplotlib.image  # pylint: disable=import-outside-toplevel
    import soundfile as sf  # pylint: disable=import-outside-toplevel
    for tag, path in wavs.items():
      wave_T, sample_rate = sf.read(path, dtype="float32")
      self.tb.add_audio(tag, wave_T, step, sample_rate=sample_rate)
    image = matplotlib.image.imread(image_path)
    self.tb.add_image("samples/spectrograms", image, step,
                      dataformats="HWC")
    self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
