"""Turns a folder of audio per class, or a CSV of files with labels or vectors,
into a dataset directory that training reads (docs/design.md §3).

    csrnn-prepare SRC OUT [--labels labels.csv] [options]

Inputs: ``SRC/<class>/**/*.{wav,flac,ogg,mp3,aiff}`` (the class is the folder
name), or ``--labels labels.csv`` with a header row and either ``path,label``
(the second column named ``label``: class names) or ``path,v1,...,vC`` (any
other header: a condition vector whose names are the column names). Relative
paths in the CSV are read from the CSV's folder; SRC is then only the root that
the manifest's source paths are written relative to.

Steps, and the decisions behind them:

1. Decode every file (``audio.load_audio``: mono, resampled), optionally peak
   normalise it to 0.99, optionally cut its quiet ends (``trim_db``: the
   leading and trailing stretches where every 64-ms frame is below that
   dBFS; a piece that ends in silence, with nothing after it, teaches the
   model that silence never ends), cut it into chunks of ``chunk_seconds`` whose starts
   are ``(1 - overlap) * chunk_seconds`` apart (``overlap`` is a fraction of a
   chunk; a final partial chunk is dropped) and drop chunks whose RMS is below
   ``silence_db`` dBFS. Chunks go to ``OUT/.staging`` at once, so memory stays
   small. A file that yields no chunk (missing, empty, undecodable, zero
   length, shorter than a chunk, all silent) is skipped and listed. A file
   beyond full scale (which quantisation would hard-clip) or already clipped
   (runs of samples at full scale) is warned about on stderr and in the
   manifest's ``warnings``.
2. Split each class's files into train/valid/test (80/10/10 by default) after a
   shuffle seeded by (seed, class index): valid and test get round(n * share)
   files each, at least one, and train the rest. A class with fewer usable
   files than splits is split by chunk instead (said in the output and
   recorded in the manifest's ``split_by``). Vector-labelled data is one group.
3. ``balance``: in each split, every class keeps as many chunks as the
   smallest class has there (classes absent from that split do not count),
   taken round-robin over its files so that every file stays represented.
4. Move the chunks to ``OUT/.build/<split>/<class>/`` (``<split>/all/`` for
   vector labels), write the manifest (``dataset``) there, and only then
   swap the new dataset in for the old one (a few renames, the manifest
   last), so a run killed before the end leaves the previous dataset as it
   was.

OUT must be new, empty, or hold a dataset made with the same options (it is
then rebuilt); anything else needs ``overwrite``, which removes only what
prepare writes (the split folders, the manifest and its working folders).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import pathlib
import re
import shutil
import sys

import numpy as np
from tqdm import tqdm

from csrnn_jax import audio
from csrnn_jax import dataset

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
VECTOR_GROUP = "all"  # the output folder of vector-labelled chunks.
STAGING = ".staging"
BUILD = ".build"  # the new dataset until it is complete
OLD = ".old"  # the previous dataset while the new one is swapped in
PEAK = 0.99
FULL_SCALE = 1.0 - 2.0 ** -15  # a 16-bit file's largest positive sample


class PrepareError(ValueError):
  """Input that cannot make a dataset; the message names the file or class
  and the fix."""


@dataclasses.dataclass
class _Source:
  path: pathlib.Path
  label: str | None  # the class name, or None for vector labels.
  vector: list[float]


@dataclasses.dataclass
class _Chunk:
  source_index: int
  index: int  # the chunk's number within its source file.
  offset: int  # in samples at the dataset's rate.
  staged: pathlib.Path
  group: str  # the class name, or VECTOR_GROUP.
  split: str = ""


def _audio_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _sources_from_folders(src: pathlib.Path, out: pathlib.Path):
  """One _Source per audio file under SRC/<class>/; classes sorted by name."""
  if not src.is_dir():
    raise PrepareError(
        f"{src}: no such folder; pass the folder that holds one sub-folder of "
        "audio per class (or --labels labels.csv)")
  if out == src or src in out.parents:
    raise PrepareError(
        f"OUT {out} lies inside SRC {src}, where it would be read as a class "
        "on the next run; choose an OUT folder outside SRC")
  class_dirs = sorted(p for p in src.iterdir()
                      if p.is_dir() and not p.name.startswith("."))
  files_by_class = {d.name: _audio_files(d) for d in class_dirs}
  if not any(files_by_class.values()):
    loose = [p for p in src.iterdir()
             if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    hint = (f" ({len(loose)} audio files lie directly in {src}: move them "
            "into class sub-folders)" if loose else "")
    raise PrepareError(
        f"{src}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under "
        f"{src}/<class>/{hint}; put each class's files in a sub-folder named "
        "for the class, or pass --labels labels.csv")
  class_names = list(files_by_class)
  sources = []
  for k, name in enumerate(class_names):
    one_hot = [float(j == k) for j in range(len(class_names))]
    sources += [_Source(p, name, one_hot) for p in files_by_class[name]]
  return sources, class_names, class_names


def _sources_from_csv(labels_csv: pathlib.Path):
  """One _Source per CSV row; see the module docstring for the two layouts."""
  if not labels_csv.is_file():
    raise PrepareError(f"{labels_csv}: no such labels file; pass --labels "
                       "with a CSV of path,label or path,v1,...,vC rows")
  with open(labels_csv, newline="", encoding="utf-8") as f:
    rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1)
            if any(cell.strip() for cell in row)]
  if len(rows) < 2 or len(rows[0][1]) < 2:
    raise PrepareError(
        f"{labels_csv}: needs a header row (path,label or path,v1,...,vC) and "
        "at least one row of data")
  header = [cell.strip() for cell in rows[0][1]]
  by_label = len(header) == 2 and header[1].lower() == "label"
  cond_names = [] if by_label else header[1:]
  parsed = []
  for line, row in rows[1:]:
    where = f"{labels_csv}:{line}"
    path = labels_csv.parent / row[0].strip()
    if len(row) != len(header):
      if by_label:
        raise PrepareError(f"{where}: expected 2 columns (path,label), got "
                           f"{len(row)}; fix the row")
      raise PrepareError(
          f"{where}: {row[0].strip()} has a vector of {len(row) - 1} values, "
          f"but the header names {len(cond_names)} ({','.join(cond_names)}); "
          f"give every row exactly {len(cond_names)} values after the path")
    if not path.is_file():
      raise PrepareError(
          f"{where}: {path} does not exist; fix the path (relative paths are "
          f"read from the CSV's folder {labels_csv.parent}) or remove the row")
    if by_label:
      label = row[1].strip()
      if not label:
        raise PrepareError(f"{where}: {row[0].strip()} has an empty label; "
                           "give it a class name")
      parsed.append((path, label, None))
    else:
      try:
        vector = [float(cell) for cell in row[1:]]
      except ValueError as e:
        raise PrepareError(f"{where}: {row[0].strip()} has a non-number in "
                           f"its vector ({e}); use plain numbers") from e
      if not all(math.isfinite(v) for v in vector):
        raise PrepareError(
            f"{where}: {row[0].strip()} has a non-finite value in its vector "
            f"({','.join(cell.strip() for cell in row[1:])}); give finite "
            "numbers")
      parsed.append((path, None, vector))
  class_names = sorted({label for _, label, _ in parsed if label})
  sources = []
  for path, label, vector in parsed:
    if by_label:
      vector = [float(name == label) for name in class_names]
    sources.append(_Source(path, label, vector))
  return sources, class_names, (class_names if by_label else cond_names)


def _check_out(out: pathlib.Path, options: dict, overwrite: bool) -> None:
  """Refuses an OUT that holds something else; removes what a killed run
  left in prepare's working folders."""
  own = set(dataset.SPLITS) | {dataset.MANIFEST, STAGING, BUILD, OLD}
  entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
  if entries and not overwrite:
    manifest_path = dataset.manifest_path(out)
    if manifest_path.is_file():
      try:
        old = dataset.recorded_options(out)
      except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise PrepareError(
            f"{manifest_path} is not a valid manifest ({e}); pass "
            "--overwrite to prepare the dataset again in its place") from None
      changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in options.items()
                 if old.get(k) != v]
      if changed:
        raise PrepareError(
            f"{out} already holds a different dataset (made with "
            f"{'; '.join(changed)}); pass --overwrite to replace it, or "
            "choose another OUT folder")
    elif not set(entries) <= own:
      raise PrepareError(
          f"{out} is not empty and holds no dataset (found "
          f"{', '.join(entries[:5])}); choose a new or empty OUT folder, or "
          "pass --overwrite to write the dataset into it")
  for name in (STAGING, BUILD):
    shutil.rmtree(out / name, ignore_errors=True)
  out.mkdir(parents=True, exist_ok=True)


def _swap_in(out: pathlib.Path) -> None:
  """Replaces OUT's dataset by the complete one in OUT/.build. The old
  manifest goes first and the new one comes last, so OUT is never a mix of
  the two that reads as a dataset."""
  build, old = out / BUILD, out / OLD
  shutil.rmtree(old, ignore_errors=True)
  old.mkdir()
  for name in (dataset.MANIFEST,) + dataset.SPLITS:
    if (out / name).exists():
      (out / name).replace(old / name)
  for name in dataset.SPLITS + (dataset.MANIFEST,):
    if (build / name).exists():
      (build / name).replace(out / name)
  shutil.rmtree(old)
  build.rmdir()


def _level_warnings(path, x_T, peak_normalize: bool) -> list[str]:
  """Warnings for audio that quantisation would hard-clip (beyond full
  scale, unless ``peak_normalize`` scales it) or that is clipped already
  (neighbouring samples at full scale)."""
  found = []
  peak = float(np.abs(x_T).max())
  if peak > 1.0 and not peak_normalize:
    found.append(
        f"{path}: peaks at {peak:.3g}, beyond full scale (1.0): every chunk "
        "is hard-clipped to [-1, 1] when quantised; pass --peak-normalize to "
        f"scale each file to a peak of {PEAK}")
  at_full_T = (np.abs(x_T) >= FULL_SCALE) & (np.abs(x_T) <= 1.0)
  clipped = int(np.sum(at_full_T[1:] & at_full_T[:-1]))
  if clipped:
    found.append(
        f"{path}: {clipped} neighbouring samples sit at full scale: the "
        "file was clipped before it got here, and its chunks keep the "
        "distortion (--peak-normalize rescales it but cannot undo "
        "clipping); use an unclipped source if there is one")
  return found


def _stage_chunks(sources, staging, *, sample_rate, chunk_samples, hop,
                  silence_db, trim_db, peak_normalize, verbose):
  """Decodes, cuts and writes every source's chunks to staging.

  Returns the chunks, the skipped files as (source index, reason), the
  number of silent chunks dropped, the samples trimmed and the level
  warnings.
  """
  staging.mkdir(parents=True)
  chunks, skipped, silent, trimmed, level_warnings = [], [], 0, 0, []
  for i, source in enumerate(tqdm(sources, desc="prepare", unit="file",
                                  disable=not verbose)):
    try:
      x_T = audio.load_audio(source.path, sample_rate)
    except audio.AudioError as e:
      skipped.append((i, str(e)))
      continue
    level_warnings += _level_warnings(source.path, x_T, peak_normalize)
    peak = np.abs(x_T).max()
    if peak_normalize and peak > 0:
      x_T = x_T * (PEAK / peak)
    start = 0
    if trim_db is not None:
      start, stop = audio.loud_span(x_T, sample_rate, trim_db)
      trimmed += len(x_T) - (stop - start)
      if stop == start:
        skipped.append((i, f"{source.path}: quieter than {trim_db:g} dBFS "
                           "throughout (--trim-db)"))
        continue
      x_T = x_T[start:stop]
    offsets = range(0, len(x_T) - chunk_samples + 1, hop)
    kept = 0
    for k, offset in enumerate(offsets):
      chunk_T = x_T[offset:offset + chunk_samples]
      rms_db = 10 * np.log10(np.mean(np.square(chunk_T, dtype=np.float64))
                             + 1e-20)
      if rms_db < silence_db:
        silent += 1
        continue
      staged = staging / f"{i:06d}_{k:06d}.wav"
      audio.write_wav(staged, chunk_T, sample_rate)
      chunks.append(_Chunk(i, k, start + offset, staged,
                           source.label or VECTOR_GROUP))
      kept += 1
    if not offsets:
      skipped.append((i, f"{source.path}: shorter than one chunk "
                         f"({len(x_T) / sample_rate:.2f} s < "
                         f"{chunk_samples / sample_rate:g} s)"))
    elif not kept:
      skipped.append((i, f"{source.path}: all {len(offsets)} chunks are "
                         f"quieter than {silence_db:g} dBFS"))
  return chunks, skipped, silent, trimmed, level_warnings


def _check_groups(groups, sources, chunks, skipped, where, chunk_seconds,
                  silence_db) -> None:
  """Raises PrepareError for a class (or vector dataset) left without chunks."""
  reasons = dict(skipped)
  for group in groups:
    if any(c.group == group for c in chunks):
      continue
    why = "; ".join(r for i, r in reasons.items()
                    if (sources[i].label or VECTOR_GROUP) == group)
    name = f"class {group!r}" if group != VECTOR_GROUP else "the dataset"
    raise PrepareError(
        f"{name} has no usable chunk ({where(group)}: {why or 'no files'}); "
        f"add audio longer than {chunk_seconds:g} s and louder than "
        f"{silence_db:g} dBFS, or remove the class")


def _split_counts(n: int, fractions) -> list[int]:
  """How many of n items go to train, valid, test: valid and test get their
  rounded share but at least one (when their share is > 0), train the rest
  but at least one; with fewer items than splits, one each in split order."""
  wanted = [s for s in range(3) if fractions[s] > 0]
  if n < len(wanted):
    return [int(s in wanted[:n]) for s in range(3)]
  counts = [0] + [max(1, math.floor(n * f + 0.5)) if f > 0 else 0
                  for f in fractions[1:]]
  while counts[1] + counts[2] > n - 1:  # the larger one gives way to train.
    counts[1 if counts[1] >= counts[2] else 2] -= 1
  counts[0] = n - counts[1] - counts[2]
  return counts


def _assign_splits(chunks, groups, fractions, seed, verbose) -> dict:
  """Sets every chunk's split; returns {group: "file" or "chunk"}."""
  split_by = {}
  n_splits = sum(f > 0 for f in fractions)
  for g, group in enumerate(groups):
    mine = [c for c in chunks if c.group == group]
    files = sorted({c.source_index for c in mine})
    rng = np.random.default_rng([seed, g])
    if len(files) >= n_splits:
      split_by[group] = "file"
      order = [files[j] for j in rng.permutation(len(files))]
      counts = _split_counts(len(files), fractions)
      split_of = {}
      for s, name in enumerate(dataset.SPLITS):
        start = sum(counts[:s])
        split_of.update((f, name) for f in order[start:start + counts[s]])
      for c in mine:
        c.split = split_of[c.source_index]
    else:
      split_by[group] = "chunk"
      if verbose:
        print(f"note: {group!r} has {len(files)} usable file(s), fewer than "
              f"the {n_splits} splits: its chunks are split by chunk instead "
              "of by file, so its valid/test chunks come from the recordings "
              "that train uses")
      order = [mine[j] for j in rng.permutation(len(mine))]
      counts = _split_counts(len(mine), fractions)
      for s, name in enumerate(dataset.SPLITS):
        start = sum(counts[:s])
        for c in order[start:start + counts[s]]:
          c.split = name
  return split_by


def _balance(chunks, groups) -> list:
  """Keeps, per split, the smallest class's chunk count of every class,
  round-robin over each class's files; returns the dropped chunks."""
  dropped = []
  for split in dataset.SPLITS:
    by_group = {g: [c for c in chunks if c.split == split and c.group == g]
                for g in groups}
    present = [len(cs) for cs in by_group.values() if cs]
    if not present:
      continue
    target = min(present)
    for cs in by_group.values():
      by_file = collections.defaultdict(list)
      for c in cs:
        by_file[c.source_index].append(c)
      files = [by_file[i] for i in sorted(by_file)]
      round_robin = []
      for r in range(max(map(len, files), default=0)):
        round_robin += [f[r] for f in files if r < len(f)]
      dropped += round_robin[target:]
  return dropped


def _folder_name(group: str) -> str:
  return re.sub(r"[^\w.-]+", "_", group) or "_"


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
  path = path.resolve()
  return (path.relative_to(root) if root in path.parents else path).as_posix()


def _summary(records, groups, skipped_records) -> str:
  """A table per class and split: files, chunks, minutes; then skipped files.
  ``groups``: each record's class (or VECTOR_GROUP)."""
  rows = collections.defaultdict(lambda: [set(), 0, 0.0])
  for r, group in zip(records, groups):
    for key in ((group, r["split"]), ("total", r["split"])):
      rows[key][0].add(r["source"])
      rows[key][1] += 1
      rows[key][2] += r["duration_seconds"] / 60
  width = max([5] + [len(g) for g, _ in rows])
  lines = [f"{'class':<{width}}  {'split':<5}  {'files':>5}  {'chunks':>6}  "
           f"{'minutes':>8}"]
  groups = [g for g in dict.fromkeys(g for g, _ in rows) if g != "total"]
  for group in groups + ["total"]:
    for split in dataset.SPLITS:
      if (group, split) in rows:
        files, n, minutes = rows[(group, split)]
        lines.append(f"{group:<{width}}  {split:<5}  {len(files):>5}  "
                     f"{n:>6}  {minutes:>8.2f}")
  if skipped_records:
    lines.append(f"skipped {len(skipped_records)} file(s):")
    lines += [f"  {s['reason']}" for s in skipped_records]
  return "\n".join(lines)


def prepare_dataset(src, out, *, labels_csv=None, sample_rate=16000,
                    chunk_seconds=8.0, overlap=0.0, silence_db=-50.0,
                    trim_db=None, peak_normalize=False, balance=False,
                    split=(0.8, 0.1, 0.1), seed=0, overwrite=False,
                    verbose=True) -> dict:
  """Builds the dataset in OUT (see the module docstring); returns the
  manifest that it writes to OUT/manifest.json. Raises PrepareError."""
  src, out = pathlib.Path(src).resolve(), pathlib.Path(out).resolve()
  split = [float(f) for f in split]
  if len(split) != 3 or min(split) < 0 or split[0] <= 0 or not math.isclose(
      sum(split), 1.0, abs_tol=1e-6):
    raise PrepareError(f"split={split}: give three shares (train, valid, "
                       "test) that are >= 0, sum to 1, with train > 0")
  if not (chunk_seconds > 0 and 0 <= overlap < 1 and sample_rate > 0):
    raise PrepareError(
        f"chunk_seconds={chunk_seconds}, overlap={overlap}, sample_rate="
        f"{sample_rate}: need chunk_seconds > 0, 0 <= overlap < 1 and "
        "sample_rate > 0")
  chunk_samples = round(chunk_seconds * sample_rate)
  hop = max(1, round(chunk_samples * (1 - overlap)))
  labels_csv = pathlib.Path(labels_csv).resolve() if labels_csv else None
  options = {
      "src": str(src), "labels_csv": str(labels_csv) if labels_csv else None,
      "sample_rate": int(sample_rate), "chunk_seconds": float(chunk_seconds),
      "overlap": float(overlap), "silence_db": float(silence_db),
      "trim_db": None if trim_db is None else float(trim_db),
      "peak_normalize": bool(peak_normalize), "balance": bool(balance),
      "split": split, "seed": int(seed)}
  if labels_csv:
    sources, class_names, cond_names = _sources_from_csv(labels_csv)
  else:
    sources, class_names, cond_names = _sources_from_folders(src, out)
  _check_out(out, options, overwrite)
  staging = out / STAGING
  complete = False
  try:
    chunks, skipped, silent, trimmed, level_warnings = _stage_chunks(
        sources, staging, sample_rate=sample_rate, chunk_samples=chunk_samples,
        hop=hop, silence_db=silence_db, trim_db=trim_db,
        peak_normalize=peak_normalize,
        verbose=verbose)
    groups = class_names or [VECTOR_GROUP]
    _check_groups(groups, sources, chunks, skipped,
                  lambda g: labels_csv or src / g, chunk_seconds, silence_db)
    split_by = _assign_splits(chunks, groups, split, seed, verbose)
    dropped = _balance(chunks, groups) if balance else []
    dropped_ids = {id(c) for c in dropped}
    kept = [c for c in chunks if id(c) not in dropped_ids]
    kept.sort(key=lambda c: (dataset.SPLITS.index(c.split),
                             groups.index(c.group), c.source_index, c.index))
    records = []
    for c in kept:
      source = sources[c.source_index]
      dest = (pathlib.Path(c.split) / _folder_name(c.group) /
              f"{source.path.stem}.{c.source_index:05d}.{c.index:05d}.wav")
      (out / BUILD / dest).parent.mkdir(parents=True, exist_ok=True)
      c.staged.replace(out / BUILD / dest)
      records.append(dataset.chunk_record(
          dest.as_posix(), _relative(source.path, src),
          c.offset / sample_rate, c.split, source.label, source.vector,
          chunk_samples / sample_rate))
    skipped_records = [{"source": _relative(sources[i].path, src),
                        "reason": r} for i, r in skipped]
    summary = _summary(records, [c.group for c in kept], skipped_records)
    manifest = dataset.new_manifest(
        options=options, sample_rate=sample_rate, chunk_samples=chunk_samples,
        class_names=class_names, cond_names=cond_names, split_by=split_by,
        silent_chunks_dropped=silent, balance_dropped_chunks=len(dropped),
        skipped=skipped_records, warnings=level_warnings, chunks=records)
    dataset.write_manifest(out / BUILD, manifest)
    _swap_in(out)
    complete = True
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if not complete:  # the previous dataset, if any, stays as it was
      shutil.rmtree(out / BUILD, ignore_errors=True)
  for warning in level_warnings:
    print(f"warning: {warning}", file=sys.stderr)
  if verbose:
    if trim_db is not None:
      print(f"trimmed {trimmed / sample_rate:.1f} s of quiet ends (below "
            f"{trim_db:g} dBFS) from the files")
    print(f"dropped {silent} chunks quieter than {silence_db:g} dBFS")
    if balance:
      print(f"balance: dropped {len(dropped)} chunks so that every class has "
            "as many as the smallest class in each split")
    print(summary)
  return manifest
