"""Renders the bundled demo dataset: public-domain tunes on piano and on violin.

    apt-get install fluidsynth fluid-soundfont-gm   # Debian 12: 2.3.1, 3.1
    pip install numpy soundfile soxr                # already csrnn-jax deps
    python scripts/make_demo_data.py [--out data/demo]

Why these two classes: a listener tells a struck, decaying piano (melody and
a bass chord per bar) from a bowed, sustained violin (melody alone) at once,
and so must the model. Both play the same melodies, so the class is timbre,
not tune. Every tune below is written out here (no file is downloaded); a tiny
MIDI writer turns it into a Standard MIDI File and FluidSynth renders it with
the FluidR3 General MIDI soundfont (MIT licence) at 44.1 kHz, which is then
mixed to mono, resampled to 16 kHz with soxr, scaled to peak 0.9, rounded
to 12 bits and written as 16-bit FLAC. The rounding keeps the demo under 5 MB
(FLAC stores the 4 unused low bits for free: 2.5 minutes per class instead of
1.9) and loses nothing the model hears: it quantises to 8 bits (Q = 256).
Velocities are varied by a seeded generator (seed per tune and
instrument), so the output is the same on every run with the same package
versions. ``data/demo/LICENSE.md`` names every source and licence.

A tune is (name, beats per minute, melody, chords): the melody is bars
separated by ``|``, each bar notes ``NAME:BEATS`` (``C#5:1.5``, ``r:1`` a rest);
the chords give one symbol per bar (``C``, ``Am``, ``F#m``, ``-`` for none;
``G,C`` splits the bar in two halves).
"""
from __future__ import annotations

import argparse
import pathlib
import random
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import soxr

SOUNDFONT = pathlib.Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RENDER_RATE = 44100
SAMPLE_RATE = 16000
PEAK = 0.9
BITS = 12  # resolution kept in the 16-bit FLAC samples.
TICKS = 480  # MIDI ticks per beat.
# instrument -> (General MIDI program, semitones the melody moves, bass
# chords, share of a note's written length that it sounds).
INSTRUMENTS = {"piano": (0, 0, True, 0.9),  # Acoustic Grand Piano
               "violin": (40, 0, False, 0.97)}

TUNES = (
    ("ode_to_joy", 132,  # Beethoven, Symphony No. 9 (1824).
     "E4:1 E4:1 F4:1 G4:1 | G4:1 F4:1 E4:1 D4:1 | C4:1 C4:1 D4:1 E4:1 | "
     "E4:1.5 D4:0.5 D4:2 | E4:1 E4:1 F4:1 G4:1 | G4:1 F4:1 E4:1 D4:1 | "
     "C4:1 C4:1 D4:1 E4:1 | D4:1.5 C4:0.5 C4:2 | D4:1 D4:1 E4:1 C4:1 | "
     "D4:1 E4:0.5 F4:0.5 E4:1 C4:1 | D4:1 E4:0.5 F4:0.5 E4:1 D4:1 | "
     "C4:1 D4:1 G3:2 | E4:1 E4:1 F4:1 G4:1 | G4:1 F4:1 E4:1 D4:1 | "
     "C4:1 C4:1 D4:1 E4:1 | D4:1.5 C4:0.5 C4:2",
     "C G C G | C G C G,C | G C G C,G | C G C G,C"),
    ("frere_jacques", 144,  # French round, 18th century.
     "C4:1 D4:1 E4:1 C4:1 | C4:1 D4:1 E4:1 C4:1 | E4:1 F4:1 G4:2 | "
     "E4:1 F4:1 G4:2 | G4:0.5 A4:0.5 G4:0.5 F4:0.5 E4:1 C4:1 | "
     "G4:0.5 A4:0.5 G4:0.5 F4:0.5 E4:1 C4:1 | C4:1 G3:1 C4:2 | "
     "C4:1 G3:1 C4:2",
     "C C C C | C C C,G C,G"),
    ("greensleeves", 180,  # English, 16th century.
     "A4:1 | C5:2 D5:1 | E5:1.5 F5:0.5 E5:1 | D5:2 B4:1 | "
     "G4:1.5 A4:0.5 B4:1 | C5:2 A4:1 | A4:1.5 G#4:0.5 A4:1 | B4:2 G#4:1 | "
     "E4:2 A4:1 | C5:2 D5:1 | E5:1.5 F5:0.5 E5:1 | D5:2 B4:1 | "
     "G4:1.5 A4:0.5 B4:1 | C5:1.5 B4:0.5 A4:1 | G#4:1.5 F#4:0.5 G#4:1 | "
     "A4:3 | A4:3",
     "- Am C G Em Am Am E E | Am C G Em Am E Am Am"),
    ("minuet_in_g", 152,  # Christian Petzold, Minuet in G (about 1725).
     "D5:1 G4:0.5 A4:0.5 B4:0.5 C5:0.5 | D5:1 G4:1 G4:1 | "
     "E5:1 C5:0.5 D5:0.5 E5:0.5 F#5:0.5 | G5:1 G4:1 G4:1 | "
     "C5:1 D5:0.5 C5:0.5 B4:0.5 A4:0.5 | B4:1 C5:0.5 B4:0.5 A4:0.5 G4:0.5 | "
     "F#4:1 G4:0.5 A4:0.5 B4:0.5 G4:0.5 | A4:3 | "
     "D5:1 G4:0.5 A4:0.5 B4:0.5 C5:0.5 | D5:1 G4:1 G4:1 | "
     "E5:1 C5:0.5 D5:0.5 E5:0.5 F#5:0.5 | G5:1 G4:1 G4:1 | "
     "C5:1 D5:0.5 C5:0.5 B4:0.5 A4:0.5 | B4:1 C5:0.5 B4:0.5 A4:0.5 G4:0.5 | "
     "A4:1 B4:0.5 A4:0.5 G4:0.5 F#4:0.5 | G4:3",
     "G G C G C G D D | G G C G C G D G"),
    ("scarborough_fair", 132,  # English ballad, traditional.
     "D4:2 D4:1 | A4:2 A4:1 | E4:1.5 F4:0.5 E4:1 | D4:3 | "
     "r:1 A4:1 C5:1 | D5:2 C5:1 | A4:1 B4:1 G4:1 | A4:3 | "
     "D5:2 D5:1 | D5:1 C5:1 A4:1 | A4:1 G4:1 F4:1 | E4:1 C4:2 | "
     "D4:2 A4:1 | G4:2 F4:1 | E4:1 D4:1 C4:1 | D4:3",
     "Dm Dm C Dm | F Dm G Am | Dm Dm F C | Dm G C Dm"),
    ("auld_lang_syne", 116,  # Scottish, traditional.
     "C4:1 | F4:1.5 F4:0.5 F4:1 A4:1 | G4:1.5 F4:0.5 G4:1 A4:1 | "
     "F4:1.5 F4:0.5 A4:1 C5:1 | D5:3 D5:1 | C5:1.5 A4:0.5 A4:1 F4:1 | "
     "G4:1.5 F4:0.5 G4:1 A4:1 | F4:1.5 D4:0.5 D4:1 C4:1 | F4:4",
     "- F C F Bb F C Dm,Bb F"),
    ("yankee_doodle", 144,  # American, traditional.
     "C4:1 C4:1 D4:1 E4:1 | C4:1 E4:1 D4:1 G3:1 | C4:1 C4:1 D4:1 E4:1 | "
     "C4:2 B3:2 | C4:1 C4:1 D4:1 E4:1 | F4:1 E4:1 D4:1 C4:1 | "
     "B3:1 G3:1 A3:1 B3:1 | C4:2 C4:2",
     "C C,G C G | C F G C"),
)

NOTE_OFFSETS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def pitch(name: str) -> int:
  """'C#4' -> MIDI note number 61 (C4 = 60)."""
  semitone = NOTE_OFFSETS[name[0]] + name[1:].count("#") - name[1:].count("b")
  return 12 * (int(name.lstrip("ABCDEFG#b")) + 1) + semitone


def parse_melody(text: str):
  """Bars of (MIDI note or None for a rest, beats)."""
  bars = []
  for bar in text.split("|"):
    notes = []
    for token in bar.split():
      name, beats = token.split(":")
      notes.append((None if name == "r" else pitch(name), float(beats)))
    bars.append(notes)
  return bars


def triad(symbol: str) -> list[int]:
  """'Am' -> [A2 or higher, C, E] in the bass register (MIDI 40..51 root)."""
  minor = symbol.endswith("m")
  root = symbol[:-1] if minor else symbol
  low = pitch(root + "2")
  low += 12 if low < 40 else 0
  return [low, low + (3 if minor else 4), low + 7]


def note_events(tune, seed: int, with_chords: bool, transpose: int = 0):
  """(start beat, beats, MIDI note, velocity) of the melody (moved by
  ``transpose`` semitones), plus the chords in the bass ``with_chords``."""
  name, _, melody, chords = tune
  rng = random.Random(seed)
  bars, symbols = parse_melody(melody), chords.replace("|", " ").split()
  if len(bars) != len(symbols):
    raise ValueError(f"{name}: {len(bars)} bars but {len(symbols)} chords")
  events, beat = [], 0.0
  for bar, symbol in zip(bars, symbols):
    length = sum(b for _, b in bar)
    if with_chords and symbol != "-":
      parts = symbol.split(",")
      for k, part in enumerate(parts):
        start = beat + k * length / len(parts)
        for note in triad(part):
          events.append((start, length / len(parts), note,
                         rng.randint(44, 56)))
    for note, beats in bar:
      if note is not None:
        events.append((beat, beats, note + transpose, rng.randint(78, 100)))
      beat += beats
  return events


def _varlen(value: int) -> bytes:
  out = [value & 0x7F]
  while value > 0x7F:
    value >>= 7
    out.append(0x80 | (value & 0x7F))
  return bytes(reversed(out))


def midi_file(events, bpm: int, program: int, legato: float) -> bytes:
  """A format-0 Standard MIDI File on channel 0; each note sounds for
  ``legato`` of its written length."""
  timed = []  # (tick, order, message): note-offs (0) before note-ons (1).
  for start, beats, note, velocity in events:
    on = round(start * TICKS)
    off = on + max(1, round(beats * legato * TICKS))
    timed += [(on, 1, bytes([0x90, note, velocity])),
              (off, 0, bytes([0x80, note, 0]))]
  tempo = round(60e6 / bpm)
  track = (_varlen(0) + b"\xff\x51\x03" + tempo.to_bytes(3, "big")
           + _varlen(0) + bytes([0xC0, program]))
  now = 0
  for tick, _, message in sorted(timed):
    track += _varlen(tick - now) + message
    now = tick
  track += _varlen(TICKS) + b"\xff\x2f\x00"  # a beat of release, then end.
  return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS)
          + b"MTrk" + struct.pack(">I", len(track)) + track)


def render(midi: bytes, workdir: pathlib.Path,
           soundfont: pathlib.Path) -> np.ndarray:
  """FluidSynth (no reverb or chorus) -> mono int16 at SAMPLE_RATE, peak
  PEAK, with a 50 ms fade-out, multiples of 2 ** (16 - BITS)."""
  mid, wav = workdir / "tune.mid", workdir / "tune.wav"
  mid.write_bytes(midi)
  subprocess.run(
      ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5",
       "-r", str(RENDER_RATE), "-T", "wav", "-F", str(wav), str(soundfont),
       str(mid)], check=True, stdout=subprocess.DEVNULL)
  x, rate = sf.read(wav, dtype="float64", always_2d=True)
  x = soxr.resample(x.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
  x *= PEAK / np.abs(x).max()
  fade = round(0.05 * SAMPLE_RATE)
  x[-fade:] *= np.linspace(1.0, 0.0, fade)
  step = 2 ** (16 - BITS)
  return (np.round(x * 32768 / step) * step).astype(np.int16)


def render_dataset(out: pathlib.Path, tunes, instruments, soundfont,
                   seed: int = 0) -> None:
  """Every tune on every instrument (``INSTRUMENTS``' form) to
  out/<instrument>/NN_<tune>.flac, velocities seeded by seed + 100 * tune
  index + instrument index; prints each file and the minutes per class."""
  seconds = {name: 0.0 for name in instruments}
  with tempfile.TemporaryDirectory() as tmp:
    for index, tune in enumerate(tunes):
      for k, (name, (program, transpose, chords, legato)) in enumerate(
          instruments.items()):
        events = note_events(tune, seed=seed + 100 * index + k,
                             with_chords=chords, transpose=transpose)
        x = render(midi_file(events, tune[1], program, legato),
                   pathlib.Path(tmp), soundfont)
        path = out / name / f"{index + 1:02d}_{tune[0]}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")
        seconds[name] += len(x) / SAMPLE_RATE
        print(f"{path}  {len(x) / SAMPLE_RATE:5.1f} s")
  for name, total in seconds.items():
    print(f"{name}: {len(tunes)} files, {total / 60:.2f} minutes")


def render_main(argv, doc: str, default_out: str, tunes, instruments,
                soundfont: pathlib.Path, package: str, seed: int = 0) -> int:
  """The command line of a rendering script: --out, a check for FluidSynth
  and the soundfont (from Debian's ``package``), then ``render_dataset``."""
  parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  parser.add_argument("--out", default=default_out,
                      help="folder that gets one sub-folder per instrument")
  args = parser.parse_args(argv)
  if shutil.which("fluidsynth") is None or not soundfont.is_file():
    print(f"error: needs FluidSynth and {soundfont}: "
          f"apt-get install fluidsynth {package}", file=sys.stderr)
    return 2
  render_dataset(pathlib.Path(args.out), tunes, instruments, soundfont, seed)
  return 0


def main(argv=None) -> int:
  return render_main(argv, __doc__, "data/demo", TUNES, INSTRUMENTS,
                     SOUNDFONT, "fluid-soundfont-gm")


if __name__ == "__main__":
  sys.exit(main())
