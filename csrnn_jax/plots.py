"""PNG plots: loss curves of one or more runs, spectrograms of a batch,
the class probabilities of morphs over time."""
from __future__ import annotations

import numpy as np


def _pyplot():
  """pyplot on the Agg backend, imported at the first plot: what draws none
  (the train step, the generator; bench/device_check.sh on a machine with
  only JAX's packages) imports this module without matplotlib."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def loss_curves(runs: dict[str, list[dict]], png_path: str) -> None:
  """Train and valid bits/sample over steps; ``runs`` maps a label to its
  metrics.jsonl records."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for label, records in runs.items():
    for kind, style in (("train", "-"), ("valid", "o-")):
      points = [(r["step"], r["bits"]) for r in records if r["kind"] == kind]
      if points:
        steps, bits = zip(*points)
        ax.plot(steps, bits, style, label=f"{label} {kind}", markersize=3)
  ax.set_xlabel("step (Adam updates)")
  ax.set_ylabel("bits per sample")
  ax.grid(alpha=0.3)
  if ax.lines:  # a run without metrics (an imported model) has no curve
    ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)


def spectrograms(clips: list[np.ndarray], titles: list[str], sample_rate: int,
                 png_path: str) -> None:
  """One log-magnitude spectrogram per clip, stacked vertically."""
  plt = _pyplot()
  fig, axes = plt.subplots(len(clips), 1, figsize=(8, 1.8 * len(clips) + 0.5),
                           squeeze=False)
  for ax, clip, title in zip(axes[:, 0], clips, titles):
    with np.errstate(divide="ignore"):  # digital silence: -inf dB bins
      ax.specgram(clip, NFFT=512, Fs=sample_rate, noverlap=384, cmap="magma")
    ax.set_title(title, fontsize="small")
    ax.set_ylabel("Hz")
  axes[-1, 0].set_xlabel("seconds")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)


def class_probabilities(curves, class_names, png_path: str) -> None:
  """One panel per clip: each class's probability per segment over time.
  curves: (title, probs_NxC, seconds per segment, keyframe times)."""
  plt = _pyplot()
  fig, axes = plt.subplots(len(curves), 1, squeeze=False,
                           figsize=(8, 1.8 * len(curves) + 0.5))
  for ax, (title, probs_NxC, seconds, keyframes) in zip(axes[:, 0], curves):
    t_N = (np.arange(len(probs_NxC)) + 0.5) * seconds
    for k, name in enumerate(class_names):
      ax.plot(t_N, probs_NxC[:, k], label=name)
    for t in keyframes:
      ax.axvline(t, color="grey", linestyle=":")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize="small")
    ax.set_ylabel("p(class)")
  axes[0, 0].legend(fontsize="small", loc="upper right")
  axes[-1, 0].set_xlabel("seconds")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
