"""What every command line shares.

Bad input ends in one line, ``error: <the problem and the fix>``, on stderr
and exit status 2 (``EXIT_ERROR``): argparse's usage errors (``Parser``) as
well as the library's errors (``fail``). Flags are spelled with dashes
(train.py's absl flags are the exception: ``--accept_dataset_change``,
``--config.train.num_steps=...``). ``--workdir`` names a run directory
(``rundir.check`` says what is wrong with one that is not); ``--step``
picks its checkpoint: N, "latest" or "best".
"""
from __future__ import annotations

import argparse
import sys

EXIT_ERROR = 2
STEPS = ("latest", "best")


class UsageError(SystemExit):
  """A bad command line, already said on stderr: exits with EXIT_ERROR;
  ``str()`` is the message."""

  def __init__(self, message: str):
    super().__init__(EXIT_ERROR)
    self.message = message

  def __str__(self) -> str:
    return self.message


def usage_error(message: str):
  """Says ``error: <message>`` on stderr and raises UsageError."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise UsageError(message)


def fail(error: Exception, file=None) -> int:
  """Says ``error: <error>`` on stderr (or ``file``); returns EXIT_ERROR for
  ``main``."""
  print(f"error: {error}", file=file or sys.stderr, flush=True)
  return EXIT_ERROR


class Parser(argparse.ArgumentParser):
  """argparse with the one error format (no usage block: one line)."""

  def error(self, message: str):
    usage_error(f"{message}; {self.prog} --help lists the options")


def add_workdir(parser: argparse.ArgumentParser,
                help_text: str = "a run directory (train.py's --workdir, "
                "or csrnn-import-torch's)") -> None:
  parser.add_argument("--workdir", required=True, metavar="RUN",
                      help=help_text)


def add_step(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--step", default="latest",
                      help="the checkpoint: N (a step number), 'latest' or "
                      "'best' (the lowest validation NLL)")


def parse_step(text: str) -> int | str:
  """A --step value: an int, "latest" or "best"; else ValueError."""
  text = str(text).strip()
  if text.isdigit():
    return int(text)
  if text in STEPS:
    return text
  raise ValueError(f"--step {text!r}: give N (a step number), 'latest' or "
                   "'best'")
