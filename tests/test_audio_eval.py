"""Audio evaluation (issue 10): the condition classifier and the Frechet
distance on real clips of known classes, the crash detector on constructed
crashes and on real audio, the JSON/Markdown output and evaluate --generated."""
import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import synth
from csrnn_jax import audio
from csrnn_jax import audio_eval
from csrnn_jax import evaluate
from csrnn_jax import sample_cli
from csrnn_jax import trainer
from test_trainer import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
SR = 16000
CLASSES = ["bells", "organ", "wind"]


def as_model_hears(x_T):
  """8-bit linear, as generated audio comes out."""
  return audio.dequantize(audio.quantize(x_T))


@pytest.fixture(scope="module")
def real(tiny_dataset):
  return {s: audio_eval.load_dataset_clips(tiny_dataset, s)
          for s in ("train", "valid", "test")}


def synth_clips(seeds, seconds=1.0):
  """Clips of the fixture classes rendered at 16 kHz, one per class and seed
  (the fixture files' wind depends on their sample rate)."""
  return [audio_eval.Clip(f"{k}{s}", as_model_hears(synth(k, seconds, SR, s)),
                          k) for s in seeds for k in CLASSES]


def test_classifier_and_frechet_on_clips_of_known_classes():
  # The "generated" clips are more real clips of the class they claim.
  train, test, gen = (synth_clips(range(8)), synth_clips(range(8, 12)),
                      synth_clips(range(12, 16)))
  result = audio_eval.evaluate_clips(gen, train, test, CLASSES, SR)
  assert result["test"]["per_class"]["all"]["accuracy"] == 1.0  # ceiling
  assert result["generated"]["per_class"]["all"]["accuracy"] == 1.0
  assert result["chance"] == pytest.approx(1 / 3)
  for key in ("generated", "test"):
    fd = result["frechet_to_train"][key]
    for name in CLASSES:
      others = [fd[name][m] for m in CLASSES if m != name]
      assert fd[name][name] < min(others), (key, name, fd[name])
  assert result["generated"]["per_class"]["all"]["crashed"] == 0
  table = audio_eval.format_markdown(result)
  assert "| **all** (chance 0.33) | 12 | 1.00 | 1.00 | 1.00 |" in table
  json.dumps(result)  # JSON-ready as it is

  # The same clips labelled with the wrong class: accuracy 0, not chance.
  wrong = [audio_eval.Clip(c.name, c.wave_T,
                           CLASSES[(CLASSES.index(c.label) + 1) % 3])
           for c in gen]
  result = audio_eval.evaluate_clips(wrong, train, test, CLASSES, SR)
  assert result["generated"]["per_class"]["all"]["accuracy"] == 0.0


def demo_clips(files, seconds=2.0):
  """Consecutive clips of the demo files, as the model hears them."""
  clips = []
  for path in files:
    x = as_model_hears(audio.load_audio(path, SR))
    n = int(seconds * SR)
    clips += [audio_eval.Clip(path.name, x[i:i + n], path.parent.name)
              for i in range(0, len(x) - n + 1, n)
              if np.sqrt(np.mean(x[i:i + n] ** 2)) > 0.003]  # -50 dBFS
  return clips


@pytest.mark.skipif(not DEMO.is_dir(), reason="data/demo is not there")
def test_classifier_and_frechet_on_the_demo_music():
  # Train on 5 tunes per instrument, test on 2 others (as csrnn-prepare
  # splits by file), "generate" with a third pair.
  names = ["piano", "violin"]
  files = {k: sorted((DEMO / k).glob("*.flac")) for k in names}
  pick = lambda sl: [f for k in names for f in files[k][sl]]
  train, test, gen = (demo_clips(pick(slice(0, 4))),
                      demo_clips(pick(slice(4, 6))),
                      demo_clips(pick(slice(6, 7))))
  result = audio_eval.evaluate_clips(gen, train, test, names, SR)
  assert result["test"]["per_class"]["all"]["accuracy"] >= 0.95
  assert result["generated"]["per_class"]["all"]["accuracy"] >= 0.95
  fd = result["frechet_to_train"]["generated"]
  assert fd["piano"]["piano"] < fd["piano"]["violin"]
  assert fd["violin"]["violin"] < fd["violin"]["piano"]


def test_frechet_distance_properties():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((400, 5))
  assert audio_eval.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  # Two Gaussians N(0, I) and N(m, 4 I): |m|^2 + 5 (1 + 4 - 2 * 2) = |m|^2 + 5.
  b = 2 * rng.standard_normal((40000, 5)) + 1.0
  c = rng.standard_normal((40000, 5))
  assert audio_eval.frechet_distance(c, b) == pytest.approx(10.0, rel=0.05)
  # Fewer vectors than dimensions: singular covariances, still finite.
  assert np.isfinite(audio_eval.frechet_distance(a[:3], b[:4]))


def good_audio(seconds, seed=0):
  """Real-sounding audio: struck bells then a sustained organ, peak 0.5."""
  half = seconds / 2
  return np.concatenate([synth("bells", half, SR, seed),
                         synth("organ", seconds - half, SR, seed)])


def crackle(n, rng):
  """Near-silence with a short quiet burst every 0.1 s: the crash that
  plain sampling of the demo model falls into."""
  x = np.zeros(n)
  for start in range(0, n - 160, SR // 10):
    x[start:start + 160] = 0.04 * rng.standard_normal(160)
  return x


@pytest.mark.parametrize("kind,tail", [
    ("constant", lambda n, rng: np.zeros(n)),
    ("constant", lambda n, rng: 0.3 + 0.004 * rng.choice([-1, 1], n)),
    ("constant", crackle),
    ("clipped", lambda n, rng: np.sign(np.sin(np.arange(n) / 9.0))),
    ("clipped", lambda n, rng: np.clip(3 * synth("organ", n / SR, SR), -1, 1)),
    ("noise", lambda n, rng: 0.3 * rng.uniform(-1, 1, n)),
    ("noise", lambda n, rng: np.clip(0.2 * rng.standard_normal(n), -1, 1)),
])
def test_crash_detector_fires_on_constructed_crashes(kind, tail):
  rng = np.random.default_rng(1)
  x = np.concatenate([good_audio(3.0), tail(3 * SR, rng)])
  crash = audio_eval.CrashDetector().detect(as_model_hears(x), SR)
  assert crash is not None and crash["kind"] == kind
  assert 2.9 <= crash["time"] <= 3.05, crash


def test_crash_detector_thresholds_are_sustained():
  # Shorter than each threshold's duration: no crash.
  d = audio_eval.CrashDetector()
  rng = np.random.default_rng(2)
  for n, tail in ((int(1.5 * SR), np.zeros(int(1.5 * SR))),
                  (int(0.1 * SR), np.ones(int(0.1 * SR))),
                  (int(0.3 * SR), 0.3 * rng.uniform(-1, 1, int(0.3 * SR)))):
    x = np.concatenate([good_audio(1.0), tail, good_audio(1.0, seed=1)])
    assert d.detect(as_model_hears(x), SR) is None, n
  assert d.detect(np.zeros(100), SR) is None  # shorter than a frame


def test_crash_detector_quiet_on_real_clips(real):
  d = audio_eval.CrashDetector()
  for split, clips in real.items():
    for clip in clips:
      assert d.detect(clip.wave_T, SR) is None, (split, clip.name)


@pytest.mark.skipif(not DEMO.is_dir(), reason="data/demo is not there")
def test_crash_detector_quiet_on_the_demo_music():
  # Every demo file whole (minutes of piano and violin, 8-bit), without the
  # 2.4 s of digital silence that the renderer leaves after the last note
  # (which is flagged: the model is asked for music).
  d = audio_eval.CrashDetector()
  files = sorted(DEMO.glob("*/*.flac"))
  assert len(files) >= 10
  for path in files:
    x = as_model_hears(audio.load_audio(path, SR))
    last = np.flatnonzero(np.abs(x) > 0.02)[-1]
    assert d.detect(x[:last + 1], SR) is None, path
    assert d.detect(x, SR)["time"] > (last - SR) / SR, path


def test_evaluate_generated_flag(tiny_dataset, tmp_path, capsys):
  config = tiny_config(tiny_dataset, num_steps=31, eval_every=0)
  run = tmp_path / "run"
  trainer.train_and_evaluate(config, str(run))
  # "Generated" clips as sample.py names them: real valid clips and a crash.
  gen = tmp_path / "gen"
  gen.mkdir()
  clips = audio_eval.load_dataset_clips(tiny_dataset, "valid")
  crashed = np.concatenate([clips[0].wave_T, np.zeros(3 * SR)])
  for i, (clip, wave) in enumerate([(c, c.wave_T) for c in clips]
                                   + [(clips[0], crashed)]):
    stem = f"{clip.label}_seed{i}_t1"
    sf.write(gen / f"{stem}.wav", wave, SR, subtype="PCM_16")
    (gen / f"{stem}.json").write_text(json.dumps(
        {"condition_name": clip.label, "condition_vector": [1.0, 0.0, 0.0]}))
  sf.write(gen / "stray.wav", clips[0].wave_T, SR)  # no sidecar: not a sample
  assert evaluate.main(["--workdir", str(run), "--split", "test",
                        "--generated", str(gen)]) == 0
  out = capsys.readouterr().out
  assert "bits/sample" in out and "condition acc." in out
  result = json.loads((gen / "audio_eval.json").read_text())
  assert result["generated"]["per_class"]["all"]["clips"] == 10
  assert result["generated"]["per_class"]["all"]["crashed"] == 1
  crash = [c for c in result["generated"]["clips"] if c["crash"]][0]["crash"]
  assert crash["kind"] == "constant" and crash["time"] == pytest.approx(
      0.5, abs=0.05)
  assert (gen / "audio_eval.md").read_text().startswith("| class |")
  assert evaluate.main(["--workdir", str(run), "--generated",
                        str(tmp_path)]) == 2  # no samples there
  # sample.py --crash-guard, then its output evaluated.
  out = tmp_path / "guarded"
  assert sample_cli.main(["--workdir", str(run), "--seconds", "0.3",
                          "--crash-guard", "--out", str(out)]) == 0
  sidecar = json.loads((out / "bells_seed0_t1.json").read_text())
  assert sidecar["crash_guard"]["rewinds"] >= 0
  assert evaluate.main(["--workdir", str(run), "--generated", str(out)]) == 0
  result = json.loads((out / "audio_eval.json").read_text())
  assert result["generated"]["per_class"]["all"]["clips"] == 3
