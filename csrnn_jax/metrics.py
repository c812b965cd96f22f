"""Run metrics as JSON lines (``metrics.jsonl``), mirrored to TensorBoard
when tensorboardX is installed and asked for.

Each line is ``{"step": int, "kind": "train" | "valid" | ..., ...numbers}``.
On resume, lines past the restored step are dropped first: a run killed after
logging but before its checkpoint repeats those steps, and the log must not
hold them twice.
"""
from __future__ import annotations

import json
import math
import os

LN2 = math.log(2.0)


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
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self.tb = None
    if not enabled:
      return
    kept = [r for r in read(self.path) if r["step"] <= resume_step]
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError:
        return
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

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

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
