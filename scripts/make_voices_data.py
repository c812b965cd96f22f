"""Renders a second small dataset for the conditioning experiment
(docs/results.md): the same English passages spoken by three espeak-ng voices.

    apt-get install espeak-ng                     # Debian 12: 1.51
    python scripts/make_voices_data.py [--out /tmp/voices]
    csrnn-prepare /tmp/voices /tmp/voices_prepared --chunk-seconds 2 --balance \\
        --trim-db -36

Why: speaker identity is the paper's second experiment, and three voices
reading the same words make the class the voice, not the text (as the demo's
piano and violin play the same tunes). Each passage is one file per voice
(8 passages: about 2 minutes per voice; csrnn-prepare splits by file, so
valid and test hear passages that train never does), rendered at espeak-ng's
22.05 kHz, resampled to 16 kHz with soxr, scaled to peak 0.9 and written as
16-bit FLAC. The passages are Aesop's fables as retold here; espeak-ng is
deterministic, so the files are the same on every run with the same version.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
PEAK = 0.9
# class -> (espeak-ng voice, pitch 0..99, words per minute)
VOICES = {"male_us": ("en-us+m3", 40, 150),
          "female_us": ("en-us+f3", 60, 160),
          "male_gb": ("en-gb+m1", 30, 140)}
PASSAGES = (
    ("fox_and_grapes",
     "A hungry fox saw some fine bunches of grapes hanging from a vine that "
     "was trained along a high trellis. He did his best to reach them by "
     "jumping as high as he could into the air. But it was all in vain, for "
     "they were just out of reach. So he gave up trying, and walked away with "
     "an air of dignity and unconcern, remarking, I thought those grapes were "
     "ripe, but I see now they are quite sour."),
    ("tortoise_and_hare",
     "A hare was one day making fun of a tortoise for being so slow upon his "
     "feet. Wait a bit, said the tortoise, I will run a race with you, and I "
     "wager that I win. The hare, who was much amused at the idea, said, "
     "let us try and see. It was soon agreed that the fox should set a course "
     "for them and be the judge. When the time came both started off "
     "together, but the hare was soon so far ahead that he thought he might "
     "as well have a rest, so down he lay and fell fast asleep."),
    ("lion_and_mouse",
     "A lion asleep in his lair was waked up by a mouse running over his "
     "face. Losing his temper he seized it with his paw and was about to kill "
     "it. The mouse, terrified, piteously entreated him to spare its life. "
     "Please let me go, it cried, and one day I will repay you for your "
     "kindness. The idea of so insignificant a creature ever being able to do "
     "anything for him amused the lion so much that he laughed aloud, and "
     "good humouredly let it go."),
    ("crow_and_pitcher",
     "A thirsty crow found a pitcher with some water in it, but so little was "
     "there that, try as she might, she could not reach it with her beak, and "
     "it seemed as though she would die of thirst within sight of the remedy. "
     "At last she hit upon a clever plan. She began dropping pebbles into the "
     "pitcher, and with each pebble the water rose a little higher until at "
     "last it reached the brim, and the knowing bird was enabled to quench "
     "her thirst."),
    ("north_wind_and_sun",
     "A dispute arose between the north wind and the sun, each claiming that "
     "he was stronger than the other. At last they agreed to try their powers "
     "upon a traveller, to see which could soonest strip him of his cloak. "
     "The north wind had the first try, and, gathering up all his force for "
     "the attack, he came whirling furiously down upon the man. But the "
     "harder he blew, the more closely did the man wrap it round himself. "
     "Then came the turn of the sun, who shone out warm and bright."),
    ("ant_and_grasshopper",
     "In a field one summer's day a grasshopper was hopping about, chirping "
     "and singing to its heart's content. An ant passed by, bearing along "
     "with great toil an ear of corn he was taking to the nest. Why not come "
     "and chat with me, said the grasshopper, instead of toiling and moiling "
     "in that way? I am helping to lay up food for the winter, said the ant, "
     "and recommend you to do the same. Why bother about winter, said the "
     "grasshopper, we have got plenty of food at present."),
    ("boy_who_cried_wolf",
     "There was once a shepherd boy who kept his flock at a little distance "
     "from the village. Once he thought he would play a trick on the "
     "villagers and have some fun at their expense. So he ran towards the "
     "village crying out, with all his might, wolf, wolf, come and help, the "
     "wolves are at my lambs. The kind villagers left their work and ran to "
     "the field to help him. But when they got there the boy laughed at them "
     "for their pains; there was no wolf there."),
    ("town_mouse_and_country_mouse",
     "A town mouse and a country mouse were acquaintances, and the country "
     "mouse one day invited his friend to come and see him at his home in the "
     "fields. The town mouse came, and they sat down to a dinner of barley "
     "corns and roots, the latter of which had a distinctly earthy flavour. "
     "The fare was not much to the taste of the guest, and presently he broke "
     "out with, my poor dear friend, you live here no better than the ants."),
)


def render(text: str, voice: str, pitch: int, wpm: int,
           workdir: pathlib.Path) -> np.ndarray:
  """espeak-ng -> mono int16 at SAMPLE_RATE, peak PEAK."""
  wav = workdir / "passage.wav"
  subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm),
                  "-w", str(wav), text], check=True)
  x, rate = sf.read(wav, dtype="float64", always_2d=True)
  x = soxr.resample(x.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
  x *= PEAK / np.abs(x).max()
  return np.round(x * 32767).astype(np.int16)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="/tmp/voices",
                      help="folder that gets one sub-folder per voice")
  args = parser.parse_args(argv)
  if shutil.which("espeak-ng") is None:
    print("error: needs espeak-ng: apt-get install espeak-ng", file=sys.stderr)
    return 2
  out = pathlib.Path(args.out)
  with tempfile.TemporaryDirectory() as tmp:
    for name, (voice, pitch, wpm) in VOICES.items():
      total = 0.0
      for index, (title, text) in enumerate(PASSAGES):
        x = render(text, voice, pitch, wpm, pathlib.Path(tmp))
        path = out / name / f"{index + 1:02d}_{title}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")
        total += len(x) / SAMPLE_RATE
      print(f"{name} ({voice}): {len(PASSAGES)} files, {total / 60:.2f} "
            "minutes")
  return 0


if __name__ == "__main__":
  sys.exit(main())
