"""The swapped-caption accuracy of two scored runs of the same first frames, and their paired difference.

``python tools/paired_swapped.py A B``: ``A`` and ``B`` are a ``rescore.json`` (the records of
``python -m dynamicrafter.recipe.rescore``) or a ``swapped.json`` (its ``--confusion-only`` result) scored on the same
held-out clips and seeds. Prints each accuracy and A - B with 95% bootstrap intervals over the first frames
(:mod:`dynamicrafter.metrics.bootstrap`); when both are rescore.json files, also the first-frame shape IoU and colour
error (per first frame, the mean over its videos) and the true-caption accuracy (its one video with its own caption).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynamicrafter.errors import ConfigError
from dynamicrafter.metrics.bootstrap import bootstrap_interval, paired_difference_interval
from dynamicrafter.recipe.rescore import VideoRecord, confusion

CONFORMITY = ("first_iou", "first_colour_error")


def read_scores(path: Path) -> dict[str, dict[int, float]]:
    """Per measure, per first frame (clip id): ``swapped`` the share of its videos that show the motion the prompt
    names; from a rescore.json also whether its true-caption video shows its motion (``true_caption``) and the mean
    first-frame IoU and colour error of its videos."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read '{path}' as JSON ({error}): pass the rescore.json or swapped.json that "
                          f"rescore --out wrote") from error
    if "frame_accuracy" in payload:  # swapped.json
        return {"swapped": {int(k): float(v) for k, v in payload["frame_accuracy"].items()}}
    if "records" in payload:  # rescore.json
        records = [VideoRecord(**r) for r in payload["records"]]
        true = [r for r in records if r.prompt_motion == r.motion]
        scores = {"swapped": confusion(records).frame_accuracy,
                  "true_caption": {r.clip_id: float(r.verdict == "correct") for r in true}}
        for key in CONFORMITY:
            by_frame: dict[int, list[float]] = {}
            for r in records:
                by_frame.setdefault(r.clip_id, []).append(getattr(r, key))
            scores[key] = {k: float(np.mean(v)) for k, v in by_frame.items()}
        return scores
    raise ConfigError(f"'{path}' is neither a rescore.json nor a swapped.json (keys {sorted(payload)[:5]}): pass the "
                      f"file that rescore --out wrote")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    scores_a, scores_b = read_scores(args.a), read_scores(args.b)
    a, b = scores_a["swapped"], scores_b["swapped"]
    if sorted(a) != sorted(b):
        raise ConfigError(f"the two files score different first frames ({len(a)} and {len(b)} clips, "
                          f"{len(set(a) ^ set(b))} not shared): compare runs of the same held-out clips")
    ids = sorted(a)
    print(f"A {args.a}\nB {args.b}")
    for key in [k for k in ("swapped", "true_caption", *CONFORMITY) if k in scores_a and k in scores_b]:
        x, y = [scores_a[key][i] for i in ids], [scores_b[key][i] for i in ids]
        print(f"{key}: A {bootstrap_interval(x).format(3)}, B {bootstrap_interval(y).format(3)}, A - B (paired over "
              f"{len(ids)} first frames) {paired_difference_interval(x, y).format(3, signed=True)}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
