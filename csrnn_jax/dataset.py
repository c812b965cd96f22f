"""A prepared dataset's manifest, ``<dataset>/manifest.json`` (docs/design.md
§3): its schema, written by ``prepare`` and read, checked, by everything
else (``data``, ``audio_eval``, ``provenance``, sample.py).

    {"format_version": FORMAT_VERSION,
     "options": {prepare's options, to rebuild it the same way},
     "sample_rate": Hz, "chunk_samples": samples in every chunk,
     "class_names": [class, ...] (one-hot order; [] for vector labels),
     "cond_names": [name of each condition vector entry, ...],
     "cond_dim": len(cond_names),
     "split_by": {class or "all": "file" | "chunk"},
     "silent_chunks_dropped": n, "balance_dropped_chunks": n,
     "skipped": [{"source": path, "reason": text}, ...],
     "warnings": [text, ...],
     "chunks": [{"path": wav relative to the dataset folder,
                 "source": the file it was cut from, "offset_seconds": s,
                 "split": one of SPLITS, "label": class or None,
                 "vector": [float] * cond_dim, "duration_seconds": s}, ...]}
"""
from __future__ import annotations

import json
import pathlib

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
REQUIRED = ("sample_rate", "chunk_samples", "class_names", "cond_names",
            "cond_dim", "chunks")  # what readers use, beyond the version
_PREPARE_AGAIN = "prepare the dataset again (csrnn-prepare SRC OUT --overwrite)"


class DatasetError(ValueError):
  """A dataset or stream setting that cannot work; says what to change."""


def manifest_path(dataset_dir) -> pathlib.Path:
  return pathlib.Path(dataset_dir) / MANIFEST


def chunk_record(path: str, source: str, offset_seconds: float, split: str,
                 label: str | None, vector: list[float],
                 duration_seconds: float) -> dict:
  """One entry of the manifest's "chunks"."""
  return {"path": path, "source": source, "offset_seconds": offset_seconds,
          "split": split, "label": label, "vector": vector,
          "duration_seconds": duration_seconds}


def new_manifest(*, options: dict, sample_rate: int, chunk_samples: int,
                 class_names: list[str], cond_names: list[str],
                 split_by: dict, silent_chunks_dropped: int,
                 balance_dropped_chunks: int, skipped: list[dict],
                 warnings: list[str], chunks: list[dict]) -> dict:
  """A manifest of this FORMAT_VERSION (``chunks``: ``chunk_record``s)."""
  return {
      "format_version": FORMAT_VERSION,
      "options": options,
      "sample_rate": int(sample_rate),
      "chunk_samples": chunk_samples,
      "class_names": class_names,
      "cond_names": cond_names,
      "cond_dim": len(cond_names),
      "split_by": split_by,
      "silent_chunks_dropped": silent_chunks_dropped,
      "balance_dropped_chunks": balance_dropped_chunks,
      "skipped": skipped,
      "warnings": warnings,
      "chunks": chunks,
  }


def write_manifest(folder, manifest: dict) -> None:
  """``folder``/manifest.json (prepare writes it last, then swaps the
  folder in, so that no reader sees a partial dataset)."""
  manifest_path(folder).write_text(json.dumps(manifest, indent=1))


def recorded_options(dataset_dir) -> dict:
  """The prepare options the manifest in ``dataset_dir`` records ({} if it
  records none). A file that is not JSON raises json.JSONDecodeError or
  UnicodeDecodeError, one that holds no object AttributeError."""
  return json.loads(manifest_path(dataset_dir).read_text()).get("options", {})


def read_manifest(dataset_dir) -> dict:
  """The manifest of a prepared dataset folder, checked for its version and
  the keys readers use; DatasetError naming the fix otherwise."""
  path = manifest_path(dataset_dir)
  if not path.parent.is_dir():
    raise DatasetError(f"{path.parent}: no such dataset folder; make one with "
                       "`csrnn-prepare SRC OUT` and point the config at OUT")
  if not path.is_file():
    raise DatasetError(f"{path}: missing, so {path.parent} is not a prepared "
                       "dataset; make one with `csrnn-prepare SRC OUT`")
  try:
    manifest = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DatasetError(f"{path} is not valid JSON ({e}): damaged or half "
                       f"written; {_PREPARE_AGAIN}") from None
  if not isinstance(manifest, dict):
    raise DatasetError(f"{path} holds no manifest object; {_PREPARE_AGAIN}")
  if manifest.get("format_version") != FORMAT_VERSION:
    raise DatasetError(
        f"{path}: format_version {manifest.get('format_version')!r}, this code "
        f"reads {FORMAT_VERSION}; re-run csrnn-prepare on the source")
  missing = [key for key in REQUIRED if key not in manifest]
  if missing:
    raise DatasetError(f"{path} lacks {', '.join(missing)}; {_PREPARE_AGAIN}")
  return manifest


def split_chunks(manifest: dict, split: str) -> list[dict]:
  """The chunk records of one split, in manifest order."""
  return [c for c in manifest["chunks"] if c["split"] == split]
