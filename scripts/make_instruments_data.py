"""Renders a third small dataset: seven public-domain tunes on four General
MIDI instruments (flute, nylon guitar, church organ, marimba).

    apt-get install fluidsynth musescore-general-soundfont-small  # Debian 12
    python scripts/make_instruments_data.py [--out /tmp/instruments]
    csrnn-prepare /tmp/instruments /tmp/instruments_prepared \\
        --chunk-seconds 2 --balance --trim-db -36

Why these classes: four timbres a listener tells apart at once and that
neither the demo (piano vs violin) nor the voices dataset has: a breathy,
nearly sinusoidal flute; a plucked nylon guitar that decays (melody over a
bass chord per bar); a sustained church organ, rich in harmonics and without
attack or decay (melody over held chords); a struck wooden marimba that dies
within a beat. Four classes (not two) so that a mix of two classes can be told
from the others. Every instrument plays every tune, so the class is the
instrument, not the tune.

How: the tunes are written out below (none of them is one of the demo's, none
is downloaded); the demo's MIDI writer and renderer
(``scripts/make_demo_data.py``: FluidSynth without reverb or chorus, 16 kHz
mono via soxr, peak 0.9, 12-bit resolution in 16-bit FLAC) render them with a
different soundfont than the demo's FluidR3: MuseScore_General_Lite.sf3 from
Debian's ``musescore-general-soundfont-small`` 0.2.1 (MIT licence; S.
Christian Collins, parts public domain or CC0, parts from Fluid R3 Mono, MIT).
The tunes are public domain: "Ah! vous dirai-je, maman" (Twinkle, Twinkle,
French, 1761), "New Britain" (Amazing Grace, 1829), "When the Saints Go
Marching In" (spiritual, traditional), J. S. Bach's Prelude in C major BWV 846
(1722; bars 1 to 11 and 19, as an arpeggio line), Stephen Foster's "Oh!
Susanna" (1848), James Lord Pierpont's "Jingle Bells" (1857, the chorus) and
Beethoven's "Für Elise" (1810, the A section). The audio made from them is
under the same terms as the soundfont. Velocities come from a seeded
generator (seed per tune and instrument), so every run with the same package
versions writes the same files. About 3.5 minutes per instrument; 7 files per
class, so ``csrnn-prepare`` splits train/valid/test by file.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_demo_data as demo  # pylint: disable=wrong-import-position

SOUNDFONT = pathlib.Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")
# In make_demo_data.INSTRUMENTS' form.
INSTRUMENTS = {"flute": (73, 12, False, 0.95),
               "nylon_guitar": (24, 0, True, 0.9),
               "church_organ": (19, 0, True, 0.97),
               "marimba": (12, 0, False, 0.9)}


def arpeggios(chords: str) -> str:
  """Bach's BWV 846 figure: per bar of five notes n1..n5 (``|`` between
  bars), sixteenths n1 n2 n3 n4 n5 n3 n4 n5, twice."""
  bars = []
  for bar in chords.split("|"):
    n = bar.split()
    bars.append(" ".join(f"{note}:0.25" for note in 2 * (n + n[2:])))
  return " | ".join(bars)


PRELUDE = arpeggios(
    "C4 E4 G4 C5 E5 | C4 D4 A4 D5 F5 | B3 D4 G4 D5 F5 | C4 E4 G4 C5 E5 | "
    "C4 E4 A4 E5 A5 | C4 D4 F#4 A4 D5 | B3 D4 G4 D5 G5 | B3 C4 E4 G4 C5 | "
    "A3 C4 E4 G4 C5 | D3 A3 D4 F#4 C5 | G3 B3 D4 G4 B4 | C3 E3 G3 C4 E4")

# (name, beats per minute, melody, chords) in the demo's notation.
TUNES = (
    ("twinkle", 120,
     "C4:1 C4:1 G4:1 G4:1 | A4:1 A4:1 G4:2 | F4:1 F4:1 E4:1 E4:1 | "
     "D4:1 D4:1 C4:2 | G4:1 G4:1 F4:1 F4:1 | E4:1 E4:1 D4:2 | "
     "G4:1 G4:1 F4:1 F4:1 | E4:1 E4:1 D4:2 | C4:1 C4:1 G4:1 G4:1 | "
     "A4:1 A4:1 G4:2 | F4:1 F4:1 E4:1 E4:1 | D4:1 D4:1 C4:2",
     "C F,C F,C G,C | C,G C,G C,G C,G | C F,C F,C G,C"),
    ("amazing_grace", 96,
     "D4:1 | G4:2 B4:0.5 G4:0.5 | B4:2 A4:1 | G4:2 E4:1 | D4:2 D4:1 | "
     "G4:2 B4:0.5 G4:0.5 | B4:2 A4:1 | D5:3 | D5:2 B4:1 | "
     "D5:2 B4:0.5 G4:0.5 | B4:2 A4:1 | G4:2 E4:1 | D4:2 D4:1 | "
     "G4:2 B4:0.5 G4:0.5 | B4:2 A4:1 | G4:3",
     "- G G C G | G G D D | G G C G | G D G"),
    ("saints", 160,
     "r:1 C4:1 E4:1 F4:1 | G4:4 | r:1 C4:1 E4:1 F4:1 | G4:4 | "
     "r:1 C4:1 E4:1 F4:1 | G4:2 E4:2 | C4:2 E4:2 | D4:4 | "
     "r:1 E4:1 E4:1 D4:1 | C4:3 C4:1 | E4:2 G4:2 | G4:1 F4:3 | "
     "r:1 E4:1 F4:1 G4:1 | E4:2 C4:2 | D4:2 D4:2 | C4:4",
     "C C C C | C C C G | C C C F | C C G C"),
    ("bach_prelude_c", 72, PRELUDE, " ".join(["-"] * 12)),
    ("oh_susanna", 132,
     "C4:0.5 D4:0.5 | E4:1 G4:1 G4:1.5 A4:0.5 | G4:1 E4:1 C4:1.5 D4:0.5 | "
     "E4:1 E4:1 D4:1 C4:1 | D4:3 C4:0.5 D4:0.5 | E4:1 G4:1 G4:1.5 A4:0.5 | "
     "G4:1 E4:1 C4:1.5 D4:0.5 | E4:1 E4:1 D4:1 D4:1 | C4:4 | F4:2 F4:2 | "
     "A4:2 A4:2 | G4:1 G4:1 E4:1 C4:1 | D4:3 C4:0.5 D4:0.5 | "
     "E4:1 G4:1 G4:1.5 A4:0.5 | G4:1 E4:1 C4:1.5 D4:0.5 | "
     "E4:1 E4:1 D4:1 D4:1 | C4:4",
     "- C C C G | C C G C | F F C G | C C G C"),
    ("jingle_bells", 150,
     "E4:1 E4:1 E4:2 | E4:1 E4:1 E4:2 | E4:1 G4:1 C4:1.5 D4:0.5 | E4:4 | "
     "F4:1 F4:1 F4:1.5 F4:0.5 | F4:1 E4:1 E4:1 E4:0.5 E4:0.5 | "
     "E4:1 D4:1 D4:1 E4:1 | D4:2 G4:2 | E4:1 E4:1 E4:2 | E4:1 E4:1 E4:2 | "
     "E4:1 G4:1 C4:1.5 D4:0.5 | E4:4 | F4:1 F4:1 F4:1.5 F4:0.5 | "
     "F4:1 E4:1 E4:1 E4:0.5 E4:0.5 | G4:1 G4:1 F4:1 D4:1 | C4:4",
     "C C C C | F C D G | C C C C | F C G C"),
    ("fur_elise", 150,  # a beat is an eighth note (3/8 time).
     "E5:0.5 D#5:0.5 | E5:0.5 D#5:0.5 E5:0.5 B4:0.5 D5:0.5 C5:0.5 | "
     "A4:1 r:0.5 C4:0.5 E4:0.5 A4:0.5 | B4:1 r:0.5 E4:0.5 G#4:0.5 B4:0.5 | "
     "C5:1 r:0.5 E4:0.5 E5:0.5 D#5:0.5 | "
     "E5:0.5 D#5:0.5 E5:0.5 B4:0.5 D5:0.5 C5:0.5 | "
     "A4:1 r:0.5 C4:0.5 E4:0.5 A4:0.5 | B4:1 r:0.5 E4:0.5 C5:0.5 B4:0.5 | "
     "A4:1 r:0.5 E5:0.5 D#5:0.5 | "
     "E5:0.5 D#5:0.5 E5:0.5 B4:0.5 D5:0.5 C5:0.5 | "
     "A4:1 r:0.5 C4:0.5 E4:0.5 A4:0.5 | B4:1 r:0.5 E4:0.5 G#4:0.5 B4:0.5 | "
     "C5:1 r:0.5 E4:0.5 E5:0.5 D#5:0.5 | "
     "E5:0.5 D#5:0.5 E5:0.5 B4:0.5 D5:0.5 C5:0.5 | "
     "A4:1 r:0.5 C4:0.5 E4:0.5 A4:0.5 | B4:1 r:0.5 E4:0.5 C5:0.5 B4:0.5 | "
     "A4:3",
     "- - Am E Am - Am E Am - Am E Am - Am E Am"),
)


def main(argv=None) -> int:
  return demo.render_main(argv, __doc__, "/tmp/instruments", TUNES,
                          INSTRUMENTS, SOUNDFONT,
                          "musescore-general-soundfont-small", seed=1000)


if __name__ == "__main__":
  sys.exit(main())
