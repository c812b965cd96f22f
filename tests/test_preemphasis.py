"""Pre-emphasis end to end: the wav files of a generated batch are the
inverse filter run once over the prime and the generated levels, however
the audio is cut into segments; the evaluation hears real clips through the
same filter."""
import numpy as np
import soundfile as sf

from csrnn_jax import audio
from csrnn_jax import model as M
from csrnn_jax import outputs
from csrnn_jax import sampling
from helpers import make


def test_written_audio_is_one_pass_decode_of_prime_and_samples(tmp_path):
  a = 0.9
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=8, cond_dim=2,
                      preemphasis=a)
  graphdef, params = make(cfg)
  generator = sampling.Generator(graphdef, params)
  rows = [outputs.Row("a", (1.0, 0.0), 3, 1.0),
          outputs.Row("b", (0.0, 1.0), 4, 1.0)]
  # A prime that ends far from silence, so that a filter restarted from
  # silence would show.
  prime_P = audio.encode(np.full(40, 0.5), 256, "linear", a)
  paths = outputs.generate_to_files(
      generator, rows, 0.04, 16000, str(tmp_path), prime_P=prime_P,
      segment_seconds=0.005, progress=False)  # 640 samples in 8 segments
  prime_BxP = np.tile(prime_P, (2, 1))
  # The same levels again (the same compiled segments: one compile).
  levels_BxN = np.concatenate([s for s, _ in generator.segments(
      np.eye(2), [3, 4], 640, prime_BxP=prime_BxP, segment_samples=80)], 1)
  expected_BxN = audio.decode(np.concatenate([prime_BxP, levels_BxN], 1),
                              256, "linear", a)[:, 40:]
  restarted_BxN = audio.decode(levels_BxN, 256, "linear", a)
  for path, expected, restarted in zip(paths, expected_BxN, restarted_BxN):
    wave, _ = sf.read(path, dtype="float32")
    # 16-bit PCM: half a step (1.5e-5) plus libsndfile's 32767-in /
    # 32768-out scale (3.1e-5 at full scale) < 1e-4.
    np.testing.assert_allclose(wave, np.clip(expected, -1, 1), atol=1e-4)
    assert abs(wave[0] - restarted[0]) > 0.1  # the prime's state counts


def test_evaluation_hears_real_clips_through_the_models_filter(tiny_dataset):
  from csrnn_jax import audio_eval  # pylint: disable=import-outside-toplevel
  from csrnn_jax import dataset  # pylint: disable=import-outside-toplevel
  chunks = dataset.split_chunks(dataset.read_manifest(tiny_dataset), "test")
  clips = audio_eval.load_dataset_clips(tiny_dataset, "test", 256, "mu-law",
                                        0.85)
  assert len(clips) == len(chunks) > 0
  for clip, chunk in zip(clips, chunks):
    x_T, _ = sf.read(tiny_dataset / chunk["path"], dtype="float32")
    np.testing.assert_array_equal(clip.wave_T, audio.decode(
        audio.encode(x_T, 256, "mu-law", 0.85), 256, "mu-law", 0.85))
