"""Generation: one compiled program, seeds, greedy, priming,
log-likelihood, conditioning, segments, sampling rules, classifier-free
guidance and mixes, and the sample.py CLI."""
import dataclasses
import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from csrnn_jax import audio
from csrnn_jax import model as M
from csrnn_jax import outputs
from csrnn_jax import sampling
from csrnn_jax import sharding
from csrnn_jax.cli import sample as sample_cli
from helpers import REPO, forward_logits, randomize, teacher_forced_logp
from helpers import WINDOWS_PER_BATCH as W



@pytest.fixture(scope="module")
def tiny_generator():
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=24, cond_dim=3, n_rnn=2)
  graphdef, params = M.build(cfg, 0)
  params = randomize(params, 0, scale=0.2)
  return graphdef, params, sampling.Generator(graphdef, params)


@pytest.fixture
def segment_traces(monkeypatch):
  """The arguments of every trace of a generator's segment program (the
  compiled program calls ``generate_segment`` only when it is traced)."""
  traces, real = [], sampling.generate_segment

  def traced(*args, **kwargs):
    traces.append(args)
    return real(*args, **kwargs)

  monkeypatch.setattr(sampling, "generate_segment", traced)
  return traces


def test_shape_range_seeds_and_single_compile(tiny_generator, segment_traces):
  _, _, gen = tiny_generator
  cond = np.eye(3)
  a, _ = gen.generate(cond, [1, 2, 3], 200)
  b, _ = gen.generate(cond, [1, 2, 3], 200)
  c, _ = gen.generate(cond, [1, 5, 3], 200)
  assert len(segment_traces) == 1  # three calls, one trace
  assert a.shape == (3, 200) and a.dtype == np.int32
  assert a.min() >= 0 and a.max() < 256
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[[0, 2]], c[[0, 2]])  # rows are independent
  assert np.mean(a[1] != c[1]) > 0.5


def test_loglik_equals_teacher_forced_log_probs(tiny_generator):
  graphdef, params, gen = tiny_generator
  cond = np.eye(3)[[0, 2]]
  x, logp = gen.generate(cond, [7, 8], 64, temperature=[0.8, 1.3])
  expected, _ = teacher_forced_logp(graphdef, params, x, cond)
  np.testing.assert_allclose(logp, expected, atol=1e-4)
  np.testing.assert_allclose(logp.sum(1), expected.sum(1), rtol=1e-5)


def test_top_k_one_is_greedy(tiny_generator):
  graphdef, params, gen = tiny_generator
  cond = np.eye(3)[:2]
  opts = sampling.SamplingOptions(top_k=1)
  x, _ = gen.generate(cond, [1, 2], 48, options=opts)
  y, _ = gen.generate(cond, [9, 10], 48, options=opts)
  np.testing.assert_array_equal(x, y)  # the seed no longer matters
  _, logits = teacher_forced_logp(graphdef, params, x, cond)
  np.testing.assert_array_equal(x, np.argmax(logits, axis=-1))


def test_top_p_and_top_k_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda o: np.isfinite(sampling.filter_logits(logits, o))[0].tolist()
  assert kept(sampling.SamplingOptions(top_p=0.7)) == [True, True, False,
                                                      False]
  assert kept(sampling.SamplingOptions(top_p=0.4)) == [True, False, False,
                                                      False]
  assert kept(sampling.SamplingOptions(top_k=3)) == [True, True, True, False]
  with pytest.raises(ValueError, match="top_p"):
    sampling.SamplingOptions(top_p=0.0)


def test_min_p_and_typical_filters():
  probs = jnp.array([[0.5, 0.3, 0.15, 0.05]])
  kept = lambda o, p=probs: np.isfinite(
      sampling.filter_logits(jnp.log(p), o))[0].tolist()
  # min-p keeps p >= min_p * 0.5.
  assert kept(sampling.SamplingOptions(min_p=0.3)) == [True, True, True, False]
  assert kept(sampling.SamplingOptions(min_p=0.7)) == [True, False, False,
                                                      False]
  # Entropy 1.142 nats; information -log p = 0.693, 1.204, 1.897, 2.996 is
  # 0.449, 0.062, 0.755, 1.854 away from it: the order is 1, 0, 2, 3.
  assert kept(sampling.SamplingOptions(typical_p=0.2)) == [False, True, False,
                                                          False]
  assert kept(sampling.SamplingOptions(typical_p=0.5)) == [True, True, False,
                                                          False]
  assert kept(sampling.SamplingOptions(typical_p=0.9)) == [True, True, True,
                                                          False]
  # Entropy 1.332: the three 0.2 tokens (information 1.609) come before the
  # likeliest (0.916); typical sampling drops the mode here.
  flat = jnp.array([[0.4, 0.2, 0.2, 0.2]])
  assert kept(sampling.SamplingOptions(typical_p=0.5), flat) == [
      False, True, True, True]
  # Each rule sees what the ones before kept: after top-k 2, (0.625, 0.375)
  # has entropy 0.662 and information 0.470, 0.981: token 0 comes first and
  # alone reaches 0.5 (without top-k, tokens 1 and 0 are kept).
  assert kept(sampling.SamplingOptions(top_k=2, typical_p=0.5)) == [
      True, False, False, False]
  assert kept(sampling.SamplingOptions(top_k=3, min_p=0.5)) == [True, True,
                                                               False, False]
  for bad in ({"min_p": -0.1}, {"typical_p": 0.0}, {"guide": "both"}):
    with pytest.raises(ValueError, match=next(iter(bad))):
      sampling.SamplingOptions(**bad)


def test_sampling_rules_apply_after_temperature(tiny_generator):
  graphdef, params, gen = tiny_generator
  cond = np.eye(3)[:2]
  for options in (sampling.SamplingOptions(min_p=0.3),
                  sampling.SamplingOptions(typical_p=0.5)):
    x, _ = gen.generate(cond, [1, 2], 48, temperature=1.5, options=options)
    _, logits = teacher_forced_logp(graphdef, params, x, cond)
    kept = sampling.filter_logits(logits.reshape(-1, 256) / 1.5, options)
    assert np.all(np.isfinite(np.take_along_axis(
        kept, np.asarray(x).reshape(-1, 1), 1)))
    assert np.mean(np.isfinite(kept)) < 0.5  # the rule did cut tokens


@pytest.mark.parametrize("above", [-1, 112])
def test_rows_unfiltered_by_the_plan_draw_as_the_full_program(tiny_generator,
                                                              above):
  """A plan whose rows are ``redrawn`` (filters off, guidance 1 there: the
  crash guard's redraw) draws those rows bit for bit as the program
  compiled without the filters at s = 1, and the others as the filtered,
  guided program: one program runs both kinds of row."""
  _, _, gen = tiny_generator
  cond, seeds, n = np.eye(3), [1, 2, 3], 320
  options = sampling.SamplingOptions(min_p=0.5, truncate_above=above,
                                     guide="logits")
  run = lambda plan: gen.segment(plan, gen.prime(plan),
                                 np.arange(plan.n_frames))[1:]
  guided = gen.plan(cond, seeds, n, 1.5, options, guidance=2.0)
  full = gen.plan(cond, seeds, n, 1.5, dataclasses.replace(options, min_p=0.0),
                  guidance=1.0)
  redrawn_B = np.array([False, True, False])
  merged = guided.redrawn(redrawn_B, full.scales_BxMxT)
  (x_g, logp_g), (x_f, logp_f), (x_m, logp_m) = (
      [np.asarray(a) for a in run(p)] for p in (guided, full, merged))
  assert np.mean(x_g[1] != x_f[1]) > 0.5  # the two programs differ there
  np.testing.assert_array_equal(x_m[redrawn_B], x_f[redrawn_B])
  np.testing.assert_array_equal(x_m[~redrawn_B], x_g[~redrawn_B])
  np.testing.assert_array_equal(logp_m[redrawn_B], logp_f[redrawn_B])
  np.testing.assert_array_equal(logp_m[~redrawn_B], logp_g[~redrawn_B])


def test_truncate_above_filters_only_the_loud_steps(tiny_generator):
  """With ``truncate_above`` the rule cuts the draw only at the steps whose
  previous FS(1) samples reach more than that many levels from the centre
  (the audio starts from silence); the quiet steps draw from the full
  distribution. -1 is the plain filtered sampling and a threshold no sample
  passes (Q / 2) unfiltered sampling, bit for bit."""
  graphdef, params, gen = tiny_generator
  cond, seeds, fs1, centre = np.eye(3)[:2], [1, 2], 4, audio.q_zero(256)
  # The randomised model's audio spans the range: its peaks over FS(1)
  # samples lie at about 105 to 122 levels, so 112 splits the steps.
  rule, threshold = {"min_p": 0.5}, 112
  options = lambda **o: sampling.SamplingOptions(**o)
  x, _ = gen.generate(cond, seeds, 256, temperature=1.5,
                      options=options(truncate_above=threshold, **rule))
  _, logits = teacher_forced_logp(graphdef, params, x, cond)
  kept_BxSxQ = np.isfinite(sampling.filter_logits(
      logits.reshape(-1, 256) / 1.5, options(**rule))).reshape(2, -1, 256)
  drawn_kept_BxS = np.take_along_axis(kept_BxSxQ, x[..., None], -1)[..., 0]
  before_BxSxL = np.lib.stride_tricks.sliding_window_view(
      np.concatenate([np.full((2, fs1), centre), x], 1), fs1, 1)[:, :-1]
  loud_BxS = np.abs(before_BxSxL - centre).max(-1) > threshold
  assert 0.2 < loud_BxS.mean() < 0.8
  assert drawn_kept_BxS[loud_BxS].all()
  assert not drawn_kept_BxS[~loud_BxS].all()  # full draws leave the kept set
  for above, same in ((-1, rule), (128, {})):
    gated, gated_logp = gen.generate(cond, seeds, 64, temperature=1.5,
                                     options=options(truncate_above=above,
                                                     **rule))
    plain, plain_logp = gen.generate(cond, seeds, 64, temperature=1.5,
                                     options=options(**same))
    np.testing.assert_array_equal(gated, plain)
    np.testing.assert_array_equal(gated_logp, plain_logp)
  with pytest.raises(ValueError, match="truncate_above=-2"):
    options(truncate_above=-2)


def test_priming_continues_the_audio(tiny_generator):
  graphdef, params, gen = tiny_generator
  cond = np.eye(3)[:1]
  prime = jax.random.randint(jax.random.key(3), (1, 40), 0, 256)
  x, logp = gen.generate(cond, [4], 32, prime_BxP=prime)
  # A prime of 40 samples is padded with 8 samples of silence to 48 = 3 x 16.
  padded = jnp.concatenate([jnp.full((1, 8), 128, jnp.int32), prime], 1)
  expected, _ = teacher_forced_logp(graphdef, params, x, cond, padded)
  np.testing.assert_allclose(logp, expected, atol=1e-4)
  y, _ = gen.generate(cond, [4], 32)
  assert np.mean(x != y) > 0.5  # the prime changed what follows


def test_condition_changes_output_and_schedule_and_segments(tiny_generator):
  graphdef, params, gen = tiny_generator
  a, _ = gen.generate(np.eye(3)[[0]], [1], 64)
  b, _ = gen.generate(np.eye(3)[[1]], [1], 64)
  # Same Gumbel noise, other condition: many samples differ.
  assert np.mean(a != b) > 0.1
  # A schedule: class 0 for two top frames, then class 1 for two.
  schedule = np.eye(3)[[0, 0, 1, 1]][None]
  x, logp = gen.generate(schedule, [1], 64)
  expected, _ = teacher_forced_logp(graphdef, params, x, schedule)
  np.testing.assert_allclose(logp, expected, atol=1e-4)
  np.testing.assert_array_equal(x[:, :32], a[:, :32])
  # Segments of 16 samples give exactly the one-call result.
  pieces = list(gen.segments(np.eye(3)[[0]], [1], 64, segment_samples=16))
  assert len(pieces) == 4
  np.testing.assert_array_equal(np.concatenate([s for s, _ in pieces], 1), a)


def test_bad_inputs(tiny_generator):
  _, _, gen = tiny_generator
  with pytest.raises(ValueError, match="condition of shape"):
    gen.generate(np.ones((1, 2)), [1], 16)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    gen.generate(np.eye(3)[:1], [1], 16, temperature=0.0)
  with pytest.raises(ValueError, match="schedule has 1 vectors"):
    gen.generate(np.eye(3)[None, :1], [1], 32)


@pytest.fixture(scope="module")
def guided_generator():
  """A model whose null condition is learned (and random here), so the null
  passes must read it from the model."""
  cfg = M.ModelConfig(frame_sizes=(4, 4, 16), dim=24, cond_dim=3, n_rnn=2,
                      null_cond="learned")
  graphdef, params = M.build(cfg, 0)
  params = randomize(params, 1, scale=0.2)
  return graphdef, params, sampling.Generator(graphdef, params)


def guided_reference(graphdef, params, x_BxN, conds, scales_BxM, guide):
  """Guided logits (B, N, Q) for every prefix of x_BxN (after q_zero
  silence), from the teacher-forced forward under each condition component
  (conds: M arrays (B, C)) and the null condition, combined as
  ``null + sum_i s_i (v_i - null)`` on the logits or on the tier-2 vectors
  (scales (B, M), or (B, M, N) one per sample)."""
  m = M.bind(graphdef, params)
  b, lookback, fs1 = x_BxN.shape[0], m.cfg.lookback, m.cfg.frame_sizes[0]
  x = jnp.concatenate([jnp.full((b, lookback), 128, jnp.int32),
                       jnp.asarray(x_BxN)], axis=1)
  carry = m.initial_carry(b)
  conds = list(conds) + [m.null_condition(b)]

  scales = jnp.asarray(scales_BxM)  # (B, M), or (B, M, N) per sample
  scales_BxMxNx1 = (scales[:, :, None, None] if scales.ndim == 2
                    else scales[..., None])

  def combine(v):
    return v[-1] + sum(scales_BxMxNx1[:, i] * (v[i] - v[-1])
                       for i in range(len(v) - 1))

  if guide == "logits":
    return combine([forward_logits(graphdef, params, x, c) for c in conds])
  c_BxNxD = combine([m.frame_tiers_forward(x, c, carry)[0] for c in conds])
  return m.mlp.head(m.mlp.features(x[:, lookback - fs1:-1]), c_BxNxD)


def guided(guide, **options):
  return sampling.SamplingOptions(guide=guide, **options)


def test_guidance_one_is_plain_sampling_bit_for_bit(guided_generator):
  graphdef, params, gen = guided_generator
  cond, seeds, t = np.eye(3)[[0, 2]], [7, 8], [0.8, 1.3]
  plain_x, plain_logp = gen.generate(cond, seeds, 64, temperature=t)
  for guide in ("logits", "cond_vectors"):
    x, logp = gen.generate(cond, seeds, 64, temperature=t,
                           options=guided(guide), guidance=[1.0, 3.0])
    np.testing.assert_array_equal(x[0], plain_x[0])
    np.testing.assert_array_equal(logp[0], plain_logp[0])
    assert np.mean(x[1] != plain_x[1]) > 0.2  # guidance 3 changes the audio
  # Unguided, the programs run one pass per row; guided, two.
  state = gen.prime(gen.plan(cond, seeds, 64))
  assert state.last_frame_BxL.shape[0] == 2
  state = gen.prime(gen.plan(cond, seeds, 64, options=guided("logits")))
  assert state.last_frame_BxL.shape[0] == 4


@pytest.mark.parametrize("guide", ["logits", "cond_vectors"])
def test_guided_generation_equals_the_step_by_step_reference(
    guided_generator, guide, segment_traces):
  graphdef, params, gen = guided_generator
  cond = np.eye(3)[[0, 1, 2]]
  guidance = np.array([0.0, 2.5, -1.0], np.float32)  # 0: the null alone
  x, logp = gen.generate(cond, [1, 2, 3], 64, temperature=[0.9, 1.2, 1.0],
                         options=guided(guide), guidance=guidance)
  logits = guided_reference(graphdef, params, x, [cond], guidance[:, None],
                            guide)
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None],
                                 -1)[..., 0]
  # The step path and the windowed forward sum in other orders (float32):
  # about 1e-6 apart in log-probabilities of up to 8, with the guidance
  # scales (|s| + |1 - s| <= 4) amplifying the logits' differences; 1e-4 is
  # the bound of the unguided teacher-forced tests. A wrong null condition
  # (zeros) is 0.5 off.
  np.testing.assert_allclose(logp, expected, atol=1e-4)
  greedy, _ = gen.generate(cond, [4, 5, 6], 64, options=guided(guide, top_k=1),
                           guidance=guidance)
  logits = guided_reference(graphdef, params, greedy, [cond],
                            guidance[:, None], guide)
  np.testing.assert_array_equal(greedy, np.argmax(logits, axis=-1))
  x2, _ = gen.generate(cond, [1, 2, 3], 64, temperature=[0.9, 1.2, 1.0],
                       options=guided(guide), guidance=guidance[::-1])
  assert len(segment_traces) == 2  # sampled and greedy; new scales: no trace
  assert np.mean(x2[0] != x[0]) > 0.2


def test_a_mix_of_two_conditions_equals_the_reference(guided_generator):
  graphdef, params, gen = guided_generator
  components = np.eye(3)[[[0, 1], [2, 0]]]  # (B, M, C)
  weights = np.array([[0.5, 0.5], [1.0, -0.5]], np.float32)
  guidance = np.array([2.0, 1.5], np.float32)
  x, logp = gen.generate(components, [1, 2], 64, options=guided("logits"),
                         guidance=guidance, mix_weights=weights)
  logits = guided_reference(graphdef, params, x, [components[:, 0],
                                                  components[:, 1]],
                            guidance[:, None] * weights, "logits")
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None],
                                 -1)[..., 0]
  np.testing.assert_allclose(logp, expected, atol=1e-4)
  # Weights (1, 0) are the first condition alone, bit for bit.
  alone, alone_logp = gen.generate(
      components, [1, 2], 64, options=guided("logits"),
      mix_weights=[[1.0, 0.0], [1.0, 0.0]])
  plain, plain_logp = gen.generate(components[:, 0], [1, 2], 64)
  np.testing.assert_array_equal(alone, plain)
  np.testing.assert_array_equal(alone_logp, plain_logp)


def test_a_morph_between_mixes_equals_the_reference(guided_generator):
  """Mix weights per top frame (B, M, N): each frame's samples follow that
  frame's weights, also across segments; weights constant over the frames
  are the (B, M) mix, bit for bit."""
  graphdef, params, gen = guided_generator
  components = np.eye(3)[[[0, 1], [2, 0]]]  # (B, M, C)
  ramp_N = np.linspace(0, 1, 4, dtype=np.float32)  # 64 samples: 4 top frames
  weights_BxMxN = np.stack([np.stack([1 - ramp_N, ramp_N]),
                            np.array([[1, 1, 0, 0], [0, 0, 1, 1]],
                                     np.float32)])
  guidance = np.array([1.0, 2.0], np.float32)
  x, logp = gen.generate(components, [1, 2], 64, options=guided("logits"),
                         guidance=guidance, mix_weights=weights_BxMxN)
  lookback = M.bind(graphdef, params).cfg.lookback
  scales_BxMxS = guidance[:, None, None] * np.repeat(weights_BxMxN, lookback,
                                                     axis=2)
  logits = guided_reference(graphdef, params, x, [components[:, 0],
                                                  components[:, 1]],
                            scales_BxMxS, "logits")
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None],
                                 -1)[..., 0]
  np.testing.assert_allclose(logp, expected, atol=1e-4)  # as the mix test
  pieces = list(gen.segments(components, [1, 2], 64, options=guided("logits"),
                             guidance=guidance, mix_weights=weights_BxMxN,
                             segment_samples=lookback))
  np.testing.assert_array_equal(np.concatenate([p for p, _ in pieces], 1), x)
  held = np.array([[0.5, 0.5], [1.0, -0.5]], np.float32)
  runs = [gen.generate(components, [1, 2], 64, options=guided("logits"),
                       mix_weights=w)
          for w in (held, np.repeat(held[:, :, None], 4, axis=2))]
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  with pytest.raises(ValueError, match="mix weight schedule has 3 vectors"):
    gen.generate(components, [1, 2], 64, options=guided("logits"),
                 mix_weights=weights_BxMxN[:, :, :3])


def test_experts_morph_conditions():
  """An experts morph gives each class of its keyframes a component whose
  weight per top frame is that class's interpolated entry; other rows of the
  batch keep constant weights; a vector morph cannot join a mix."""
  a, b, c = np.eye(3)
  morph = outputs.Row("m", tuple(a), 0, 1.0, schedule=(
      (0.0, tuple(a)), (1.0, tuple(0.5 * a + 0.5 * b))), morph_mix="experts")
  mix = outputs.Row("x", tuple(0.5 * b + 0.5 * c), 1, 1.0, mix=(
      ("b", 0.5, tuple(b)), ("c", 0.5, tuple(c))))
  plain = outputs.Row("c", tuple(c), 2, 1.0)
  cond_BxMxC, weights_BxMxN = outputs.generator_conditions(
      [morph, mix, plain], 3, 5, 0.25)
  np.testing.assert_array_equal(cond_BxMxC[0], [a, b])
  np.testing.assert_allclose(weights_BxMxN[0], [[1, 0.875, 0.75, 0.625, 0.5],
                                                [0, 0.125, 0.25, 0.375, 0.5]])
  np.testing.assert_array_equal(cond_BxMxC[1], [b, c])
  np.testing.assert_array_equal(weights_BxMxN[1], np.full((2, 5), 0.5))
  np.testing.assert_array_equal(weights_BxMxN[2], [[1] * 5, [0] * 5])
  assert morph.guided and morph.null_weight == 0.0
  assert dataclasses.replace(morph, guidance=2.0).null_weight == -1.0
  vector = dataclasses.replace(morph, morph_mix="vector")
  assert not vector.guided
  with pytest.raises(ValueError, match="cannot share a batch"):
    outputs.generator_conditions([vector, mix], 3, 5, 0.25)


def test_guidance_errors(guided_generator):
  _, _, gen = guided_generator
  with pytest.raises(ValueError, match="guide='logits'"):
    gen.generate(np.eye(3)[:1], [1], 16, guidance=2.0)
  with pytest.raises(ValueError,
                     match=r"mix of 2 components needs .*\(1, 2, 3\)"):
    gen.generate(np.eye(3)[:1], [1], 16, options=guided("logits"),
                 mix_weights=[[0.5, 0.5]])
  with pytest.raises(ValueError, match="finite"):
    gen.generate(np.eye(3)[:1], [1], 16, options=guided("logits"),
                 guidance=np.inf)


@pytest.mark.parametrize("guide", ["off", "cond_vectors"])
def test_teacher_forcing_scores_what_generation_drew(guided_generator, guide):
  """``score`` fed a generated sequence gives each sample the
  log-probability generation gave it (the same program, given samples in
  place of drawn ones), with or without guidance, and leaves the state that
  generating further starts from."""
  _, _, gen = guided_generator
  cond, seeds = np.eye(3)[[0, 2]], [5, 6]
  options = sampling.SamplingOptions(guide=guide)
  guidance = 1.0 if guide == "off" else [2.0, 0.5]
  x, logp = gen.generate(cond, seeds, 64, options=options, guidance=guidance)
  plan = gen.plan(cond, seeds, 32, options=options, guidance=guidance)
  state, logp_BxSxQ = gen.score(plan, gen.prime(plan), np.arange(2),
                                x[:, :32])
  assert logp_BxSxQ.shape == (2, 32, 256)
  np.testing.assert_allclose(
      np.take_along_axis(logp_BxSxQ, x[:, :32, None], -1)[..., 0],
      logp[:, :32], rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.exp(logp_BxSxQ).sum(-1), 1.0, atol=1e-5)
  _, rest_BxS, rest_logp_BxS = gen.segment(plan, state, np.arange(2, 4),
                                           start_index=32)
  np.testing.assert_array_equal(rest_BxS, x[:, 32:])
  np.testing.assert_allclose(rest_logp_BxS, logp[:, 32:], rtol=0, atol=1e-6)


def test_guided_generation_sharded_equals_one_device(guided_generator):
  graphdef, params, gen = guided_generator
  cond, guidance = np.eye(3)[[0, 1, 1]], [1.0, 2.0, 0.5]
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 4
  one = gen.generate(cond, [1, 2, 3], 48, options=guided("logits"),
                     guidance=guidance)
  many = sampling.Generator(graphdef, params, mesh).generate(
      cond, [1, 2, 3], 48, options=guided("logits"), guidance=guidance)
  np.testing.assert_array_equal(many[0], one[0])
  np.testing.assert_allclose(many[1], one[1], atol=1e-5)


def test_nothing_to_generate_or_a_non_finite_condition_is_refused(
    tiny_generator):
  _, _, gen = tiny_generator
  with pytest.raises(ValueError, match=r"num_samples=0: give 1 to 1073741824"):
    gen.generate(np.eye(3)[:1], [1], 0)
  with pytest.raises(ValueError, match="no rows to generate"):
    gen.generate(np.zeros((0, 3)), [], 16)
  with pytest.raises(ValueError, match="condition vectors must be finite"):
    gen.generate(np.array([[np.nan, 1.0, 0.0]]), [1], 16)


def test_memory_of_a_long_generation_does_not_grow_with_its_length(
    tiny_generator):
  """The longest generation holds one segment's worth of its condition:
  broadcast over all 2^30 / 16 top frames it would be 800 MB a row."""
  _, _, gen = tiny_generator
  held = lambda: sum(a.nbytes for a in jax.live_arrays())
  before = held()
  segments = gen.segments(np.eye(3)[:2], [1, 2], sampling.MAX_SAMPLES,
                          segment_samples=64)
  samples_BxS, _ = next(segments)
  assert samples_BxS.shape == (2, 64)
  assert held() - before < 1e6
  segments.close()


@pytest.mark.slow
def test_sample_cli_end_to_end(trained_run, tmp_path):
  out = tmp_path / "out"
  done = subprocess.run(
      [sys.executable, str(REPO / "sample.py"), f"--workdir={trained_run}",
       "--cond", "bells,wind", "--num", "2", "--seconds", "0.1",
       "--temperature", "0.9", "--seed", "5", "--out", str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  wavs = sorted(out.glob("*.wav"))
  assert [w.name for w in wavs] == [
      "bells_seed5_t0.9.wav", "bells_seed6_t0.9.wav", "wind_seed7_t0.9.wav",
      "wind_seed8_t0.9.wav"]
  for wav in wavs:
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 1600)
    assert info.subtype == "PCM_16"
    side = json.loads(wav.with_suffix(".json").read_text())
    assert side["checkpoint_step"] == W and len(side["config_sha256"]) == 64
    assert side["temperature"] == 0.9 and side["log_likelihood_nats"] < 0
    assert side["condition_vector"] in ([1.0, 0, 0], [0, 0, 1.0])
  assert (out / "spectrograms.png").stat().st_size > 10_000


@pytest.mark.slow
def test_sample_cli_defaults_come_from_the_runs_sample_section(trained_run,
                                                               tmp_path):
  """A recipe records its sampling settings in config.sample; sample.py
  uses them unless a flag says otherwise."""
  from csrnn_jax import configlib
  from csrnn_jax import rundir
  run = tmp_path / "run"
  shutil.copytree(trained_run, run)
  config = configlib.replace(rundir.read_config(str(run)), **{
      "sample.temperature": 0.8, "sample.min_p": 0.05, "sample.denoise": 2.0,
      "sample.crash_guard": True, "sample.guard_rewinds": 5,
      "sample.guard_backoff": 0.25})
  (run / "config.json").write_text(configlib.to_json(config))
  out = tmp_path / "out"
  assert sample_cli.main([f"--workdir={run}", "--cond", "bells", "--seconds",
                          "0.05", "--out", str(out)]) == 0
  side = json.loads(
      (out / "bells_seed0_t0.8_minp0.05_guard_dn2.json").read_text())
  assert side["temperature"] == 0.8 and side["min_p"] == 0.05
  assert side["denoise"] == 2.0
  assert side["crash_guard"]["max_rewinds"] == 5
  assert side["crash_guard"]["backoff_seconds"] == 0.25
  assert sample_cli.main([f"--workdir={run}", "--cond", "bells", "--seconds",
                          "0.05", "--temperature", "1", "--min-p", "0",
                          "--denoise", "0", "--guard-rewinds", "3",
                          "--guard-backoff", "0", "--out", str(out)]) == 0
  side = json.loads((out / "bells_seed0_t1_guard.json").read_text())
  assert side["temperature"] == 1.0 and side["min_p"] == 0.0
  assert side["denoise"] == 0.0
  assert side["crash_guard"]["max_rewinds"] == 3
  assert side["crash_guard"]["backoff_seconds"] == 0.0


@pytest.mark.slow
def test_sample_cli_prime_and_mix(trained_run, tmp_path):
  prime = tmp_path / "prime.wav"
  t = np.arange(3000) / 16000
  audio.write_wav(str(prime), 0.5 * np.sin(2 * np.pi * 220 * t), 16000)
  out = tmp_path / "mix"
  code = sample_cli.main([
      f"--workdir={trained_run}", "--cond-vector", "0,1,1",
      "--seconds", "0.05", "--prime", str(prime), "--top-p", "0.95",
      "--segment-seconds", "0.02", "--out", str(out)])
  assert code == 0
  wav, = out.glob("mix-0-1-1_seed0_t1_p0.95_prime*.wav")
  side = json.loads(wav.with_suffix(".json").read_text())
  assert side["primed"] and side["top_p"] == 0.95
  assert sf.info(str(wav)).frames == 800


@pytest.mark.slow
def test_sample_cli_guidance_and_cond_mix(trained_run, tmp_path, capsys):
  out = tmp_path / "guided"
  code = sample_cli.main([
      f"--workdir={trained_run}", "--cond", "bells", "--cond-mix",
      "bells=0.5,wind=0.5", "--guidance", "1,3", "--min-p", "0.01",
      "--seconds", "0.02", "--out", str(out)])
  assert code == 0
  err = capsys.readouterr().err
  assert err.count("warning:") == 1 and "cond_dropout=0" in err
  # A mix whose weights sum to 1 at s = 1 never reads the null condition.
  assert sample_cli.main([
      f"--workdir={trained_run}", "--cond-mix", "bells=0.25,wind=0.75",
      "--seconds", "0.02", "--out", str(tmp_path / "mean")]) == 0
  assert "warning:" not in capsys.readouterr().err
  wavs = sorted(w.name for w in out.glob("*.wav"))
  # The plain row of a guided batch is plain sampling: no guidance suffix.
  assert wavs == ["bells0.5+wind0.5_seed1_t1_g3_minp0.01.wav",
                  "bells_seed0_t1_minp0.01.wav"]
  mix = json.loads((out / wavs[0]).with_suffix(".json").read_text())
  assert mix["cond_mix"] == {"bells": 0.5, "wind": 0.5}
  assert mix["condition_vector"] == [0.5, 0.0, 0.5]
  assert (mix["guidance"], mix["guide"], mix["min_p"]) == (3.0, "logits", 0.01)
  plain = json.loads((out / wavs[1]).with_suffix(".json").read_text())
  assert "cond_mix" not in plain and plain["guidance"] == 1.0


def test_file_names_encode_every_setting_that_changes_the_audio():
  row = outputs.Row("happy", (1.0, 0.0), 3, 1.0)
  stem = lambda r=row, **o: outputs.file_stem(
      r, sampling.SamplingOptions(**o.pop("options", {})), **o)
  assert stem() == "happy_seed3_t1"
  guided_row = dataclasses.replace(row, guidance=3.0)
  assert stem(guided_row) == "happy_seed3_t1_g3"
  assert stem(guided_row, options={"guide": "cond_vectors"}) == (
      "happy_seed3_t1_g3cv")
  assert stem(options={"top_k": 8, "top_p": 0.9, "min_p": 0.1,
                       "typical_p": 0.95}, start="zeros", guarded=True) == (
      "happy_seed3_t1_k8_p0.9_minp0.1_typ0.95_zeros_guard")
  assert stem(options={"min_p": 0.1, "truncate_above": 12}) == (
      "happy_seed3_t1_minp0.1_above12")
  assert stem(options={"truncate_above": 12}) == "happy_seed3_t1"  # no rule
  assert stem(options={"min_p": 0.1}, guarded=True,
              redraw_unfiltered=True) == "happy_seed3_t1_minp0.1_guardfull"
  assert stem(guarded=True, redraw_unfiltered=True) == "happy_seed3_t1_guard"
  assert stem(guided_row, guarded=True, redraw_unfiltered=True) == (
      "happy_seed3_t1_g3_guardfull")  # the guard redraws at s = 1
  assert stem(guarded=True, denoise=2.5) == "happy_seed3_t1_guard_dn2.5"
  primes = {stem(prime_P=np.arange(n)) for n in (10, 11)}
  assert len(primes) == 2 and all("_prime" in p for p in primes)


@pytest.mark.parametrize("args,message", [
    (["--cond", "happy"], "class 'happy' is not one of this run's classes: "
                          "bells, organ, wind"),
    (["--cond-vector", "1,0"], "--cond-vector has 2 values; this run's "
                               "condition vectors have 3"),
    (["--num", "2", "--temperature", "1,0.5,0.7"], "--temperature has 3"),
    (["--num", "2", "--guidance", "1,2,3"], "--guidance has 3"),
    (["--cond-mix", "bells=0.5,happy=0.5"], "class 'happy' is not one of "
                                            "this run's classes: bells, "
                                            "organ, wind"),
    (["--cond", "bells", "--guidance", "2", "--top-p", "0"], "top_p=0.0"),
    (["--step", "999"], f"no checkpoint at step 999 .* available: {W}"),
    (["--guard-rewinds", "-1"], "--guard-rewinds -1: give a count >= 0"),
    (["--guard-backoff", "nan"], "--guard-backoff nan: give seconds >= 0"),
])
def test_sample_cli_errors(trained_run, capsys, args, message):
  assert sample_cli.main([f"--workdir={trained_run}"] + args) == 2
  assert pytest.importorskip("re").search(message, capsys.readouterr().err)


@pytest.mark.parametrize("mix", ["bells=0.5,wind", "bells=inf",
                                 "bells=0.5,bells=0.5"])
def test_sample_cli_cond_mix_syntax(trained_run, mix):
  with pytest.raises(SystemExit, match="--cond-mix"):
    sample_cli.main([f"--workdir={trained_run}", "--cond-mix", mix])


def test_sample_cli_workdir_without_checkpoint(tmp_path, capsys):
  assert sample_cli.main([f"--workdir={tmp_path}"]) == 2
  assert "not a run directory" in capsys.readouterr().err


@pytest.fixture(scope="module", params=[
    dict(cell="lstm", n_rnn=2), dict(skip_conn=True),
    dict(cell="lstm", skip_conn=True, null_cond="learned")],
                ids=["lstm", "skip", "lstm-skip"])
def option_generator(request):
  """4 tiers, so that two frame tiers have skip connections."""
  cfg = M.ModelConfig(frame_sizes=(2, 2, 4, 8), dim=16, cond_dim=3,
                      **request.param)
  graphdef, params = M.build(cfg, 0)
  params = randomize(params, 2, scale=0.2)  # the skip weights too
  return graphdef, params, sampling.Generator(graphdef, params)


def test_lstm_and_skip_generation_equals_teacher_forcing(option_generator):
  """The generator carries the LSTM's (h, c) and each tier's current skip
  term down to the samples: its log-probabilities are the training
  forward's, after a prime and across segments."""
  graphdef, params, gen = option_generator
  cond, seeds, temperature = np.eye(3)[[0, 2]], [7, 8], [0.8, 1.3]
  prime = jax.random.randint(jax.random.key(3), (2, 12), 0, 256)
  x, logp = gen.generate(cond, seeds, 48, temperature=temperature,
                         prime_BxP=prime)
  # A prime of 12 samples is padded with 4 samples of silence to 16 = 2 x 8.
  padded = jnp.concatenate([jnp.full((2, 4), 128, jnp.int32), prime], 1)
  expected, _ = teacher_forced_logp(graphdef, params, x, cond, padded)
  # As the GRU's tests: float32 in two summation orders, 1e-4.
  np.testing.assert_allclose(logp, expected, atol=1e-4)
  pieces = list(gen.segments(cond, seeds, 48, temperature=temperature,
                             prime_BxP=prime, segment_samples=16))
  assert len(pieces) == 3
  np.testing.assert_array_equal(np.concatenate([s for s, _ in pieces], 1), x)


def test_lstm_and_skip_guidance_on_the_mlp_input(option_generator):
  """Guidance on the vectors entering the MLP combines them with their skip
  terms (the reference combines ``frame_tiers_forward``'s output)."""
  graphdef, params, gen = option_generator
  cond, guidance = np.eye(3)[[0, 1]], np.array([2.0, 0.5], np.float32)
  x, logp = gen.generate(cond, [1, 2], 32, options=guided("cond_vectors"),
                         guidance=guidance)
  logits = guided_reference(graphdef, params, x, [cond], guidance[:, None],
                            "cond_vectors")
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None],
                                 -1)[..., 0]
  np.testing.assert_allclose(logp, expected, atol=1e-4)


def test_lstm_generation_sharded_equals_one_device(option_generator):
  graphdef, params, gen = option_generator
  cond = np.eye(3)[[0, 1, 1]]
  one = gen.generate(cond, [1, 2, 3], 32)
  many = sampling.Generator(graphdef, params, sharding.make_mesh()).generate(
      cond, [1, 2, 3], 32)
  np.testing.assert_array_equal(many[0], one[0])
  np.testing.assert_allclose(many[1], one[1], atol=1e-5)


def test_morph_schedule_gives_each_top_frame_its_condition():
  """Frames of 0.25 s: keyframes bells@0, wind@1 and a mix at 2 s."""
  bells, wind = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
  mix = (0.5, 0.5, 0.0)
  row = outputs.Row("m", bells, 0, 1.0,
                    schedule=((0.0, bells), (1.0, wind), (2.0, mix)))
  linear = outputs.schedule_vectors(row, 12, 0.25)
  np.testing.assert_allclose(linear[[0, 2, 4, 6, 8, 11]], [
      bells, (0.5, 0, 0.5), wind, (0.25, 0.25, 0.5), mix, mix])
  step = outputs.schedule_vectors(dataclasses.replace(row, morph="step"), 12,
                                  0.25)
  np.testing.assert_array_equal(step[[0, 3, 4, 7, 8, 11]],
                                [bells, bells, wind, wind, mix, mix])
  late = dataclasses.replace(row, schedule=((0.5, bells), (1.0, wind)))
  np.testing.assert_allclose(outputs.schedule_vectors(late, 5, 0.25)[:3],
                             [bells, bells, bells])  # held before the first


@pytest.mark.slow
def test_sample_cli_morph_with_guidance(trained_run, tmp_path):
  """A constant schedule is the plain condition, bit for bit (plain and
  guided); a morph changes the audio and writes the judge's figure."""
  args = [f"--workdir={trained_run}", "--seconds", "0.05", "--guidance", "2"]
  assert sample_cli.main(args + ["--cond", "bells", "--out",
                                 str(tmp_path / "plain")]) == 0
  assert sample_cli.main(args + [
      "--cond-schedule", "bells@0,bells@0.02",
      "--cond-schedule", "bells@0,wind=0.5+organ=0.5@0.02", "--morph", "step",
      "--out", str(tmp_path / "morph")]) == 0
  plain, = (tmp_path / "plain").glob("*.wav")
  constant, morph = sorted((tmp_path / "morph").glob("*.wav"))
  assert constant.name == "morph-step-bells@0s-bells@0.02s_seed0_t1_g2.wav"
  assert morph.name == ("morph-step-bells@0s-wind0.5+organ0.5@0.02s_seed1_t1"
                        "_g2.wav")
  wave = lambda p: sf.read(str(p), dtype="int16")[0]
  np.testing.assert_array_equal(wave(constant), wave(plain))
  side = json.loads(morph.with_suffix(".json").read_text())
  assert side["cond_schedule"] == [[0.0, [1.0, 0.0, 0.0]],
                                   [0.02, [0.0, 0.5, 0.5]]]
  assert side["morph"] == "step" and side["guidance"] == 2.0
  assert (tmp_path / "morph" / "class_probabilities.png").stat().st_size > 5000


@pytest.mark.slow
def test_sample_cli_experts_morph_with_the_crash_guard(trained_run, tmp_path):
  """--morph-mix experts: a one-class schedule at guidance 1 is the plain
  condition, bit for bit; a morph between classes differs from the vector
  morph; both through the crash guard, which follows each row's frames."""
  args = [f"--workdir={trained_run}", "--seconds", "0.05", "--crash-guard"]
  assert sample_cli.main(args + ["--cond", "bells", "--out",
                                 str(tmp_path / "plain")]) == 0
  morphs = ["--cond-schedule", "bells@0,bells@0.02", "--cond-schedule",
            "wind@0,organ@0.03"]
  for mode in ("experts", "vector"):
    assert sample_cli.main(args + morphs + ["--morph-mix", mode, "--out",
                                            str(tmp_path / mode)]) == 0
  plain, = (tmp_path / "plain").glob("*.wav")
  constant, morph = sorted((tmp_path / "experts").glob("*.wav"))
  assert constant.name == ("morph-linear-experts-bells@0s-bells@0.02s_seed0_t1"
                           "_g1_guard.wav")
  wave = lambda p: sf.read(str(p), dtype="int16")[0]
  np.testing.assert_array_equal(wave(constant), wave(plain))
  side = json.loads(morph.with_suffix(".json").read_text())
  assert side["morph_mix"] == "experts" and side["crash_guard"] is not None
  _, vector = sorted((tmp_path / "vector").glob("*.wav"))
  assert vector.name == "morph-linear-wind@0s-organ@0.03s_seed1_t1_guard.wav"
  assert np.mean(wave(vector) != wave(morph)) > 0.2


@pytest.mark.parametrize("spec", ["bells", "bells@x", "bells@1,wind@0.5",
                                  "bells@-1", "bells=a@0"])
def test_sample_cli_cond_schedule_syntax(trained_run, spec):
  with pytest.raises(SystemExit, match="--cond-schedule"):
    sample_cli.main([f"--workdir={trained_run}", "--cond-schedule", spec])


@pytest.mark.slow
def test_sample_cli_splits_rows_over_devices_like_one_device(trained_run,
                                                             tmp_path):
  """In this process sample.py sees 4 CPU devices and splits its 3 rows
  (padded to 4) over them; a process with 1 device writes the same wavs."""
  assert jax.device_count() == 4
  args = ["--cond", "bells,wind,organ", "--seconds", "0.05", "--guidance",
          "1,2,1"]
  assert sample_cli.main([f"--workdir={trained_run}", *args, "--out",
                          str(tmp_path / "four")]) == 0
  one = subprocess.run(
      [sys.executable, str(REPO / "sample.py"), f"--workdir={trained_run}",
       *args, "--out", str(tmp_path / "one")], cwd=REPO, capture_output=True,
      text=True, timeout=300, env={
          **__import__("os").environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert one.returncode == 0, one.stderr[-2000:]
  four = sorted((tmp_path / "four").glob("*.wav"))
  assert [p.name for p in four] == sorted(
      p.name for p in (tmp_path / "one").glob("*.wav")) and len(four) == 3
  for path in four:
    assert path.read_bytes() == (tmp_path / "one" / path.name).read_bytes()
