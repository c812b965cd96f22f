"""The crash guard: rows that never crash are the plain generator's; a
crashed row is rewound to the segment where its crash began and redrawn (also
with guidance, whose passes rewind together); the guard's rewinds reach the
sidecars."""
import ast
import json
import pathlib

import numpy as np
import pytest

from csrnn_jax import crash
from csrnn_jax import crash_guard
from csrnn_jax import model as M
from csrnn_jax import outputs
from csrnn_jax import sampling
from helpers import randomize, teacher_forced_logp

SR = 16000
SEGMENT = 160  # samples: 0.01 s, 10 top frames of 16


@pytest.fixture(scope="module")
def gen():
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=24, cond_dim=3)
  graphdef, params = M.build(cfg, 0)
  return sampling.Generator(graphdef, randomize(params, 0, scale=0.2))


class FireOnCall:
  """A detector that reports a crash at ``time`` (s, in the window it is
  given) on its n-th call only; rows are checked in order every step."""
  constant_seconds = clip_seconds = noise_seconds = 0.05

  def __init__(self, call: int, time: float):
    self.call, self.time, self.calls = call, time, 0

  def detect(self, wave_T, sample_rate):
    self.calls += 1
    if self.calls != self.call:
      return None
    return {"kind": "noise", "time": self.time, "seconds": 0.05}


def guarded(gen, guard, seeds, n):
  chunks = list(guard.segments(gen, np.eye(3)[:len(seeds)], seeds, n))
  return (np.concatenate([s for s, _ in chunks], 1),
          np.concatenate([l for _, l in chunks], 1))


def test_rows_without_crashes_are_the_plain_generators(gen):
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR)
  samples, logp = guarded(gen, guard, [3, 4], 1000)  # last segment trimmed
  plain, plain_logp = gen.generate(np.eye(3)[:2], [3, 4], 1000)
  np.testing.assert_array_equal(samples, plain)
  np.testing.assert_allclose(logp, plain_logp, atol=1e-5)
  assert guard.rewinds == [0, 0]


def test_a_crashed_row_is_rewound_to_the_segment_of_its_onset(gen):
  # Call 5 is row 0 after its third segment; the crash began at 0.015 s,
  # in segment 1, so row 0 keeps segment 0 and redraws from there.
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(5, 0.015))
  samples, logp = guarded(gen, guard, [3, 4], 1600)
  plain, _ = gen.generate(np.eye(3)[:2], [3, 4], 1600)
  assert samples.shape == logp.shape == (2, 1600)
  assert guard.rewinds == [1, 0]
  assert guard.crashes[0][0]["time"] == pytest.approx(0.015)
  np.testing.assert_array_equal(samples[1], plain[1])
  np.testing.assert_array_equal(samples[0, :SEGMENT], plain[0, :SEGMENT])
  assert np.mean(samples[0, SEGMENT:] != plain[0, SEGMENT:]) > 0.5
  again, _ = guarded(gen, crash_guard.CrashGuard(
      SR, segment_seconds=SEGMENT / SR, detector=FireOnCall(5, 0.015)),
                     [3, 4], 1600)
  np.testing.assert_array_equal(again, samples)  # seeded


def test_a_row_at_work_after_the_others_runs_alone_and_draws_the_same(
    gen, monkeypatch):
  """Row 0 crashes in its last segment (call 28: the tenth step's first
  check; onset 0.085 s, in segment 8) and redraws segments 8 and 9 after
  rows 1 and 2 are done: those two steps run a batch of one. Its audio is
  what a guard of its own gives under the same crash (a row's draws do not
  depend on the rows beside it); the other rows are the plain
  generator's."""
  widths = []
  segment = gen.segment
  monkeypatch.setattr(gen, "segment", lambda plan, state, index_BxT, *a, **k: (
      widths.append(len(index_BxT)), segment(plan, state, index_BxT, *a,
                                             **k))[1])
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(28, 0.085))
  samples, _ = guarded(gen, guard, [3, 4, 5], 10 * SEGMENT)
  assert guard.rewinds == [1, 0, 0]
  assert widths == [3] * 10 + [1] * 2  # then the guard alone: width 1
  alone, _ = guarded(gen, crash_guard.CrashGuard(
      SR, segment_seconds=SEGMENT / SR, detector=FireOnCall(10, 0.085)),
                     [3], 10 * SEGMENT)
  np.testing.assert_array_equal(samples[0], alone[0])
  plain, _ = gen.generate(np.eye(3), [3, 4, 5], 10 * SEGMENT)
  np.testing.assert_array_equal(samples[1:], plain[1:])
  assert np.mean(samples[0, 8 * SEGMENT:] != plain[0, 8 * SEGMENT:]) > 0.5


def test_guided_rows_rewind_with_their_null_pass(gen):
  options = sampling.SamplingOptions(guide="logits")
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(5, 0.015))
  chunks = list(guard.segments(gen, np.eye(3)[:2], [3, 4], 1600,
                               options=options, guidance=[3.0, 2.0]))
  samples = np.concatenate([s for s, _ in chunks], 1)
  plain, _ = gen.generate(np.eye(3)[:2], [3, 4], 1600, options=options,
                          guidance=[3.0, 2.0])
  assert guard.rewinds == [1, 0]
  np.testing.assert_array_equal(samples[1], plain[1])
  np.testing.assert_array_equal(samples[0, :SEGMENT], plain[0, :SEGMENT])
  assert np.mean(samples[0, SEGMENT:] != plain[0, SEGMENT:]) > 0.5


@pytest.mark.parametrize("unfiltered", [False, True])
def test_redraw_unfiltered_draws_the_rewound_stretch_from_the_full_model(
    gen, unfiltered):
  """Under min-p 0.5 every sample of a plain draw is in the kept set. With
  ``redraw_unfiltered`` row 0's redrawn stretch (segments 1 and 2: the crash
  found after segment 2 began in segment 1) comes from the full
  distribution, and after it the filter applies again; row 1, never
  rewound, is the plain filtered generator's."""
  cond, options = np.eye(3)[:2], sampling.SamplingOptions(min_p=0.5)
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(5, 0.015),
                                 redraw_unfiltered=unfiltered)
  chunks = list(guard.segments(gen, cond, [3, 4], 1600, options=options))
  samples = np.concatenate([s for s, _ in chunks], 1)
  plain, _ = gen.generate(cond, [3, 4], 1600, options=options)
  assert guard.rewinds == [1, 0]
  np.testing.assert_array_equal(samples[1], plain[1])
  _, logits = teacher_forced_logp(gen.graphdef, gen.params, samples, cond)
  kept_BxSxQ = np.isfinite(sampling.filter_logits(
      logits.reshape(-1, 256), options)).reshape(2, -1, 256)
  kept_BxS = np.take_along_axis(kept_BxSxQ, samples[..., None], -1)[..., 0]
  stretch = slice(SEGMENT, 3 * SEGMENT)
  assert kept_BxS[0, :SEGMENT].all() and kept_BxS[0, 3 * SEGMENT:].all()
  assert kept_BxS[0, stretch].all() != unfiltered


@pytest.mark.parametrize("unfiltered", [False, True])
def test_redraw_unfiltered_draws_the_rewound_stretch_without_guidance(
    gen, unfiltered):
  """Guided at s = 3 and 2, row 0's redrawn stretch (segments 1 and 2) is
  drawn, with ``redraw_unfiltered``, from the conditional distribution
  itself: its log-probabilities are the teacher-forced ones of the audio
  (s = 1 gives the conditional logits bit for bit, ``sampling.guide``), and
  after the stretch, and everywhere without the option, they are the guided
  distribution's, far from them. Row 1, never rewound, is the plain guided
  generator's."""
  cond, options = np.eye(3)[:2], sampling.SamplingOptions(guide="logits")
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(5, 0.015),
                                 redraw_unfiltered=unfiltered)
  chunks = list(guard.segments(gen, cond, [3, 4], 1600, options=options,
                               guidance=[3.0, 2.0]))
  samples = np.concatenate([s for s, _ in chunks], 1)
  logp = np.concatenate([l for _, l in chunks], 1)
  plain, _ = gen.generate(cond, [3, 4], 1600, options=options,
                          guidance=[3.0, 2.0])
  assert guard.rewinds == [1, 0]
  np.testing.assert_array_equal(samples[1], plain[1])
  conditional, _ = teacher_forced_logp(gen.graphdef, gen.params, samples,
                                       cond)
  gap_S = np.abs(logp[0] - np.asarray(conditional)[0])
  stretch, after = gap_S[SEGMENT:3 * SEGMENT], gap_S[3 * SEGMENT:]
  assert (stretch.max() < 1e-4) == unfiltered  # atol as test_sampling's
  assert stretch.mean() > 0.1 or unfiltered
  assert after.mean() > 0.1


def assert_rewound_row_follows_the_model(gen, cond, n):
  """Rows 0 and 1 under ``cond``: row 0 crashes once and is rewound, row 1
  is the plain generator's; both rows' log-probabilities are the
  teacher-forced ones of the audio they got."""
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(5, 0.015))
  chunks = list(guard.segments(gen, cond, [3, 4], n))
  samples = np.concatenate([s for s, _ in chunks], 1)
  logp = np.concatenate([l for _, l in chunks], 1)
  plain, _ = gen.generate(cond, [3, 4], n)
  assert guard.rewinds == [1, 0]
  np.testing.assert_array_equal(samples[1], plain[1])
  assert np.mean(samples[0, SEGMENT:] != plain[0, SEGMENT:]) > 0.5
  expected, _ = teacher_forced_logp(gen.graphdef, gen.params, samples, cond)
  np.testing.assert_allclose(logp, expected, atol=1e-4)  # as test_sampling's


def test_a_rewound_row_reads_its_own_frames_of_a_schedule(gen):
  """A condition schedule (one class per top frame, cycling) and a schedule
  of mix weights: rows without crashes are the plain generator's, and the
  rewound row, which lags the other by a segment, still follows its own
  frames (its log-probabilities are the teacher-forced ones)."""
  frames = 1600 // gen.cfg.lookback
  assert_rewound_row_follows_the_model(gen, np.stack([
      np.eye(3)[np.arange(frames) % 3],
      np.eye(3)[(np.arange(frames) + 1) % 3]]), 1600)
  options = sampling.SamplingOptions(guide="logits")
  ramp_N = np.linspace(0, 1, frames, dtype=np.float32)
  weights_BxMxN = np.stack([np.stack([1 - ramp_N, ramp_N])] * 2)
  components = np.eye(3)[[[0, 1], [1, 2]]]
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR)
  chunks = list(guard.segments(gen, components, [3, 4], 1600, options=options,
                               mix_weights=weights_BxMxN))
  plain, _ = gen.generate(components, [3, 4], 1600, options=options,
                          mix_weights=weights_BxMxN)
  np.testing.assert_array_equal(np.concatenate([s for s, _ in chunks], 1),
                                plain)


class FireOnCalls(FireOnCall):
  """Reports a crash at ``times[call]`` (s, in the window it is given) on
  each call in ``times``."""

  def __init__(self, times: dict):
    self.times, self.calls = times, 0

  def detect(self, wave_T, sample_rate):
    self.calls += 1
    if self.calls not in self.times:
      return None
    return {"kind": "constant", "time": self.times[self.calls],
            "seconds": 0.05}


@pytest.mark.parametrize("backoff,onsets,rewound_to", [
    (0.0, {6: (640, 0), 8: (720, 0), 10: (800, 0), 27: (3360, 3)},
     [0.04, 0.04, 0.05, 0.21]),
    (0.02, {6: (640, 0), 8: (720, 0), 10: (800, 0), 35: (3360, 7)},
     [0.04, 0.02, 0.01, 0.21]),
    (1.0, {26: (4000, 7), 27: (4100, 7)}, [0.25, 0.07])])
def test_a_repeated_crash_goes_back_further_each_time(gen, backoff, onsets,
                                                      rewound_to):
  # One row, a check after each segment; ``onsets``: {call: (the crash's
  # first sample, where the checked window starts, in segments)}; the
  # detector's seconds are half a sample past it, so they floor to it. The
  # reach here is 2848 samples (17.8 segments), the window 19 segments.
  # Without backoff: calls 6, 8 and 10 check segments 5, 5 and 5, each
  # rewinding to its onset's segment; call 27 segment 21. With 0.02 s (2
  # segments): 720 and 800 are repeats (within the reach of where the row
  # went back to), going back 2 and 4 segments further (calls 6, 8, 10
  # check segments 5, 5, 3); 3360 is past the reach of 160 (call 35,
  # segment 25): the repeats start over. With 1 s, capped at the reach:
  # 4100 - 2848 = 1252, in segment 7.
  guard = crash_guard.CrashGuard(
      SR, segment_seconds=SEGMENT / SR, backoff_seconds=backoff,
      detector=FireOnCalls({c: (n - w * SEGMENT + 0.5) / SR
                            for c, (n, w) in onsets.items()}))
  samples, _ = guarded(gen, guard, [3], 40 * SEGMENT)
  assert [c["rewound_to"] for c in guard.crashes[0]] == pytest.approx(
      rewound_to)
  assert guard.rewinds == [len(onsets)]
  plain, _ = gen.generate(np.eye(3)[:1], [3], 40 * SEGMENT)
  kept = int(min(rewound_to) * SR)  # never redrawn
  np.testing.assert_array_equal(samples[0, :kept], plain[0, :kept])
  assert np.mean(samples[0, kept:] != plain[0, kept:]) > 0.5


@pytest.mark.parametrize("kwargs", [{"max_rewinds": -1},
                                    {"backoff_seconds": -0.5}])
def test_negative_rewinds_or_backoff_are_refused(kwargs):
  with pytest.raises(ValueError, match="max_rewinds >= 0 and backoff_seconds"):
    crash_guard.CrashGuard(SR, **kwargs)


def test_rewinds_stop_at_max_rewinds(gen):
  class Always(FireOnCall):
    def detect(self, wave_T, sample_rate):
      return {"kind": "constant", "time": 0.0, "seconds": 0.05}

  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 max_rewinds=3, detector=Always(0, 0.0))
  samples, _ = guarded(gen, guard, [1], 500)
  assert samples.shape == (1, 500) and guard.rewinds == [3]


def test_generate_to_files_with_the_guard(gen, tmp_path):
  rows = [outputs.Row("a", (1.0, 0.0, 0.0), 7, 1.0)]
  guard = crash_guard.CrashGuard(SR, segment_seconds=SEGMENT / SR,
                                 detector=FireOnCall(3, 0.0))
  paths = outputs.generate_to_files(gen, rows, 0.05, SR, str(tmp_path),
                                    progress=False, guard=guard)
  sidecar = json.loads(open(paths[0][:-4] + ".json").read())
  assert sidecar["crash_guard"]["rewinds"] == 1
  assert sidecar["crash_guard"]["crashes"][0]["kind"] == "noise"
  plain = outputs.generate_to_files(gen, rows, 0.05, SR, str(tmp_path / "p"),
                                    progress=False)
  assert json.loads(open(plain[0][:-4] + ".json").read())["crash_guard"] is None


def test_the_real_detector_reaches_back_far_enough():
  # A crash run begins at most ``reach`` samples before the newest segment.
  guard = crash_guard.CrashGuard(SR)
  d = crash.CrashDetector()
  assert guard.reach >= d.constant_seconds * SR


def package_imports(module: str) -> set[str]:
  """The csrnn_jax modules ``module`` imports, directly or not, read from
  the sources (no import runs)."""
  root = pathlib.Path(crash.__file__).parents[1]
  seen, todo = set(), [module]
  while todo:
    name = todo.pop()
    path = root / (name.replace(".", "/") + ".py")
    if name in seen or not path.exists():
      continue
    seen.add(name)
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        todo += [a.name for a in node.names]
  return seen


def test_generation_does_not_import_the_evaluation():
  """The guard reads the crash detector from ``crash``: generating does not
  pull in the evaluation's data pipeline and classifiers."""
  imported = package_imports("csrnn_jax.crash_guard")
  assert {"csrnn_jax.crash", "csrnn_jax.sampling"} <= imported
  assert not imported & {"csrnn_jax.audio_eval", "csrnn_jax.data",
                         "csrnn_jax.evaluate"}


def test_crash_guard_rewinds_lstm_state():
  """A rewound row restarts from its saved (h, c): the redrawn audio's
  log-probabilities are still the training forward's."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=16, cond_dim=3, n_rnn=2,
                      cell="lstm")
  graphdef, params = M.build(cfg, 0)
  params = randomize(params, 3, scale=0.2)
  assert_rewound_row_follows_the_model(
      sampling.Generator(graphdef, params), np.eye(3)[:2], 800)
