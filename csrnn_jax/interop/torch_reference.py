"""A small PyTorch Conditional SampleRNN with the original state-dict layout
(needs torch).

The counterpart that the parity tests import random weights from and compare
log-probabilities with, and the PyTorch side of ``bench/run.py``; written
from the original code's layout (a fork of samplernn-pytorch). Layout and
semantics:

- ``frame_sizes`` are upsampling ratios, bottom first: ``[16, 4]`` is frame
  tiers of 16 and 64 samples and an MLP window of 16 (csrnn_jax's
  (16, 16, 64)). Frame tier i reads ``prod(frame_sizes[:i + 1])`` samples.
- ``Predictor(SampleRNN(...))`` owns the model as ``self.model``, so its state
  dict keys start with ``model.`` as the original checkpoints' do; weight norm
  is ``torch.nn.utils.weight_norm`` (keys ``weight_g``/``weight_v``, dim 0).
- The class one-hot (B, C) is concatenated after each frame's samples before
  ``input_expand``; frame inputs are ``2 * (x / (Q/2) - 1)``.
- ``Predictor.forward`` takes a TBPTT window without its last sample (the
  original's ``input_sequences = sequences[:, :-1]``) and a reset flag; hidden
  states are carried (detached) between calls.
- ``generate_log_probs`` steps the model one sample at a time the way the
  original ``Generator`` does, but teacher-forced on a given sequence.
"""
import warnings

import numpy as np
import torch
from torch.nn import functional as F


def _weight_norm(module, enabled):
  """torch.nn.utils.weight_norm as the original used it (dim 0); its
  deprecation warning is silenced: the parametrizations API renames the keys."""
  if not enabled:
    return module
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    return torch.nn.utils.weight_norm(module)


def frame_input(x, q_levels, dtype):
  """2 * linear_dequantize(x): int levels -> [-2, 2) in ``dtype``."""
  return (2 * (x.double() / (q_levels / 2) - 1)).to(dtype)


class LearnedUpsampling1d(torch.nn.Module):
  """ConvTranspose1d(kernel = stride = r, no bias) plus a (dim, r) bias."""

  def __init__(self, in_channels, out_channels, kernel_size):
    super().__init__()
    self.conv_t = torch.nn.ConvTranspose1d(
        in_channels, out_channels, kernel_size, stride=kernel_size,
        bias=False)
    self.bias = torch.nn.Parameter(torch.zeros(out_channels, kernel_size))

  def forward(self, x_BxDxT):
    b, _, t = x_BxDxT.shape
    bias_BxDxTR = self.bias[None, :, None, :].expand(
        b, -1, t, -1).reshape(b, self.bias.shape[0], -1)
    return self.conv_t(x_BxDxT) + bias_BxDxTR


class FrameLevelRNN(torch.nn.Module):
  """One frame tier: input_expand, GRU (batch first), learned upsampling."""

  def __init__(self, frame_size, n_frame_samples, n_rnn, dim, learn_h0,
               weight_norm, nb_classes):
    super().__init__()
    self.frame_size, self.n_frame_samples = frame_size, n_frame_samples
    h0 = torch.zeros(n_rnn, dim)
    if learn_h0:
      self.h0 = torch.nn.Parameter(h0)
    else:
      self.register_buffer("h0", h0)
    self.input_expand = _weight_norm(
        torch.nn.Conv1d(n_frame_samples + nb_classes, dim, 1), weight_norm)
    self.rnn = torch.nn.GRU(dim, dim, n_rnn, batch_first=True)
    self.upsampling = LearnedUpsampling1d(dim, dim, frame_size)
    self.upsampling.conv_t = _weight_norm(self.upsampling.conv_t, weight_norm)

  def forward(self, prev_BxTxL, cond_BxC, upper_BxTxD, hidden_YxBxD):
    """Frames (B, F, n) as floats -> ((B, F * frame_size, dim), hidden)."""
    b, f, _ = prev_BxTxL.shape
    if cond_BxC is not None:
      prev_BxTxL = torch.cat(
          [prev_BxTxL, cond_BxC[:, None, :].expand(b, f, -1)], dim=2)
    x_BxTxD = self.input_expand(prev_BxTxL.permute(0, 2, 1)).permute(0, 2, 1)
    if upper_BxTxD is not None:
      x_BxTxD = x_BxTxD + upper_BxTxD
    if hidden_YxBxD is None:
      hidden_YxBxD = self.h0[:, None, :].expand(-1, b, -1).contiguous()
    out_BxTxD, hidden_YxBxD = self.rnn(x_BxTxD, hidden_YxBxD)
    up = self.upsampling(out_BxTxD.permute(0, 2, 1)).permute(0, 2, 1)
    return up, hidden_YxBxD


class SampleLevelMLP(torch.nn.Module):
  """Embedding(Q, Q), Conv1d(Q -> dim, FS1, no bias) + conditioning, ReLU,
  1x1 conv + ReLU, 1x1 conv to Q, log_softmax."""

  def __init__(self, frame_size, dim, q_levels, weight_norm):
    super().__init__()
    self.q_levels = q_levels
    self.embedding = torch.nn.Embedding(q_levels, q_levels)
    self.input = _weight_norm(
        torch.nn.Conv1d(q_levels, dim, frame_size, bias=False), weight_norm)
    self.hidden = _weight_norm(torch.nn.Conv1d(dim, dim, 1), weight_norm)
    self.output = _weight_norm(torch.nn.Conv1d(dim, q_levels, 1), weight_norm)

  def forward(self, prev_BxW, upper_BxTxD):
    """Int samples (B, FS1 + T - 1) and conditioning (B, T, dim) -> log-probs
    (B, T, Q)."""
    emb_BxQxW = self.embedding(prev_BxW).permute(0, 2, 1)
    x = F.relu(self.input(emb_BxQxW) + upper_BxTxD.permute(0, 2, 1))
    x = F.relu(self.hidden(x))
    return F.log_softmax(self.output(x).permute(0, 2, 1), dim=-1)


class SampleRNN(torch.nn.Module):
  """The model: ``frame_level_rnns`` bottom first, then the sample MLP."""

  def __init__(self, frame_sizes, n_rnn, dim, learn_h0, q_levels, weight_norm,
               nb_classes):
    super().__init__()
    self.q_levels, self.nb_classes = q_levels, nb_classes
    ns_frame_samples = np.cumprod(frame_sizes).tolist()
    self.frame_level_rnns = torch.nn.ModuleList([
        FrameLevelRNN(fs, n, n_rnn, dim, learn_h0, weight_norm, nb_classes)
        for fs, n in zip(frame_sizes, ns_frame_samples)])
    self.sample_level_mlp = SampleLevelMLP(frame_sizes[0], dim, q_levels,
                                           weight_norm)

  @property
  def lookback(self):
    return self.frame_level_rnns[-1].n_frame_samples

  @property
  def dtype(self):
    return self.sample_level_mlp.embedding.weight.dtype


class Predictor(torch.nn.Module):
  """Teacher-forced forward over TBPTT windows, carrying hidden states."""

  def __init__(self, model):
    super().__init__()
    self.model = model
    self.hidden = [None] * len(model.frame_level_rnns)

  def run_rnn(self, index, prev_BxTxL, cond_BxC, upper):
    out, self.hidden[index] = self.model.frame_level_rnns[index](
        prev_BxTxL, cond_BxC, upper, self.hidden[index])
    self.hidden[index] = self.hidden[index].detach()
    return out

  def forward(self, input_BxW, reset, cond_BxC=None):
    """input_BxW: int (B, lookback + T - 1), the window without its last
    sample. Returns log-probs (B, T, Q) for window[:, lookback:]."""
    model = self.model
    if reset:
      self.hidden = [None] * len(model.frame_level_rnns)
    b, w = input_BxW.shape
    t = w + 1 - model.lookback
    upper = None
    for index in reversed(range(len(model.frame_level_rnns))):
      n = model.frame_level_rnns[index].n_frame_samples
      start = model.lookback - n
      prev_BxT = frame_input(input_BxW[:, start:start + t], model.q_levels,
                             model.dtype)
      upper = self.run_rnn(index, prev_BxT.reshape(b, -1, n), cond_BxC, upper)
    fs1 = model.frame_level_rnns[0].frame_size
    return model.sample_level_mlp(input_BxW[:, model.lookback - fs1:], upper)


@torch.no_grad()
def generate_log_probs(predictor, sequences_BxW, cond_BxC=None):
  """Per-sample log-probs (B, W - lookback, Q) of a given sequence, stepped
  the way the original Generator steps: for each sample i >= lookback, every
  tier with i % n_frame_samples == 0 runs one frame (top down) on the previous
  n samples and the upper tier's cached vector ``(i // n) % r_upper``; the MLP
  reads the previous FS1 samples and tier 0's vector ``i % FS1``."""
  return _step(predictor, sequences_BxW, cond_BxC, draw=False)


@torch.no_grad()
def generate_samples(predictor, batch_size, n_samples, cond_BxC=None):
  """The original generator: q_zero silence, then one sample at a time
  drawn from the MLP's distribution (a Python loop per sample). Returns the
  int samples (B, n_samples)."""
  model = predictor.model
  sequences_BxW = torch.full((batch_size, model.lookback + n_samples),
                             model.q_levels // 2, dtype=torch.long)
  _step(predictor, sequences_BxW, cond_BxC, draw=True)
  return sequences_BxW[:, model.lookback:]


def _step(predictor, sequences_BxW, cond_BxC, draw):
  """Steps over sequences_BxW from the lookback on; with ``draw`` each sample
  is drawn and written into the sequence before the next step reads it."""
  model = predictor.model
  predictor.hidden = [None] * len(model.frame_level_rnns)
  tiers = model.frame_level_rnns
  outputs = [None] * len(tiers)
  fs1 = tiers[0].n_frame_samples
  out = []
  for i in range(model.lookback, sequences_BxW.shape[1]):
    for index in reversed(range(len(tiers))):
      n = tiers[index].n_frame_samples
      if i % n:
        continue
      prev_Bx1xL = frame_input(sequences_BxW[:, None, i - n:i],
                               model.q_levels, model.dtype)
      upper = None
      if index < len(tiers) - 1:
        frame_index = (i // n) % tiers[index + 1].frame_size
        upper = outputs[index + 1][:, frame_index:frame_index + 1, :]
      outputs[index] = predictor.run_rnn(index, prev_Bx1xL, cond_BxC, upper)
    upper_Bx1xD = outputs[0][:, i % fs1:i % fs1 + 1, :]
    logp_BxQ = model.sample_level_mlp(sequences_BxW[:, i - fs1:i],
                                      upper_Bx1xD)[:, 0]
    if draw:
      sequences_BxW[:, i] = torch.multinomial(logp_BxQ.exp(), 1)[:, 0]
    out.append(logp_BxQ)
  return torch.stack(out, dim=1)


@torch.no_grad()
def randomize_(module, seed):
  """Every parameter random (h0 too when learned), at scales that keep the
  log-probabilities away from saturation (the zero inits hide bugs)."""
  gen = torch.Generator().manual_seed(seed)
  for name, tensor in module.named_parameters():
    if name.endswith("weight_g"):
      values = 0.5 + torch.rand(tensor.shape, generator=gen)
    elif name.endswith("embedding.weight"):
      values = torch.randn(tensor.shape, generator=gen)
    elif tensor.dim() >= 2 and not name.endswith(("h0", "upsampling.bias")):
      fan_in = tensor[0].numel() if "conv_t" not in name else tensor.shape[0]
      bound = (3.0 / fan_in) ** 0.5
      values = (2 * torch.rand(tensor.shape, generator=gen) - 1) * bound
    else:  # biases, h0
      values = torch.rand(tensor.shape, generator=gen) - 0.5
    tensor.copy_(values)
