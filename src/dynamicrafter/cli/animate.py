"""``dynamicrafter animate``: image (+ prompt) -> video, for one image or a folder in the released prompt format."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dynamicrafter.commands.common import (
    add_model_options,
    add_sampling_options,
    check_output_path,
    generator_for,
    load_pipeline,
    resolve_seed,
    sampling_options,
)
from dynamicrafter.errors import UserError
from dynamicrafter.media import save_video

EXAMPLES = """examples:
  dynamicrafter animate bear.png --prompt "a brown bear is walking" -o bear.mp4
  dynamicrafter animate bear.png -p "bear walking" -c dynamicrafter_256/model.ckpt --frame-stride 3 -o bear.gif
  dynamicrafter animate prompts/512/ -c dynamicrafter_512/model.ckpt -o results/   # folder + test_prompts.txt
  dynamicrafter animate bear.png -p "bear walking" --frames 32 --window 16 --window-stride 8 -o long.mp4
  dynamicrafter animate bear.png -p "bear walking" --image-attention-scale input=0.5,middle=1,output=1 -o b.mp4
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("animate", help="animate an image (or a folder of images with test_prompts.txt)",
                              description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("image", help="input image, or a folder of images with a prompt file (one prompt per line, in the "
                                 "sorted order of the images)")
    p.add_argument("--output", "-o", required=True,
                   help="output video (.mp4/.gif/.webp, or a folder name for PNG frames); for a folder input: the "
                        "output folder")
    p.add_argument("--format", default="mp4", choices=["mp4", "gif", "webp", "png"],
                   help="file format of each video in folder mode (default mp4)")
    p.add_argument("--overwrite", action="store_true", help="folder mode: redo videos that already exist")
    add_sampling_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.image)
    if not src.exists():
        raise UserError(f"input not found: '{src}' (pass an image file or a folder with images + test_prompts.txt)")
    jobs = _folder_jobs(args, src) if src.is_dir() else [(src, args.prompt or "", check_output_path(args.output))]
    if src.is_file() and args.prompt is None:
        print("warning: no --prompt given; animating with an empty prompt")
    pending = [j for j in jobs if args.overwrite or not j[2].exists() or src.is_file()]
    if len(pending) < len(jobs):
        print(f"resuming: {len(jobs) - len(pending)} of {len(jobs)} videos already exist (use --overwrite to redo)")
    if not pending:
        return 0
    pipe = load_pipeline(args)
    seed = resolve_seed(args.seed)
    fps = args.fps or pipe.config.defaults.save_fps
    options = sampling_options(args)
    for image_path, prompt, out_path in pending:
        t0 = time.perf_counter()
        result = pipe(image_path, prompt, options, negative_prompt=args.negative_prompt,
                      generator=generator_for(seed))
        written = save_video(result.frames[0], out_path, fps=fps)
        print(f"saved {written} ({len(result.frames[0])} frames) in {time.perf_counter() - t0:.1f}s")
    return 0


def _folder_jobs(args: argparse.Namespace, folder: Path) -> list[tuple[Path, str, Path]]:
    out_dir = Path(args.output)
    if out_dir.suffix:
        raise UserError(f"folder input needs an output folder, got '{out_dir}'")
    suffix = "" if args.format == "png" else f".{args.format}"
    return [(images[0], prompt, out_dir / f"{images[0].stem}{suffix}") for images, prompt in load_prompt_folder(folder)]


def load_prompt_folder(folder: str | Path, interp: bool = False) -> list[tuple[list[Path], str]]:
    """A folder in the released ``prompts/`` format: images plus ``test_prompts.txt`` (one prompt per line, in the
    sorted order of the images; for interpolation, pairs NAME_01 / NAME_02 per prompt)."""
    folder = Path(folder)
    prompt_files = sorted(folder.glob("*.txt"))
    if not prompt_files:
        raise UserError(f"no prompt file (*.txt) in '{folder}': add test_prompts.txt with one prompt per image")
    prompts = [line.strip() for line in prompt_files[0].read_text().splitlines() if line.strip()]
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    per = 2 if interp else 1
    if len(images) < per * len(prompts):
        raise UserError(f"'{folder}' has {len(prompts)} prompts but {len(images)} images (need {per} per prompt)")
    return [(images[per * i : per * (i + 1)], p) for i, p in enumerate(prompts)]
