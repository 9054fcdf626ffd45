"""The swapped-caption accuracy of two scored runs of the same first frames, and their paired difference.

``python tools/paired_swapped.py A B``: ``A`` and ``B`` are a ``rescore.json`` (the records of
``python -m dynamicrafter.recipe.rescore``) or a ``swapped.json`` (its ``--confusion-only`` result) scored on the same
held-out clips and seeds. Prints each accuracy and A - B with 95% bootstrap intervals over the first frames
(:mod:`dynamicrafter.metrics.bootstrap`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynamicrafter.errors import ConfigError
from dynamicrafter.metrics.bootstrap import bootstrap_interval, paired_difference_interval
from dynamicrafter.recipe.rescore import VideoRecord, confusion


def frame_accuracy(path: Path) -> dict[int, float]:
    """Per first frame (clip id): the share of its videos that show the motion the prompt names."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read '{path}' as JSON ({error}): pass the rescore.json or swapped.json that "
                          f"rescore --out wrote") from error
    if "frame_accuracy" in payload:  # swapped.json
        return {int(k): float(v) for k, v in payload["frame_accuracy"].items()}
    if "records" in payload:  # rescore.json
        return confusion([VideoRecord(**r) for r in payload["records"]]).frame_accuracy
    raise ConfigError(f"'{path}' is neither a rescore.json nor a swapped.json (keys {sorted(payload)[:5]}): pass the "
                      f"file that rescore --out wrote")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    a, b = frame_accuracy(args.a), frame_accuracy(args.b)
    if sorted(a) != sorted(b):
        raise ConfigError(f"the two files score different first frames ({len(a)} and {len(b)} clips, "
                          f"{len(set(a) ^ set(b))} not shared): compare runs of the same held-out clips")
    ids = sorted(a)
    print(f"A {args.a}: {bootstrap_interval([a[i] for i in ids]).format(3)}")
    print(f"B {args.b}: {bootstrap_interval([b[i] for i in ids]).format(3)}")
    print(f"A - B (paired over {len(ids)} first frames): "
          f"{paired_difference_interval([a[i] for i in ids], [b[i] for i in ids]).format(3, signed=True)}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
