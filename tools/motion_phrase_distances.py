"""How far apart a model's text tower puts one caption with different motion phrases.

``python tools/motion_phrase_distances.py CHECKPOINT [--clips 3]``: for the first held-out clip of the first
``--clips`` motions of the centred data, the caption with each of the 9 motion phrases is encoded to the U-Net's
context tokens (77 x width); prints the Euclidean distance between every pair of flattened token sets, divided by the
largest pair's, and the mean over the clips for the translation pairs and the rotation / still pairs.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from dynamicrafter.data import synthetic as syn
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe.report import held_out_clips
from dynamicrafter.recipe.rescore import swap_caption
from dynamicrafter.recipe.tiny import CENTRED_DATA

GROUPS = {"translations": ("left", "right", "up", "down"), "rotations + still": ("rotate_cw", "rotate_ccw", "still")}


@torch.no_grad()
def relative_distances(pipe: DynamiCrafterPipeline, clip: syn.SyntheticClip) -> np.ndarray:
    captions = [swap_caption(clip.scene.caption, clip.scene.motion, m) for m in syn.MOTIONS]
    tokens = pipe.model.text_encoder.encode(captions).flatten(1)  # (9, 77 * width)
    d = torch.cdist(tokens, tokens).numpy()
    return d / d.max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--clips", type=int, default=3)
    args = parser.parse_args()
    pipe = DynamiCrafterPipeline.from_checkpoint(args.checkpoint, device="cpu", dtype=torch.float32)
    np.set_printoptions(precision=2, suppress=True, linewidth=150)
    clips = held_out_clips(CENTRED_DATA, 1)[: args.clips]
    tables = [relative_distances(pipe, clip) for clip in clips]
    for clip, table in zip(clips, tables):
        print(clip.scene.caption, "\n", table)
    for name, group in GROUPS.items():
        pairs = [(syn.MOTIONS.index(a), syn.MOTIONS.index(b)) for a, b in itertools.combinations(group, 2)]
        values = [t[i, j] for t in tables for i, j in pairs]
        print(f"{name}: pairwise relative distance {min(values):.2f}-{max(values):.2f}, mean {np.mean(values):.2f}")


if __name__ == "__main__":
    main()
