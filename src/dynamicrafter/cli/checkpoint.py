"""``dynamicrafter inspect``: what a checkpoint holds (model kind, networks, dtypes, parameter counts)."""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__)
    p.add_argument("checkpoint", help=".ckpt or .safetensors file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dynamicrafter.checkpoint import (
        components,
        config_from_metadata,
        describe,
        detect_preset,
        is_known_unused,
        read_state_dict,
    )
    from dynamicrafter.config import PRESETS

    sd = read_state_dict(args.checkpoint)
    config = config_from_metadata(sd)
    detected = detect_preset(sd, args.checkpoint)
    name = config.name if config is not None else detected
    print(f"file: {args.checkpoint}")
    print(f"model: {name or 'unknown (not a DynamiCrafter layout)'}"
          f"{' (config stored in the file)' if config is not None else ' (detected from the tensors)'}")
    config = config or PRESETS.get(detected or "", None)
    counts: dict[str, int] = defaultdict(int)
    dtypes: dict[str, Counter] = defaultdict(Counter)
    for key in sd.keys():
        shape, dtype = describe(sd, key)
        group = "other"
        for comp in components(config) if config is not None else []:
            if key.startswith(comp.official_prefix) or key.startswith(f"{comp.name}."):
                group = comp.name
                break
        if config is not None and is_known_unused(key, config):
            group = "unused by the released function"
        counts[group] += math.prod(shape)
        dtypes[group][dtype] += 1
    for group, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {group:34s} {n / 1e6:9.1f} M  {dict(dtypes[group])}")
    return 0
