"""The CLIP-style towers' reading of motion: which of the 9 motion captions a held-out clip's frame pair is nearest to.

``python tools/tower_motion.py RUN/clip/state.pt [--per-motion 20] [--rotation-gap]`` prints the per-motion accuracy
and the confusion rows of a recipe run's towers on held-out clips of the centred data. A clip is read as its (first,
last) frame pair; with ``--rotation-gap`` a rotation is read at the latest frame turned by at most half the smallest
symmetry angle instead (``pretrain.rotation_gap_pair``: a square turned by 90 degrees looks unturned, so the last frame
of a long rotation can hide its direction).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from dynamicrafter.data import synthetic as syn
from dynamicrafter.recipe import pretrain
from dynamicrafter.recipe.config import TINY
from dynamicrafter.recipe.report import held_out_clips
from dynamicrafter.recipe.tiny import DATA_PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", type=Path, help="a recipe run's clip/state.pt")
    parser.add_argument("--per-motion", type=int, default=20)
    parser.add_argument("--rotation-gap", action="store_true")
    args = parser.parse_args()
    towers = pretrain.load_towers(args.state, TINY.text_encoder, TINY.image_encoder)
    clips = held_out_clips(DATA_PRESETS["centred"], args.per_motion, min_stride=1)
    pair = pretrain.rotation_gap_pair if args.rotation_gap else pretrain.first_last
    choices = pretrain.tower_motion_choices(*towers, clips, pair)
    print(f"{args.state}, pairs {'rotation gap' if args.rotation_gap else '(first, last)'}, "
          f"{args.per_motion} held-out clips per motion")
    for motion in syn.MOTIONS:
        row = Counter(chosen for true, chosen in choices if true == motion)
        print(f"{motion:>10}: {row[motion] / args.per_motion:.2f}  {dict(row.most_common())}")
    print(f"{'all':>10}: {sum(true == chosen for true, chosen in choices) / len(choices):.3f}")


if __name__ == "__main__":
    main()
