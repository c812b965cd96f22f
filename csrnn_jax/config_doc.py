"""Every config key with its default and the comment beside its field in
the config dataclasses (``configlib.RunConfig`` and its sections, the one
place keys are declared and documented), for ``train.py --help``.

The comments are read from the dataclasses' source: a field's line comment,
plus the comment-only lines under it (a comment that continues); a section's
text is its class docstring.
"""
from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize

from csrnn_jax import configlib


def _comments(source: str) -> dict[int, tuple[str, bool]]:
  """{line: (comment text, whether the line holds only the comment)}."""
  out = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      alone = not tok.line[:tok.start[1]].strip()
      out[tok.start[0]] = (tok.string.lstrip("#").strip(), alone)
  return out


def _doc_at(comments, line: int) -> str:
  """The comment on ``line`` and the comment-only lines right below it."""
  if line not in comments or comments[line][1]:
    return ""
  parts, line = [comments[line][0]], line + 1
  while line in comments and comments[line][1]:
    parts.append(comments[line][0])
    line += 1
  return " ".join(parts)


def _doc_above(comments, line: int) -> str:
  parts, line = [], line - 1
  while line in comments and comments[line][1]:
    parts.insert(0, comments[line][0])
    line -= 1
  return " ".join(parts)


def _field_docs(cls) -> dict[str, str]:
  """{field: its comment} of a dataclass, in declaration order."""
  source = textwrap.dedent(inspect.getsource(cls))
  comments = _comments(source)
  return {node.target.id: _doc_at(comments, node.end_lineno)
          for node in ast.parse(source).body[0].body
          if isinstance(node, ast.AnnAssign)}


def key_docs() -> tuple[dict[str, str], dict[str, str]]:
  """({dotted key: its comment}, {section: its class docstring})."""
  keys, sections = {}, {}
  for name, doc in _field_docs(configlib.RunConfig).items():
    section = configlib.SECTIONS.get(name)
    if section is None:
      keys[name] = doc
      continue
    sections[name] = " ".join(inspect.getdoc(section).split())
    for field, field_doc in _field_docs(section).items():
      keys[f"{name}.{field}"] = field_doc
  return keys, sections


def _value(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def describe(config=None) -> str:
  """Text listing every key in configlib's order, ``key = value  comment``,
  by section; values are ``config``'s (default: ``base_config()``)."""
  config = configlib.base_config() if config is None else config
  docs, sections = key_docs()
  lines, section = [], ""
  for key, doc in docs.items():
    head = key.split(".")[0] if "." in key else ""
    if head != section:
      section = head
      lines += ["", f"  {head}:" + (f"  {sections[head]}"
                                    if sections.get(head) else "")]
    setting = f"    {key} = {_value(config, key)!r}"
    lines.append(f"{setting:<44} {doc}".rstrip())
  return "\n".join(lines)
