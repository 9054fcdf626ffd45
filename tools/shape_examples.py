"""Write the shape example images (src/dynamicrafter/assets/examples/shapes_*.png and shapes/*.png) for the shipped
small model, picked by a stated rule from its rescore.

    python tools/shape_examples.py runs/rescore_centred/multi_4000/report/rescore.json

The candidates are the held-out first frames the rescore animated (``CENTRED_DATA``, split ``test``, 2 per motion,
frame stride 2). For each example motion (left, up, zoom in, zoom out) the pick is the clip of that motion
whose video with its own caption the tracker reads as that motion and, among those, whose first frame the model
animates right with the most of the 9 motion prompts (the swapped-caption test). The clip's own caption becomes the
example prompt (printed, for prompts.txt, shapes/test_prompts.txt and story.yaml).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from dynamicrafter.recipe.report import held_out_clips
from dynamicrafter.recipe.tiny import CENTRED_DATA

EXAMPLES = Path("src/dynamicrafter/assets/examples")
MOTIONS = ("left", "up", "zoom_in", "zoom_out")


def pick(records: list[dict], motion: str) -> int:
    """The clip id of ``motion`` whose true-caption video is right and whose swapped-caption share is highest."""
    ids = sorted({r["clip_id"] for r in records if r["motion"] == motion})

    def share(clip_id: int) -> float:
        own = [r for r in records if r["clip_id"] == clip_id]
        return sum(r["verdict"] == "correct" for r in own) / len(own)

    right = [i for i in ids if any(r["clip_id"] == i and r["prompt_motion"] == motion and r["verdict"] == "correct"
                                   for r in records)]
    if not right:
        raise SystemExit(f"no held-out clip of {motion!r} is animated right with its own caption: pick by hand")
    return max(right, key=lambda i: (share(i), -i))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rescore", type=Path, help="rescore.json of the shipped model (recipe.rescore --out)")
    records = json.loads(parser.parse_args().rescore.read_text())["records"]
    clips = {c.scene.clip_id: c for c in held_out_clips(CENTRED_DATA, 2)}
    for motion in MOTIONS:
        clip = clips[pick(records, motion)]
        image = Image.fromarray(clip.frames[0])
        image.save(EXAMPLES / f"shapes_{motion}.png")
        image.save(EXAMPLES / "shapes" / f"{motion}.png")
        print(f"shapes_{motion}.png\t{clip.scene.caption}\t(clip {clip.scene.clip_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
