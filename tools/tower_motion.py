"""The CLIP-style towers' reading of motion: which of the 9 motion captions a held-out clip's frame pair is nearest to.

``python tools/tower_motion.py STATE [--per-motion 20] [--rotation-gap] [--controls] [--text-distances]`` prints the
per-motion accuracy and the confusion rows of a recipe run's towers on held-out clips of the centred data. A clip is
read as its (first, last) frame pair; with ``--rotation-gap`` a rotation is read at the latest frame turned by at most
half the smallest symmetry angle instead (``pretrain.rotation_gap_pair``, the pair the towers train on: a square
turned by 90 degrees looks unturned, so the last frame of a long rotation can hide its direction). ``--controls`` adds
the readings that must fail: the rotation clips with their pair played backwards (read as the opposite turn by towers
that see the direction) and random-weight towers (chance, 0.111). ``--text-distances`` prints how far apart the text
features the U-Net reads (the used blocks, all 77 tokens) are for captions that differ only in the motion: the
relative distance |f(a) - f(b)| / mean(|f(a)|, |f(b)|), averaged over 36 held-out scenes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dynamicrafter.data import synthetic as syn
from dynamicrafter.models.clip import CLIPTextEncoder
from dynamicrafter.recipe import pretrain
from dynamicrafter.recipe.config import TINY
from dynamicrafter.recipe.report import held_out_clips
from dynamicrafter.recipe.tiny import DATA_PRESETS


def print_controls(towers: tuple, clips: list[syn.SyntheticClip], pair: Callable) -> None:
    """Rotation clips read backwards, and the same clips read by random-weight towers."""
    rotations = [clip for clip in clips if clip.scene.motion.startswith("rotate")]
    backwards = pretrain.tower_motion_choices(*towers, rotations, lambda clip: pair(clip)[::-1])
    for motion in ("rotate_cw", "rotate_ccw"):
        print(f"control, {motion} played backwards: {dict(Counter(c for t, c in backwards if t == motion))}")
    torch.manual_seed(1)
    random = (pretrain.full_text_tower(TINY.text_encoder).eval(), pretrain.CLIPImageEncoder(TINY.image_encoder).eval(),
              pretrain.ContrastiveHeads.for_towers(TINY.text_encoder, TINY.image_encoder).eval())
    choices = pretrain.tower_motion_choices(*random, clips, pair)
    print(f"control, random-weight towers: {sum(t == c for t, c in choices) / len(choices):.3f}")


DISTANCE_PAIRS = (("left", "right"), ("up", "down"), ("zoom_in", "zoom_out"), ("rotate_cw", "rotate_ccw"),
                  ("rotate_cw", "still"), ("left", "still"))


@torch.no_grad()
def print_text_distances(full_text: torch.nn.Module) -> None:
    text = CLIPTextEncoder(TINY.text_encoder)
    pretrain.copy_used_text_layers(full_text, text)
    text.eval()
    distances: dict[tuple[str, str], list[float]] = {pair: [] for pair in DISTANCE_PAIRS}
    for i, clip in enumerate(held_out_clips(DATA_PRESETS["centred"], 4, min_stride=1)):
        captions = list(pretrain.captions_by_motion(clip.scene, 1000 + i, motion_only=False).values())
        features = dict(zip(syn.MOTIONS, text.encode(captions)))  # motion -> (77, w)
        for a, b in DISTANCE_PAIRS:
            mean_norm = 0.5 * (features[a].norm() + features[b].norm())
            distances[(a, b)].append(((features[a] - features[b]).norm() / mean_norm).item())
    for (a, b), values in distances.items():
        print(f"text distance {a} / {b}: {np.mean(values):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", type=Path, help="a recipe run's clip/state.pt")
    parser.add_argument("--per-motion", type=int, default=20)
    parser.add_argument("--rotation-gap", action="store_true")
    parser.add_argument("--controls", action="store_true")
    parser.add_argument("--text-distances", action="store_true")
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
    if args.controls:
        print_controls(towers, clips, pair)
    if args.text_distances:
        print_text_distances(towers[0])


if __name__ == "__main__":
    main()
