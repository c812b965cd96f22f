"""Quantisation (DESIGN §2): round trips, mu-law formula, clipping."""
import numpy as np
import pytest

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
