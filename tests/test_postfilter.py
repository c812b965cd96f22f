"""The output post-filter: it takes added noise out down to the
quantisation floor and no further, streams exactly, and sample.py writes
what it gives."""
import json

import numpy as np
import pytest
import soundfile as sf

from csrnn_jax import audio
from csrnn_jax import audio_eval
from csrnn_jax import postfilter
from csrnn_jax import rundir
from csrnn_jax.cli import sample as sample_cli

SR = 16000


def harmonic(seconds=2.0, f0=220.0):
  """Five harmonics, faded in and out over 20 ms (an abrupt start is a
  click, which is not what these tests are about)."""
  t_T = np.arange(int(seconds * SR)) / SR
  fade_T = np.minimum(1.0, np.minimum(t_T, t_T[::-1]) / 0.02)
  return 0.3 * fade_T * sum(np.sin(2 * np.pi * f0 * k * t_T) / k
                            for k in range(1, 6))


def rms(x_T):
  return float(np.sqrt(np.mean(np.square(x_T))))


@pytest.mark.parametrize("preemphasis", [0.0, 0.85])
def test_sampling_noise_is_taken_out_and_the_tone_kept(preemphasis):
  """Drawn levels a few steps off, as the model's are: white noise of 2.5
  levels' rms in the pre-emphasised domain. The filter must take out at
  least 40 % of that noise's power (with pre-emphasis most of it sits at low
  frequencies, beside the harmonics, where it stays), bring the flatness
  down by 5x, and keep the harmonics' energy within 5 % (their bins hold
  1e4 times the noise's power, so subtracting 2x the noise leaves them
  alone)."""
  x_T = harmonic()
  q_T = audio.encode(x_T, 256, "linear", preemphasis)
  rng = np.random.default_rng(0)
  drawn_T = np.clip(q_T + np.round(rng.normal(0, 2.5, q_T.shape)), 0, 255)
  noisy_T = audio.decode(drawn_T.astype(np.int32), 256, "linear",
                         preemphasis)
  clean_T = postfilter.denoise(noisy_T, SR, 2.0, preemphasis=preemphasis)
  assert clean_T.shape == x_T.shape and clean_T.dtype == np.float32
  assert rms(clean_T - x_T) ** 2 < 0.6 * rms(noisy_T - x_T) ** 2
  assert (audio_eval.clip_flatness(clean_T, SR)
          < audio_eval.clip_flatness(noisy_T, SR) / 5)
  assert abs(rms(clean_T) / rms(x_T) - 1) < 0.05


@pytest.mark.parametrize("quantization", ["linear", "mu-law"])
def test_quantisation_noise_alone_is_kept(quantization):
  """A clip quantised in the run's scheme has nothing above its floor to
  take out. Per bin the filter keeps at least min(P, floor), the floor being
  the noise's mean power: it trims the noise's upward fluctuations (for
  exponentially distributed bin powers, cutting each to the mean moves 0.10
  of the noise's rms; the subtraction of 2x the median cuts the largest a
  little further). So it moves the clip by under a quarter of the
  quantisation error, and leaves the clip at least 0.8 of that error away
  from the unquantised signal: it does not pretend to undo quantisation."""
  x_T = harmonic()
  q_T = audio.decode(audio.encode(x_T, 256, quantization, 0.85), 256,
                     quantization, 0.85)
  out_T = postfilter.denoise(q_T, SR, 2.0, quantization=quantization,
                             preemphasis=0.85)
  assert rms(out_T - q_T) < 0.25 * rms(q_T - x_T)
  assert rms(out_T - x_T) > 0.8 * rms(q_T - x_T)


def test_streaming_pieces_give_the_whole_clips_audio():
  rng = np.random.default_rng(1)
  x_BxT = np.stack([harmonic(0.5), harmonic(0.5, 330.0)])
  x_BxT = x_BxT + 0.01 * rng.standard_normal(x_BxT.shape)
  f = postfilter.PostFilter(2, SR, 3.0, preemphasis=0.85)
  cuts = [0, 1, 100, 5000, 5001, x_BxT.shape[1]]
  y_BxT = np.concatenate([f.push(x_BxT[:, a:b]) for a, b in zip(cuts, cuts[1:])]
                         + [f.flush()], axis=1)
  assert y_BxT.shape == x_BxT.shape
  for x_T, y_T in zip(x_BxT, y_BxT):
    np.testing.assert_array_equal(
        y_T, postfilter.denoise(x_T, SR, 3.0, preemphasis=0.85))


def test_strength_must_be_positive():
  for bad in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="must be > 0"):
      postfilter.PostFilter(1, SR, bad)


def test_sample_cli_writes_the_filtered_audio(trained_run, tmp_path):
  """``--denoise`` writes the post-filter of the audio that the same seed
  gives without it (the guard and the draws see the audio as drawn). Both
  files are 16-bit: the reference filters the rounded raw file, so the two
  differ by that rounding (half a step) passed through the filter's gains
  (at most 1) plus the output's own rounding: at most 1 step, a few
  samples 2 where a gain's threshold sits between the two inputs."""
  args = [f"--workdir={trained_run}", "--cond", "bells", "--seconds", "0.3",
          "--segment-seconds", "0.05"]
  assert sample_cli.main(args + ["--out", str(tmp_path / "raw")]) == 0
  assert sample_cli.main(args + ["--denoise", "2",
                                 "--out", str(tmp_path / "dn")]) == 0
  raw_path, = (tmp_path / "raw").glob("*.wav")
  dn_path, = (tmp_path / "dn").glob("*.wav")
  assert dn_path.name == raw_path.name.replace(".wav", "_dn2.wav")
  assert json.loads(dn_path.with_suffix(".json").read_text())["denoise"] == 2
  m = rundir.read_config(str(trained_run)).model
  raw_T, _ = sf.read(raw_path, dtype="float32")
  dn_T, _ = sf.read(dn_path, dtype="int16")
  want_T = np.round(postfilter.denoise(
      raw_T, SR, 2.0, m.q_levels, m.quantization, m.preemphasis) * 32768)
  steps_T = np.abs(dn_T.astype(np.int64) - want_T)
  assert len(dn_T) == len(raw_T) and not np.array_equal(dn_T, np.round(
      raw_T * 32768))
  assert steps_T.max() <= 2 and np.mean(steps_T > 1) < 0.01
