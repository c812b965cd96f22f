"""Every config key with its default and the comment beside it in
``configlib.base_config`` (the one place keys are documented), for
``train.py --help``.

The comments are read from configlib's source: a key's line comment, plus
the comment-only lines under it (a comment that continues); a section's
text is the comment-only lines above its ``c.<section> = ...``.
"""
from __future__ import annotations

import ast
import inspect
import io
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


def key_docs() -> tuple[dict[str, str], dict[str, str]]:
  """({dotted key: its comment}, {section: the comment above it})."""
  source = inspect.getsource(configlib.base_config)
  comments = _comments(source)
  keys, sections = {}, {}
  for node in ast.walk(ast.parse(source)):
    if not (isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Attribute)):
      continue
    name = node.targets[0].attr
    value = node.value
    fields = (value.args[0].keywords if isinstance(value, ast.Call)
              and value.args and isinstance(value.args[0], ast.Call) else None)
    if fields is None:
      keys[name] = _doc_at(comments, node.end_lineno)
      continue
    sections[name] = _doc_above(comments, node.lineno)
    for field in fields:
      keys[f"{name}.{field.arg}"] = _doc_at(comments, field.value.end_lineno)
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
