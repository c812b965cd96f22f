"""What a training run prints on stdout: on a terminal, a progress bar with
one line per event (validation, checkpoint, samples, signals) above it;
elsewhere (SLURM, CI logs, a pipe), the events and one progress line every
``PROGRESS_SECONDS`` instead of a bar's carriage-return updates."""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

PROGRESS_SECONDS = 30.0


class Progress:
  """Training progress towards ``total`` steps; ``enabled=False`` (the
  processes other than the first) prints nothing."""

  def __init__(self, total: int, initial: int, enabled: bool = True,
               stream=None, interval: float = PROGRESS_SECONDS):
    self.stream = stream or sys.stdout
    self.total, self.step, self.enabled = total, initial, enabled
    self.interval, self.started = interval, time.monotonic()
    self.last_line = None  # when the last progress line went out
    tty = enabled and self.stream.isatty()
    self.bar = tqdm(total=total, initial=min(initial, total), unit="step",
                    file=self.stream, dynamic_ncols=True) if tty else None

  def update(self, step: int, bits: float, samples_per_sec: float) -> None:
    """The run reached ``step`` with this training loss and speed."""
    if self.bar is not None:
      self.bar.update(min(step, self.total) - min(self.step, self.total))
      self.bar.set_postfix(bits=f"{bits:.3f}", sps=f"{samples_per_sec:.0f}")
    elif self.enabled:
      now = time.monotonic()
      if (self.last_line is None or now - self.last_line >= self.interval
          or step >= self.total):
        self.last_line = now
        self.note(f"step {step}/{self.total} "
                  f"({100 * min(step, self.total) / self.total:.0f}%): "
                  f"{bits:.3f} bits/sample, {samples_per_sec:.0f} samples/s, "
                  f"{(now - self.started) / 60:.1f} min")
    self.step = step

  def note(self, text: str) -> None:
    """One line, above the bar if there is one."""
    if self.bar is not None:
      self.bar.write(text, file=self.stream)
    elif self.enabled:
      print(text, file=self.stream, flush=True)

  def note_now(self, text: str) -> None:
    """``note`` straight to the stream's file descriptor, bypassing Python's
    buffers: safe inside a signal handler, which may interrupt a write."""
    if not self.enabled:
      return
    try:
      fd = self.stream.fileno()
    except (OSError, ValueError):  # not a file (a test's capture)
      fd = sys.__stdout__.fileno()
    prefix = "\n" if self.bar is not None else ""  # below the bar's line
    os.write(fd, (prefix + text + "\n").encode())

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
