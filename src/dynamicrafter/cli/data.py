"""``dynamicrafter annotate`` (motion scores for a video index) and ``dynamicrafter synth`` (generated data set)."""

from __future__ import annotations

import argparse
import re

from dynamicrafter.cli.options import finite_float
from dynamicrafter.errors import UserError

ANNOTATE_EXAMPLES = """examples:
  dynamicrafter annotate webvid/results_2M_train.csv --root webvid/videos -o webvid/train_scored.csv
  dynamicrafter annotate clips/index.jsonl --frames 12 --size 96

The score is the mean Farneback optical-flow magnitude over FRAMES frames spread evenly over each clip, in pixels
per step at a frame size whose shorter side is SIZE (see dynamicrafter.data.motion). Train on moving clips only
with VideoDataConfig(min_motion_score=...). Rows that already have a score are kept unless --overwrite; an
interrupted run resumes where it stopped when re-run with the same arguments."""

SYNTH_EXAMPLES = """examples:
  dynamicrafter synth data/synth --num-clips 5000 --seed 0
  dynamicrafter synth data/synth --num-clips 200 --seed 0 --split test
  dynamicrafter synth data/synth --num-clips 200 --split novel --hold-out star:green --hold-out ring:blue
  dynamicrafter synth data/centred --num-clips 5000 --layout centred   # no first-frame shortcut (64 x 64)

Writes OUT_DIR/videos/<split>_<id>.mp4 and the index OUT_DIR/<split>.csv (path, caption, fps, labels), which
VideoDataConfig(index=...) reads. Test and novel splits also get OUT_DIR/<split>_prompts/: first-frame PNGs and
test_prompts.txt (the released prompts-folder format) plus labels.jsonl. The same --seed (and --held-out-fraction,
--hold-out) gives the same clips; train and test never share a clip. For training, SyntheticVideoDataset renders
the same clips in memory without writing files."""

SIZE_PATTERN = re.compile(r"^(\d+)(?:x(\d+))?$")


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    {"annotate": _add_annotate, "synth": _add_synth}[name](subparsers, name, help_text)


def _add_annotate(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    from dynamicrafter.data.motion import DEFAULT_ANNOTATE_FRAMES, DEFAULT_FLOW_SIZE, DEFAULT_SAVE_EVERY

    p = subparsers.add_parser(
        name, help=help_text,
        description="Score how much each clip of an index moves and write the score as a motion_score column.",
        epilog=ANNOTATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="WebVid CSV (videoid, page_dir, name) or generic CSV/JSONL index (path, caption)")
    p.add_argument("--root", help="folder the index's video paths are relative to (default: the index's folder)")
    p.add_argument("-o", "--output", help="where to write the annotated index (default: rewrite INDEX in place)")
    p.add_argument("--frames", type=int, default=DEFAULT_ANNOTATE_FRAMES,
                   help=f"frames sampled per clip (default {DEFAULT_ANNOTATE_FRAMES})")
    p.add_argument("--size", type=int, default=DEFAULT_FLOW_SIZE,
                   help=f"shorter side (pixels) frames are resized to for the flow (default {DEFAULT_FLOW_SIZE})")
    p.add_argument("--overwrite", action="store_true", help="recompute scores that are already present")
    p.add_argument("--save-every", type=int, default=DEFAULT_SAVE_EVERY,
                   help=f"rewrite the output after this many newly scored clips (default {DEFAULT_SAVE_EVERY})")
    p.set_defaults(func=run_annotate)


def _add_synth(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    from dynamicrafter.data.synthetic import LAYOUTS, SPLITS, SyntheticConfig

    defaults = SyntheticConfig()
    p = subparsers.add_parser(
        name, help=help_text,
        description="Render the synthetic data set (moving shapes with captions) to mp4 files and an index.",
        epilog=SYNTH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--num-clips", type=int, default=defaults.num_clips,
                   help=f"clips in the split (default {defaults.num_clips})")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"data set seed (default {defaults.seed})")
    p.add_argument("--split", choices=SPLITS, default="train", help="which split to write (default train)")
    p.add_argument("--size", default=f"{defaults.height}",
                   help=f"frame size: N (square) or HxW (default {defaults.height})")
    p.add_argument("--frames", type=int, default=defaults.frames, help=f"frames per clip (default {defaults.frames})")
    p.add_argument("--fps", type=int, default=defaults.fps, help=f"frame rate of the videos (default {defaults.fps})")
    p.add_argument("--motion-only-fraction", type=finite_float, default=defaults.motion_only_fraction,
                   help=f"fraction of captions naming only the motion (default {defaults.motion_only_fraction})")
    p.add_argument("--held-out-fraction", type=finite_float, default=defaults.held_out_fraction,
                   help=f"fraction of clip ids reserved for the test split (default {defaults.held_out_fraction})")
    p.add_argument("--hold-out", action="append", default=[], metavar="SHAPE:COLOUR",
                   help="a (shape, colour) kept out of train/test, used by the novel split (repeatable)")
    p.add_argument("--layout", choices=LAYOUTS, default=defaults.layout,
                   help="scene layout: released (the shipped model's data; the first frame gives the motion away) "
                        "or centred (same start and size for every motion; needs frames of 39 px or more)")
    p.add_argument("--prompts", action=argparse.BooleanOptionalAction, default=None,
                   help="also write first-frame images + test_prompts.txt (default: on for test and novel)")
    p.set_defaults(func=run_synth)


def run_annotate(args: argparse.Namespace) -> int:
    from dynamicrafter.data.motion import annotate_index

    if args.save_every < 1 or args.size < 1:
        raise UserError("--save-every and --size must be positive")
    report = annotate_index(args.index, args.output, args.root, num_frames=args.frames, size=args.size,
                            overwrite=args.overwrite, save_every=args.save_every)
    print(f"{report.output}: {report.scored} clips scored, {report.already_scored} already had a score, "
          f"{report.failed} could not be read")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    """``"64"`` -> (64, 64); ``"48x64"`` -> (48, 64) as (height, width)."""
    match = SIZE_PATTERN.match(text.strip())
    if not match:
        raise UserError(f"--size must be N or HxW (e.g. 64 or 48x64), got {text!r}")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def parse_combo(text: str) -> tuple[str, str]:
    shape, sep, colour = text.partition(":")
    if not sep:
        raise UserError(f"--hold-out must be SHAPE:COLOUR (e.g. star:green), got {text!r}")
    return shape.strip(), colour.strip()


def run_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynamicrafter.data.synthetic import SyntheticConfig, write_prompt_images, write_video_split

    height, width = parse_size(args.size)
    config = SyntheticConfig(num_clips=args.num_clips, frames=args.frames, height=height, width=width, seed=args.seed,
                             motion_only_fraction=args.motion_only_fraction, held_out_fraction=args.held_out_fraction,
                             held_out_combos=tuple(parse_combo(c) for c in args.hold_out), fps=args.fps,
                             layout=args.layout)
    index = write_video_split(config, args.out_dir, args.split)
    print(f"{index}: {config.num_clips} {args.split} clips ({height}x{width}, {config.frames} frames)")
    if args.prompts if args.prompts is not None else args.split != "train":
        prompts = write_prompt_images(config, Path(args.out_dir) / f"{args.split}_prompts", args.split)
        print(f"{prompts}: first-frame images and prompts")
    return 0
