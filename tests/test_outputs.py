"""outputs without generating: one row per class (and the one name of an
output without a class), the conditions a batch of rows hands the
generator, and when an existing file may be replaced. Real files."""
import json

import numpy as np
import pytest

from csrnn_jax import outputs
from csrnn_jax import rundir
from csrnn_jax import sampling


def test_one_row_per_class_or_one_without_a_class():
  assert outputs.per_class_conditions(("bells", "organ"), 2) == [
      ("bells", (1.0, 0.0)), ("organ", (0.0, 1.0))]
  assert outputs.per_class_conditions((), 0) == [(outputs.UNCONDITIONAL, ())]
  # Vector conditioning: no class to name, the zero vector.
  assert outputs.per_class_conditions((), 3) == [
      (outputs.UNCONDITIONAL, (0.0, 0.0, 0.0))]
  assert outputs.one_hot(2, 3) == (0.0, 0.0, 1.0)


def test_generator_conditions_of_plain_and_mixed_rows():
  plain = [outputs.Row("a", (1.0, 0.0), 0, 1.0),
           outputs.Row("b", (0.0, 1.0), 1, 1.0)]
  cond_BxC, weights = outputs.generator_conditions(plain, 2)
  np.testing.assert_array_equal(cond_BxC, [[1, 0], [0, 1]])
  assert cond_BxC.dtype == np.float32 and weights is None
  mix = outputs.Row("a+b", (0.5, 0.5), 2, 1.0,
                    mix=(("a", 0.5, (1.0, 0.0)), ("b", 0.5, (0.0, 1.0))))
  cond_BxMxC, weights_BxM = outputs.generator_conditions([plain[0], mix], 2)
  assert cond_BxMxC.shape == (2, 2, 2)
  np.testing.assert_array_equal(weights_BxM, [[1.0, 0.0], [0.5, 0.5]])


def test_an_existing_output_is_replaced_only_when_it_is_the_same_audio(
    tmp_path):
  row = outputs.Row("bells", (1.0, 0.0), 3, 0.9)
  options = sampling.SamplingOptions(top_k=8)
  stem = outputs.file_stem(row, options)
  assert stem == "bells_seed3_t0.9_k8"
  wav = str(tmp_path / f"{stem}.wav")
  sidecar = outputs.settings(row, options, "h0", False, 1.0, 16000,
                             {"checkpoint_step": 31})
  outputs.check_free(wav, sidecar, overwrite=False)  # nothing there yet
  (tmp_path / f"{stem}.wav").write_bytes(b"RIFF")
  with pytest.raises(outputs.OutputExists, match="has no readable sidecar"):
    outputs.check_free(wav, sidecar, overwrite=False)
  written = {**sidecar, "wall_seconds": 2.0, "log_likelihood_nats": -5.0}
  rundir.write_json(str(tmp_path / f"{stem}.json"), written)
  outputs.check_free(wav, sidecar, overwrite=False)  # results may differ
  other = {**sidecar, "checkpoint_step": 62}
  with pytest.raises(outputs.OutputExists,
                     match=r"other settings \(checkpoint_step: 31 -> 62\)"):
    outputs.check_free(wav, other, overwrite=False)
  outputs.check_free(wav, other, overwrite=True)
  assert json.loads((tmp_path / f"{stem}.json").read_text())["seed"] == 3
