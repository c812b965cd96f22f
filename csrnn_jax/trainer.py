"""Training: ``train_and_evaluate(config, workdir)`` (docs/design.md §4).

A chunk batch (B chunks of, say, 8 s) is cut into TBPTT windows; all windows
run inside one jitted ``lax.scan`` with one Adam step per window, the hidden
state carried from window to window (gradients stop at window boundaries) and
reset to h0 at the first window. ``train.scan_windows=False`` runs the same
per-window function one dispatch at a time (debugging, reference parity).

Checkpoints are written at chunk-batch boundaries with the data-stream
position, so a killed run resumes exactly where its last checkpoint was: on
CPU the parameters end bitwise equal to an uninterrupted run's. Nothing is
saved from a chunk batch that diverged (``divergence``): the run stops and
its last good checkpoint stays the latest. One trainer at a time holds a
workdir (``rundir.lock``), and a resume checks that the dataset
is the one the run was trained on (its manifest's hash, ``provenance``).

Training is data parallel over every device (of every process) unless a
``mesh`` is given: see ``sharding`` and docs/scaling.md.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import re
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from csrnn_jax import augment as augment_lib
from csrnn_jax import checkpoint as checkpoint_lib
from csrnn_jax import configlib
from csrnn_jax import console
from csrnn_jax import data as data_lib
from csrnn_jax import dataset
from csrnn_jax import evaluate
from csrnn_jax import metrics as metrics_lib
from csrnn_jax import model as model_lib
from csrnn_jax import outputs
from csrnn_jax import own_state
from csrnn_jax import plots
from csrnn_jax import provenance
from csrnn_jax import rundir
from csrnn_jax import sampling
from csrnn_jax import sharding as sharding_lib

# Config sections that fix what a run computes; resuming with other values
# would silently continue a different experiment. (The dataset is checked by
# its manifest's hash: a moved dataset may resume.)
FIXED_ON_RESUME = ("model", "seed", "train.batch_size", "train.seq_len")
# A window's loss above this many times log2(Q) bits, the cost of a uniform
# guess (where an untrained model starts), is divergence: no learning run
# gets there, and a diverging one passes it long before inf.
EXPLODED_LOSS_FACTOR = 2.0
# Failed writes that leave the run directory as it was before the write.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                  errno.EPERM, errno.EFBIG)


class TrainingDiverged(FloatingPointError):
  pass


class StorageError(RuntimeError):
  """The run directory could not be written; what it held is intact."""


def learning_rate(train_cfg):
  """The step -> learning-rate schedule of ``train.lr_schedule`` (a float
  for constant and plateau, whose scale lives in the optimizer state)."""
  t = train_cfg
  if t.lr_schedule in ("constant", "plateau"):
    return t.learning_rate
  if t.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, t.learning_rate, max(t.warmup_steps, 1),
        max(t.num_steps, t.warmup_steps + 1))
  if t.lr_schedule == "exponential":  # lr * rate^((step - begin) / steps)
    return optax.exponential_decay(t.learning_rate, t.lr_decay_steps,
                                   t.lr_decay_rate, t.lr_decay_begin)
  raise ValueError(f"train.lr_schedule={t.lr_schedule!r} is unknown; allowed "
                   "values: constant, cosine, exponential, plateau")


def make_optimizer(train_cfg) -> optax.GradientTransformationExtraArgs:
  """Clipping (element-wise to [-c, c] as the reference, or global norm),
  then Adam on ``learning_rate``'s schedule. "plateau" scales Adam's updates
  by lr_plateau_factor whenever the training loss, averaged over
  lr_plateau_steps steps, has not improved for lr_plateau_patience such
  averages (optax.contrib.reduce_on_plateau; ``update`` takes value=bits)."""
  clips = {"value": lambda: optax.clip(train_cfg.clip_value),
           "global_norm": lambda: optax.clip_by_global_norm(
               train_cfg.clip_value),
           "none": optax.identity}
  if train_cfg.clip not in clips:
    raise ValueError(f"train.clip={train_cfg.clip!r} is unknown; allowed "
                     "values: value, global_norm, none")
  chain = [clips[train_cfg.clip](), optax.adam(learning_rate(train_cfg))]
  if train_cfg.lr_schedule == "plateau":
    chain.append(optax.contrib.reduce_on_plateau(
        factor=train_cfg.lr_plateau_factor,
        patience=train_cfg.lr_plateau_patience,
        accumulation_size=train_cfg.lr_plateau_steps))
  return optax.chain(*chain)


def make_window_step(graphdef, tx, lookback: int, axis_name: str | None = None,
                     augment=None):
  """One Adam step on one window: (params, opt_state, carry, reset,
  window_BxW, cond_BxC, mask_B, key, chunk_key) -> (params, opt_state, carry,
  metrics).

  With ``reset`` the carry is replaced by h0 inside the loss, so the learned
  h0 gets its gradient from the first window, as in the reference.

  ``augment`` (``augment.make``): what the model reads instead of the window
  and condition; the loss is always scored against the clean window. ``key``
  is this window's key, ``chunk_key`` the chunk batch's (the same for all its
  windows); each row draws from its own (``augment.row_keys``).

  ``axis_name``: run inside ``shard_map`` over the batch, B / D rows per
  device. Each device's loss is its rows' NLL over the whole batch's weight,
  so the sum of the devices' gradients (one all-reduce) is the whole batch's
  gradient, and every device applies the same Adam update.

  The loss is differentiated in bits per sample, as the reference's, so that
  element-wise clipping at ``train.clip_value`` clips the same gradient.
  """
  augment = augment or augment_lib.make(None)

  def loss_fn(params, carry, reset, window_BxW, cond_BxC, mask_B, key,
              chunk_key):
    m = model_lib.bind(graphdef, params)
    h0 = m.initial_carry(window_BxW.shape[0])
    carry = jax.tree_util.tree_map(lambda a, b: jnp.where(reset, a, b), h0,
                                   carry)
    rows = window_BxW.shape[0]
    inputs_BxW, cond_BxC = augment(
        m, augment_lib.row_keys(key, rows, axis_name),
        augment_lib.row_keys(chunk_key, rows, axis_name), window_BxW, cond_BxC)
    logits_BxTxQ, carry = m.forward(
        inputs_BxW, cond_BxC, carry,
        augment_lib.row_keys(key, rows, axis_name))  # model.rnn_dropout
    with jax.named_scope("nll"):
      nll_BxT = model_lib.token_nll(logits_BxTxQ, window_BxW[:, lookback:])
    weight_BxT = jnp.broadcast_to(mask_B[:, None], nll_BxT.shape)
    weight = jnp.sum(weight_BxT)
    if axis_name is not None:
      weight = jax.lax.psum(weight, axis_name)
    bits = jnp.sum(nll_BxT * weight_BxT) / jnp.maximum(weight, 1) / (
        metrics_lib.LN2)
    return bits, carry

  def step(params, opt_state, carry, reset, window_BxW, cond_BxC, mask_B,
           key, chunk_key):
    (bits, carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, carry, reset, window_BxW, cond_BxC, mask_B, key, chunk_key)
    if axis_name is not None:
      bits, grads = jax.lax.psum((bits, grads), axis_name)
    with jax.named_scope("optimizer"):
      updates, opt_state = tx.update(grads, opt_state, params,
                                     value=bits)
      params = optax.apply_updates(params, updates)
    metrics = {"bits": bits, "grad_norm": optax.tree.norm(grads)}
    return params, opt_state, jax.lax.stop_gradient(carry), metrics

  return step


def make_chunk_step(graphdef, tx, lookback: int, scan_windows: bool = True,
                    mesh=None, augment=None, own_starts: bool = False):
  """Train on every window of a chunk batch: (params, opt_state,
  windows_NxBxW, cond_BxC, mask_B, key) -> (params, opt_state, metrics of
  (N,)). Window i draws its augmentation from ``fold_in(fold_in(key, 0), i)``
  and what holds for the whole chunk batch from ``fold_in(key, 1)``.

  ``own_starts``: the step takes two more arguments, (carry, from_h0): the
  first window starts from ``carry`` (``own_state``) unless ``from_h0``
  (a bool scalar; then ``carry``'s values are not read). One program runs
  both kinds of chunk batch.

  ``scan_windows``: one jitted ``lax.scan`` (one dispatch); otherwise a Python
  loop over the same jitted window step. ``mesh``: data parallel over its
  ``'data'`` axis (see ``sharding``): params and opt_state replicated, the
  batch and the carry split on B; None: one device, no collectives.
  """
  axis_name = None if mesh is None else sharding_lib.DATA
  window_step = make_window_step(graphdef, tx, lookback, axis_name, augment)
  rows = sharding_lib.batch_spec
  rep = sharding_lib.REPLICATED
  data_parallel = functools.partial(sharding_lib.data_parallel, mesh=mesh)

  def chunk_keys(key):  # (parent of the windows' keys, the chunk batch's)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)

  def first_carry(params, batch_size):
    return model_lib.bind(graphdef, params).initial_carry(batch_size)

  start_specs = (rows(1), rep) if own_starts else ()

  if scan_windows:
    def chunk_step(params, opt_state, windows_NxBxW, cond_BxC, mask_B, key,
                   carry=None, from_h0=True):
      windows_key, chunk_key = chunk_keys(key)

      def body(state, xs):
        params, opt_state, carry = state
        index, window_BxW = xs
        params, opt_state, carry, metrics = window_step(
            params, opt_state, carry, (index == 0) & from_h0, window_BxW,
            cond_BxC, mask_B, jax.random.fold_in(windows_key, index),
            chunk_key)
        return (params, opt_state, carry), metrics

      if carry is None:
        carry = first_carry(params, windows_NxBxW.shape[1])
      steps = jnp.arange(windows_NxBxW.shape[0])
      (params, opt_state, _), metrics = jax.lax.scan(
          body, (params, opt_state, carry), (steps, windows_NxBxW))
      return params, opt_state, metrics
    return jax.jit(data_parallel(
        chunk_step,
        in_specs=(rep, rep, rows(1), rows(), rows(), rep) + start_specs,
        out_specs=(rep, rep, rep)), donate_argnums=(0, 1))

  jitted_step = jax.jit(data_parallel(
      window_step,
      in_specs=(rep, rep, rows(1), rep, rows(), rows(), rows(), rep, rep),
      out_specs=(rep, rep, rows(1), rep)))

  def chunk_step_loop(params, opt_state, windows_NxBxW, cond_BxC, mask_B, key,
                      carry=None, from_h0=True):
    windows_key, chunk_key = chunk_keys(key)
    if carry is None:
      carry = first_carry(params, windows_NxBxW.shape[1])
    per_window = []
    for index in range(windows_NxBxW.shape[0]):
      params, opt_state, carry, metrics = jitted_step(
          params, opt_state, carry, jnp.logical_and(index == 0, from_h0),
          windows_NxBxW[index], cond_BxC, mask_B,
          jax.random.fold_in(windows_key, index), chunk_key)
      per_window.append(metrics)
    stacked = jax.tree_util.tree_map(lambda *m: jnp.stack(m), *per_window)
    return params, opt_state, stacked
  return chunk_step_loop


def resolve_workdir(config, workdir: str | None) -> str:
  return workdir or config.workdir or os.path.join("runs", config.name)


def check_compatible(saved, config, workdir: str) -> None:
  """A workdir's saved config must match on everything that fixes the run."""
  for key in FIXED_ON_RESUME:
    old, new = configlib.lookup(saved, key), configlib.lookup(config, key)
    if old != new:
      raise ValueError(
          f"{workdir} holds a run with {key}={old!r}, but this config has "
          f"{key}={new!r}. Resume it with the same value, or start a new run "
          "with another --workdir.")


class Abandoned(Exception):
  """A signal cut short what was running (see ``_Stop``)."""


class _Stop:
  """The SIGINT/SIGTERM handler. The first signal stops the run after the
  chunk batch in progress: it is saved, and a validation or samples in
  progress or due are dropped. A second signal drops the chunk batch in
  progress too: the run keeps its last checkpoint. Each block a signal may
  cut short runs in ``abandonable(n)``: the n-th signal raises ``Abandoned``
  there."""

  def __init__(self, progress: console.Progress):
    self.signum, self.count, self.progress = None, 0, progress
    self.abandon_at = None  # the count that raises inside ``abandonable``

  def __call__(self, signum, frame):
    del frame
    self.signum, self.count = signum, self.count + 1
    name = signal.Signals(signum).name
    abandon = self.abandon_at is not None and self.count >= self.abandon_at
    if self.count == 1:
      self.progress.note_now(
          f"{name} received: stopping after this chunk batch and saving it "
          f"(no validation or samples); {name} again stops sooner, from the "
          "last checkpoint")
    else:
      self.progress.note_now(f"{name} again: stopping " + (
          "now" if abandon else "once the checkpoint being written is saved"))
    if abandon:
      raise Abandoned(name)

  @contextlib.contextmanager
  def abandonable(self, at: int | None):
    """Runs the block so that signal number ``at`` (None: none) cuts it
    short with ``Abandoned``."""
    if at is not None and self.count >= at:
      raise Abandoned(signal.Signals(self.signum).name)
    self.abandon_at = at
    try:
      yield
    finally:
      self.abandon_at = None


def _wait(tree) -> None:
  """Blocks until ``tree``'s arrays are computed, so that a signal handler
  can run meanwhile (in ``block_until_ready`` itself Python runs no handler
  until the whole chunk batch is done)."""
  ready = threading.Event()

  def wait():
    try:
      jax.block_until_ready(tree)
    finally:  # an error shows again when the arrays are read
      ready.set()

  threading.Thread(target=wait, daemon=True).start()
  ready.wait()


def _install_signal_handlers(flag):
  previous = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    try:
      previous[sig] = signal.signal(sig, flag)
    except ValueError:  # not the main thread: leave signals alone
      pass
  return previous


def _crossed(before: int, after: int, every: int) -> bool:
  return every > 0 and after // every > before // every


def _prepare_run(config, workdir, mesh, accept_dataset_change):
  """Open the data, check the config against the run it resumes, write
  config.json."""
  t, mcfg = config.train, config.model
  sharding_lib.check_batch_size(t.batch_size, mesh)
  stream = data_lib.BatchStream(
      config.data.dataset_dir, "train", t.batch_size, t.seq_len,
      mcfg.lookback, mcfg.q_levels, mcfg.quantization,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), prefetch=config.data.prefetch,
      preemphasis=mcfg.preemphasis)
  if os.path.exists(rundir.config_path(workdir)):
    saved = rundir.read_config(workdir)
    check_compatible(saved, config, workdir)
    provenance.check_dataset(
        workdir, config.data.dataset_dir, saved.data.dataset_dir,
        accept=accept_dataset_change, accept_flag="--accept_dataset_change",
        dir_flag="data.dataset_dir")
  if jax.process_index() == 0:
    rundir.write_config(workdir, config)
  return config, stream


def _all_finite(tree) -> jax.Array:
  """One jitted reduction: whether every float leaf of ``tree`` is finite."""
  leaves = [x for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


_all_finite_jit = jax.jit(_all_finite)


def divergence(bits_N, grad_norm_N, state_finite: bool,
               q_levels: int) -> str | None:
  """Why a chunk batch's result must not be kept, or None: a window's loss
  or gradient norm (N,) is not finite, the parameters or optimizer state
  after it are not (``state_finite``), or a loss exploded past
  ``EXPLODED_LOSS_FACTOR * log2(Q)`` bits."""
  bits_N, grad_norm_N = np.asarray(bits_N), np.asarray(grad_norm_N)
  limit = EXPLODED_LOSS_FACTOR * math.log2(q_levels)
  if not np.all(np.isfinite(bits_N)):
    return f"the training loss became {bits_N[~np.isfinite(bits_N)][0]}"
  if not np.all(np.isfinite(grad_norm_N)):
    return ("the gradient norm became "
            f"{grad_norm_N[~np.isfinite(grad_norm_N)][0]}")
  if not state_finite:
    return "the parameters or the optimizer state became non-finite"
  if bits_N.max() > limit:
    return (f"the training loss reached {bits_N.max():.3g} bits per sample, "
            f"more than {EXPLODED_LOSS_FACTOR:g} x log2(Q) = {limit:g} (a "
            "uniform guess costs log2(Q))")
  return None


def _storage_errno(error: Exception) -> int | None:
  """The errno of a failed write that leaves the workdir as it was (an
  OSError's, or the one tensorstore names in an Orbax error), else None."""
  code = getattr(error, "errno", None)
  if code is None:
    found = re.search(r"os_error_code='?(\d+)", str(error))
    code = int(found.group(1)) if found else None
  return code if code in STORAGE_ERRNOS else None


def write_samples(config, mcfg, graphdef, params, workdir: str,
                  step: int) -> list[str]:
  """One clip per class (or one unconditional clip) with the generator that
  sample.py uses, into <workdir>/train_samples/step<N>/ as
  step<N>_<class>_seed<seed>_t1.wav."""
  rows = [outputs.Row(name, vector, config.seed + i, 1.0)
          for i, (name, vector) in enumerate(outputs.per_class_conditions(
              config.data.class_names, mcfg.cond_dim))]
  return outputs.generate_to_files(
      sampling.Generator(graphdef, params), rows, config.train.sample_seconds,
      config.data.sample_rate,
      rundir.train_samples_dir(workdir, step),
      metadata={"checkpoint_step": step}, progress=False,
      name_prefix=f"step{step}_")


def _remove_unused(workdir: str) -> None:
  """Removes a run directory that a failed start created and left holding
  nothing but its lock file."""
  try:
    if set(os.listdir(workdir)) <= {rundir.LOCK}:
      for name in os.listdir(workdir):
        os.remove(os.path.join(workdir, name))
      os.rmdir(workdir)
  except OSError:
    pass  # another process is using it: leave it


def train_and_evaluate(config, workdir: str | None = None, mesh=None,
                       accept_dataset_change: bool = False) -> dict:
  """Train (or resume) the run of ``config`` (a ``configlib.RunConfig``) in
  ``workdir``; returns the last metrics, the step, and ``interrupted`` (a
  signal stopped it; rerun to resume).

  ``mesh``: the devices to train on, data parallel (default: every device of
  every process, ``sharding.make_mesh()``). A run may resume on another
  device count: only the float summation order changes.
  ``accept_dataset_change``: resume on a dataset whose manifest differs from
  the one the run recorded (else ``provenance.DatasetChanged``).

  Raises ``rundir.WorkdirBusy`` while another trainer holds the workdir,
  ``TrainingDiverged`` (nothing of the diverged chunk batch saved),
  ``StorageError`` when the workdir cannot be written (what it held is kept).
  """
  if not isinstance(config, configlib.RunConfig):
    raise TypeError(
        f"train_and_evaluate takes a configlib.RunConfig, not "
        f"{type(config).__name__}: pass configlib.resolve(config), which "
        "checks a config file's ConfigDict against its dataset")
  workdir = resolve_workdir(config, workdir)
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  saved = {"step": None}  # the newest checkpoint known intact, for messages
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    with (rundir.lock(workdir) if jax.process_index() == 0
          else contextlib.nullcontext()):
      return _train(config, workdir, mesh, accept_dataset_change, saved)
  except Exception as e:  # pylint: disable=broad-except
    if created and jax.process_index() == 0:
      _remove_unused(workdir)
    code = _storage_errno(e)
    if code is None or isinstance(e, StorageError):
      raise
    kept = (f"its checkpoint at step {saved['step']} is intact"
            if saved["step"] is not None else "no checkpoint had been written")
    raise StorageError(
        f"cannot write to {os.path.abspath(workdir)} "
        f"({os.strerror(code)}); the run stopped and {kept}. Free some space "
        "or make the folder writable, then rerun the same command to "
        "resume") from e


def early_stop_update(plateau: dict, valid_bits: float | None, step: int,
                      train_cfg) -> bool:
  """Counts evaluations since the best validation NLL (``plateau`` holds
  best, best_step and since, and is saved with each checkpoint); True when
  ``train.early_stop_patience`` of them passed without a gain of more than
  ``train.early_stop_min_delta`` bits."""
  if valid_bits is not None:
    best = plateau["best"]
    if best is None or valid_bits < best - train_cfg.early_stop_min_delta:
      plateau.update(best=valid_bits, best_step=step, since=0)
    else:
      plateau["since"] += 1
  return 0 < train_cfg.early_stop_patience <= plateau["since"]


def _train(config, workdir, mesh, accept_dataset_change, saved) -> dict:
  config, stream = _prepare_run(config, workdir, mesh, accept_dataset_change)
  is_main = jax.process_index() == 0
  if is_main:
    rundir.append_session(workdir, provenance.collect(
        config.seed, dataset.manifest_path(config.data.dataset_dir),
        config.model.matmul_precision))
  t = config.train
  mcfg = config.model
  graphdef, params = model_lib.build(mcfg, config.seed)
  tx = make_optimizer(t)
  params, opt_state = sharding_lib.replicate((params, tx.init(params)), mesh)
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=t.keep_checkpoints)
  step = 0
  run_key = jax.random.key(config.seed)  # chunk batch s draws fold_in(., s)
  plateau = {"best": None, "best_step": None, "since": 0}  # early stopping
  if ckpt.latest_step() is not None:
    params, opt_state, meta = ckpt.restore("latest", params, opt_state)
    ckpt.set_aside_damaged()
    step = saved["step"] = meta["step"]
    plateau = meta.get("early_stop", plateau)
    stream.restore(meta["data_position"])
    print(f"Resuming {workdir} from step {step}.")
  log = metrics_lib.MetricsWriter(workdir, step, t.tensorboard, is_main)
  valid = evaluate.SplitEvaluator(config, mcfg, graphdef, "valid", mesh)
  own_starts = None if t.own_state_share == 0 else own_state.OwnStarts(
      graphdef, sharding_lib.local_copy(params), t.own_state_share,
      round(t.own_state_seconds * config.data.sample_rate))
  chunk_step = make_chunk_step(graphdef, tx, mcfg.lookback, t.scan_windows,
                               mesh, augment_lib.make(t),
                               own_starts is not None)
  progress = console.Progress(t.num_steps, step, is_main)
  stop = _Stop(progress)
  previous_handlers = _install_signal_handlers(stop)
  # With several processes a validation is collective: it runs to its end
  # on every process, and the run stops after it.
  drop_validation_at = 1 if jax.process_count() == 1 else None

  def save(valid_bits=None, sampled=False):
    meta = {"data_position": stream.position(), "early_stop": plateau}
    ckpt.save(step, params, opt_state, meta, valid_bits, sampled)
    saved["step"] = step
    progress.note(f"step {step}: checkpoint saved"
                  + (" (kept: samples come from it)" if sampled else ""))

  last, compiled, done = {}, False, step >= t.num_steps
  stopped_early = early_stop_update(plateau, None, step, t)  # resumed, done
  done = done or stopped_early
  unsaved = False  # a finished chunk batch that no checkpoint holds yet
  try:
    while not done:
      unsaved = False  # the chunk step donates the state it starts from
      with stop.abandonable(2):  # a second signal drops this chunk batch
        batch = next(stream)  # this process's rows of the global batch
        key = jax.random.fold_in(run_key, step)  # this chunk batch's keys
        start = time.perf_counter()
        windows_NxBxW = data_lib.windows(batch.x_BxT, t.seq_len, mcfg.lookback)
        starts = ()
        if own_starts is not None:
          windows_NxBxW, carry, from_h0 = own_starts(
              step // len(windows_NxBxW), sharding_lib.local_copy(params),
              windows_NxBxW, batch.cond_BxC, jax.random.fold_in(key, 2))
          starts = (sharding_lib.assemble_batch_rows(carry, mesh, 1), from_h0)
        windows_NxBxW = sharding_lib.assemble_batch_rows(windows_NxBxW, mesh, 1)
        cond_BxC, mask_B = sharding_lib.assemble_batch_rows(
            (batch.cond_BxC, batch.mask_B), mesh)
        if t.scan_windows and not compiled:
          compile_start = time.perf_counter()  # once, ahead of time, to time it
          chunk_step = chunk_step.lower(
              params, opt_state, windows_NxBxW, cond_BxC, mask_B, key,
              *starts).compile()
          compiled = True
          log.write(step, "compile",
                    {"seconds": time.perf_counter() - compile_start})
          start += time.perf_counter() - compile_start
        params, opt_state, metrics = chunk_step(
            params, opt_state, windows_NxBxW, cond_BxC, mask_B, key, *starts)
        _wait(metrics)
      bits_N = np.asarray(metrics["bits"])
      seconds = time.perf_counter() - start
      why = divergence(bits_N, metrics["grad_norm"],
                       bool(_all_finite_jit((params, opt_state))),
                       mcfg.q_levels)
      if why:  # before anything of this chunk batch is logged or saved
        good = (f"its last good checkpoint (step {saved['step']}) is kept in "
                f"{ckpt.directory}" if saved["step"] is not None else
                "no checkpoint had been saved yet")
        raise TrainingDiverged(
            f"{why} in the chunk batch after step {step}. The run stopped "
            f"without saving; {good}. Lower train.learning_rate or use "
            "train.clip='global_norm', then rerun to resume from it.")
      before, step, unsaved = step, step + len(bits_N), True
      samples = int(np.sum(batch.mask_B)) * t.seq_len * len(bits_N)
      last = {"bits": float(bits_N.mean()),
              "grad_norm": float(np.asarray(metrics["grad_norm"]).mean()),
              "samples_per_sec": samples * jax.process_count() / seconds,
              "seconds": seconds}
      if own_starts is not None:  # seconds include the generated start's
        last["own_start"] = not bool(from_h0)
      log.write(step, "train", last)
      progress.update(step, last["bits"], last["samples_per_sec"])
      # Every process leaves together, even if a signal reached only some.
      stopping = sharding_lib.any_process(stop.signum is not None)
      done = step >= t.num_steps or stopping
      valid_bits = None
      if not stopping and (_crossed(before, step, t.eval_every)
                           or (done and t.eval_every)):
        with stop.abandonable(drop_validation_at):
          result = valid.run(params)
        valid_bits = result["bits"]
        log.write(step, "valid", {"bits": valid_bits,
                                  **{f"bits/{k}": v for k, v in
                                     result["per_class"].items()}})
        last["valid_bits"] = valid_bits
        progress.note(f"step {step}: validation {valid_bits:.4f} bits/sample ("
                      + ", ".join(f"{k} {v:.3f}" for k, v in
                                  result["per_class"].items()) + ")")
        if early_stop_update(plateau, valid_bits, step, t):
          done = stopped_early = True
          log.write(step, "early_stop", {
              "best_valid_bits": plateau["best"],
              "best_step": plateau["best_step"],
              "evaluations_without_improvement": plateau["since"]})
        if is_main:
          plots.loss_curves({config.name: metrics_lib.read(log.path)},
                            rundir.loss_curve_path(workdir))
      sample_due = bool(t.sample_every) and stop.signum is None and (
          _crossed(before, step, t.sample_every) or done)
      if (_crossed(before, step, t.checkpoint_every) or done
          or valid_bits is not None or sample_due):
        save(valid_bits, sampled=sample_due)
        unsaved = False
      if is_main and sample_due:
        with stop.abandonable(1):
          paths = write_samples(config, mcfg, graphdef,
                                sharding_lib.local_copy(params), workdir, step)
        folder = os.path.dirname(paths[0])
        log.write_samples(step, {
            f"samples/{os.path.basename(p)[len(f'step{step}_'):-4]}": p
            for p in paths}, os.path.join(folder, "spectrograms.png"))
        progress.note(f"step {step}: {len(paths)} samples in {folder}")
  except Abandoned:
    if unsaved:  # a finished chunk batch: save it (consistent) and stop
      save()
  finally:
    failing = sys.exc_info()[1] is not None
    progress.close()
    log.close()
    stream.close()
    try:
      ckpt.close()
    except Exception:  # pylint: disable=broad-except
      if not failing:  # after a failed save, the save's error is the one
        raise
    for sig, handler in previous_handlers.items():
      signal.signal(sig, handler)
  if stop.signum is not None:
    kept = (f"the latest checkpoint is at step {saved['step']}"
            if saved["step"] is not None else "no checkpoint was saved")
    print(f"Stopped by signal {stop.signum} "
          f"({signal.Signals(stop.signum).name}); {kept}. Rerun the same "
          "command to resume.")
  if stopped_early:
    print(f"Stopped early at step {step}: the validation NLL did not improve "
          f"for {plateau['since']} evaluations (train.early_stop_patience="
          f"{t.early_stop_patience}); the best, {plateau['best']:.4f} bits at "
          f"step {plateau['best_step']}, is kept as --step best.")
  return {"step": step, "interrupted": stop.signum is not None,
          "stopped_early": stopped_early, **last}
