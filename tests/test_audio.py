"""Quantisation (docs/design.md §2): round trips, mu-law formula, clipping,
and the pre-emphasis (noise shaping) encode/decode pair."""
import numpy as np
import pytest
import scipy.signal

from csrnn_jax import audio


@pytest.mark.parametrize("q", [256, 64])
def test_linear_round_trip_within_one_level(q):
  x = np.linspace(-1, 1, 10001)
  back = audio.dequantize(audio.quantize(x, q, "linear"), q, "linear")
  assert np.abs(back - x).max() <= 2.0 / q + 1e-7
  assert audio.quantize(np.zeros(3), q)[0] == audio.q_zero(q) == q // 2
  assert audio.dequantize(np.array([q // 2]), q)[0] == 0.0


def test_mu_law_matches_formula_and_round_trips():
  q, mu = 256, 255.0
  x = np.linspace(-1, 1, 2001)
  np.testing.assert_allclose(
      audio.mu_law_encode(x, mu),
      np.sign(x) * np.log(1 + mu * np.abs(x)) / np.log(1 + mu))
  levels = audio.quantize(x, q, "mu-law")
  expected = np.clip(np.round((audio.mu_law_encode(x, mu) + 1) * q / 2), 0,
                     q - 1)
  np.testing.assert_array_equal(levels, expected)
  back = audio.dequantize(levels, q, "mu-law")
  # Within one level, measured in the companded domain.
  assert np.abs(audio.mu_law_encode(back, mu)
                - audio.mu_law_encode(x, mu)).max() <= 2.0 / q + 1e-6
  # Mu-law spends more levels near zero than linear does.
  small = np.linspace(-0.01, 0.01, 1000)
  assert (len(np.unique(audio.quantize(small, q, "mu-law")))
          > 4 * len(np.unique(audio.quantize(small, q, "linear"))))


def test_linear_minmax_matches_reference_and_survives_constant_signal():
  x = np.array([-0.5, 0.0, 0.25, 0.5])
  eps = audio.MINMAX_EPSILON
  expected = ((x - x.min()) / (x.max() - x.min()) * (256 - eps)
              + eps / 2).astype(np.int64)
  np.testing.assert_array_equal(audio.quantize(x, 256, "linear-minmax"),
                                expected)
  assert audio.quantize(x, 256, "linear-minmax").max() == 255
  const = audio.quantize(np.full(100, 0.3), 256, "linear-minmax")
  assert const.dtype == np.int32
  np.testing.assert_array_equal(const, 128)


@pytest.mark.parametrize("method", ["linear", "mu-law"])
def test_out_of_range_is_clipped_not_wrapped(method):
  levels = audio.quantize(np.array([-7.0, -1.0, 1.0, 3.5]), 256, method)
  np.testing.assert_array_equal(levels, [0, 0, 255, 255])
  assert levels.dtype == np.int32


def test_unknown_quantization_names_allowed_values():
  with pytest.raises(ValueError, match="linear, mu-law, linear-minmax"):
    audio.quantize(np.zeros(2), 256, "alaw")


def test_preemphasis_off_is_quantize_and_dequantize_bitwise():
  x = np.random.default_rng(0).uniform(-1.2, 1.2, (3, 500)).astype(np.float32)
  for method in audio.QUANTIZATIONS:
    levels = audio.encode(x, 256, method, 0.0)
    np.testing.assert_array_equal(levels, audio.quantize(x, 256, method))
    back = audio.decode(levels, 256, method, 0.0, previous=np.ones(3))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, audio.dequantize(levels, 256, method))


def test_preemphasis_filters_before_quantising():
  a = 0.85
  x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 300))
  e = x - a * np.concatenate([np.zeros((2, 1)), x[:, :-1]], 1)
  for method in ("linear", "mu-law"):
    np.testing.assert_array_equal(audio.encode(x, 256, method, a),
                                  audio.quantize(e, 256, method))
  # Each row starts after silence: its first level is its first sample's.
  np.testing.assert_array_equal(audio.encode(x, 256, "linear", a)[:, 0],
                                audio.quantize(x[:, 0], 256))
  # e beyond [-1, 1] (0.9 - a * -0.9 = 1.665) is clipped, not wrapped.
  alternating = np.array([0.9, -0.9, 0.9, -0.9])
  np.testing.assert_array_equal(audio.encode(alternating, 256, "linear", a),
                                [audio.quantize(0.9, 256), 0, 255, 0])


def pink_ish(length, seed):
  """A test signal with most power at low frequencies (as audio): white
  noise through a one-pole low-pass, scaled into [-0.5, 0.5]."""
  w = np.random.default_rng(seed).normal(size=length)
  x = scipy.signal.lfilter([1.0], [1.0, -0.9], w)
  return 0.5 * x / np.abs(x).max()


@pytest.mark.parametrize("method", ["linear", "mu-law"])
def test_preemphasis_round_trip_error_is_the_shaped_quantisation_error(method):
  a, q = 0.85, 256
  x = pink_ish(20000, seed=2)
  e = x - a * np.concatenate([[0.0], x[:-1]])
  assert np.abs(e).max() < 1.0  # no clipping: the error is quantisation only
  levels = audio.encode(x, q, method, a)
  y = audio.decode(levels, q, method, a)
  # y - x is the quantisation error of e, delta = e_hat - e, through the
  # inverse filter (both are linear recursions from silence).
  delta = audio.dequantize(levels, q, method).astype(np.float64) - e
  shaped = scipy.signal.lfilter([1.0], [1.0, -a], delta)
  # float32: the decoded levels and the filter state round at 6e-8 relative
  # per step; the filter sums them with gain 1/(1-a) < 7: far below 1e-5.
  np.testing.assert_allclose(y - x, shaped, atol=1e-5)
  if method == "linear":
    # |delta| <= half a level = 1/Q, so |y - x| <= (1/Q) / (1 - a).
    assert np.abs(y - x).max() <= (1 / q) / (1 - a) + 1e-5
  # Shaped, not white: the error's power near DC is far above its power near
  # Nyquist (1/|1 - a e^{-iw}|^2: 152x for a = 0.85; white would be 1x).
  f, power = scipy.signal.welch(y - x, nperseg=256)
  assert power[f < 0.05].mean() > 20 * power[f > 0.45].mean()


def test_decode_in_segments_equals_one_pass_bitwise():
  a = 0.9
  levels = np.random.default_rng(3).integers(0, 256, (3, 1000))
  whole = audio.decode(levels, 256, "mu-law", a)
  pieces, previous = [], None
  for start, stop in [(0, 1), (1, 8), (8, 400), (400, 1000)]:
    piece = audio.decode(levels[:, start:stop], 256, "mu-law", a, previous)
    pieces.append(piece)
    previous = piece[:, -1]
  np.testing.assert_array_equal(np.concatenate(pieces, 1), whole)
  # The state matters: without it the second segment decodes differently.
  assert not np.array_equal(audio.decode(levels[:, 8:], 256, "mu-law", a),
                            whole[:, 8:])


@pytest.mark.parametrize("a", [-0.1, 1.0, 1.5])
def test_preemphasis_out_of_range_names_the_range(a):
  with pytest.raises(ValueError, match=r"preemphasis=.* must be in \[0, 1\)"):
    audio.encode(np.zeros(4), 256, "linear", a)
  with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
    audio.decode(np.zeros(4, np.int32), 256, "linear", a)


def test_loud_span_cuts_only_ends_that_are_quiet_throughout():
  rate, n = 16000, round(audio.LOUDNESS_FRAME_SECONDS * 16000)
  rng = np.random.default_rng(0)
  quiet_T = 10 ** (-45 / 20) * rng.standard_normal(rate)  # -45 dBFS
  tone_T = 0.25 * np.sin(2 * np.pi * 330 * np.arange(3 * rate) / rate)
  x_T = np.concatenate([quiet_T, tone_T, quiet_T[:rate // 2], quiet_T])
  start, stop = audio.loud_span(x_T, rate, -36.0)
  # The whole tone stays, with under one frame of the quiet on either side.
  assert rate - n < start <= rate
  assert 4 * rate <= stop < 4 * rate + n
  assert audio.loud_span(quiet_T, rate, -36.0) == (0, 0)
  assert audio.loud_span(x_T, rate, -50.0) == (0, len(x_T))
  assert audio.loud_span(tone_T[:100], rate, -36.0) == (0, 100)
