"""``dynamicrafter animate``: image (+ prompt) -> video, for one image or a folder in the released prompt format."""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamicrafter.cli.options import (
    VIDEO_SUFFIXES,
    add_model_options,
    add_output_options,
    add_sampling_options,
    check_output_path,
    check_writable_folder,
    generator_for,
    load_pipeline,
    resolve_seed,
    sampling_options,
)
from dynamicrafter.errors import UserError
from dynamicrafter.options import SamplingOptions

PROMPTS_FILE = "test_prompts.txt"  # the released prompts/ folders' name

EXAMPLES = """examples:
  dynamicrafter animate bear.png --prompt "a brown bear is walking" -o bear.mp4
  dynamicrafter animate bear.png -p "bear walking" -c dynamicrafter_256/model.ckpt --frame-stride 3 -o bear.gif
  dynamicrafter animate prompts/512/ -c dynamicrafter_512/model.ckpt -o results/   # folder + test_prompts.txt
  dynamicrafter animate bear.png -p "bear walking" --frames 32 --window 16 --window-stride 8 -o long.mp4
  dynamicrafter animate bear.png -p "bear walking" --image-attention-scale input=0.5,middle=1,output=1 -o b.mp4

folder mode: the images of FOLDER (.png .jpg .jpeg .webp .bmp, sorted by name) are animated with the prompts of
FOLDER/test_prompts.txt (or --prompts-file), one line per image in that order; other files are listed and skipped.
Each video is written atomically; a rerun skips the complete ones (--overwrite redoes them).
"""


@dataclass(frozen=True)
class Job:
    image: Path
    prompt: str
    output: Path


@dataclass(frozen=True)
class PromptFolder:
    """A folder in the released ``prompts/`` format: per prompt its images (one, or a pair for interpolation)."""

    items: list[tuple[list[Path], str]]
    skipped: list[str]  # names of the files that are not used


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("image", help="input image, or a folder of images with a prompt file (one prompt per line, in the "
                                 "sorted order of the images)")
    add_output_options(p, "output video (.mp4/.gif/.webp, or a folder name for PNG frames); for a folder input: the "
                          "output folder")
    p.add_argument("--format", default="mp4", choices=["mp4", "gif", "webp", "png"],
                   help="file format of each video in folder mode (default mp4)")
    p.add_argument("--prompts-file", help=f"folder mode: the prompt file (default: FOLDER/{PROMPTS_FILE})")
    p.add_argument("--overwrite", action="store_true", help="folder mode: redo videos that already exist")
    add_sampling_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.image)
    if not src.exists():
        raise UserError(f"input not found: '{src}' (pass an image file or a folder with images + {PROMPTS_FILE})")
    options = sampling_options(args)
    seed = resolve_seed(args.seed)
    if src.is_dir():
        return _run_folder(args, src, options, seed)
    if args.prompts_file:
        raise UserError("--prompts-file is for a folder input; give the prompt of one image with --prompt")
    job = Job(src, args.prompt or "", check_output_path(args.output))
    if args.prompt is None:
        print("warning: no --prompt given; animating with an empty prompt")
    pipe = load_pipeline(args)
    _animate(pipe, [job], options, seed, args)
    return 0


def _run_folder(args: argparse.Namespace, folder: Path, options: SamplingOptions, seed: int) -> int:
    """Folder mode: every image with its prompt; resumes by skipping the complete outputs."""
    out_dir = Path(args.output)
    if out_dir.suffix.lower() in VIDEO_SUFFIXES or out_dir.is_file():
        raise UserError(f"folder input needs an output folder, got '{out_dir}'")
    check_writable_folder(out_dir)
    prompts = load_prompt_folder(folder, args.prompts_file)
    if prompts.skipped:
        print(f"skipping {len(prompts.skipped)} file(s) of '{folder}': {', '.join(prompts.skipped)}")
    suffix = "" if args.format == "png" else f".{args.format}"
    jobs = [Job(images[0], prompt, out_dir / f"{images[0].stem}{suffix}") for images, prompt in prompts.items]
    pending = _pending(jobs, None, args.overwrite)  # PNG folders are checked once the frame count is known
    if pending:
        pipe = load_pipeline(args)
        with warnings.catch_warnings():  # the pipeline warns about the settings once it runs
            warnings.simplefilter("ignore")
            frames = pipe.resolve_options(options).num_frames  # also checks the options against the model
        pending = _pending(jobs, frames, args.overwrite)
    if len(pending) < len(jobs):
        print(f"resuming: {len(jobs) - len(pending)} of {len(jobs)} videos already exist (use --overwrite to redo)")
    if pending:
        _animate(pipe, pending, options, seed, args)
    return 0


def _pending(jobs: list[Job], frames: int | None, overwrite: bool) -> list[Job]:
    """The jobs whose output is not complete: missing, or a PNG folder without ``frames`` frames (with ``frames``
    None every PNG folder counts as pending)."""
    if overwrite:
        return list(jobs)
    out = []
    for job in jobs:
        if job.output.is_dir():
            done = frames is not None and len(list(job.output.glob("*.png"))) == frames
        else:
            done = job.output.is_file() and job.output.stat().st_size > 0
        if not done:
            out.append(job)
    return out


def _animate(pipe: Any, jobs: list[Job], options: SamplingOptions, seed: int, args: argparse.Namespace) -> None:
    from dynamicrafter.media import save_video

    fps = args.fps or pipe.config.defaults.save_fps
    for job in jobs:
        t0 = time.perf_counter()
        result = pipe(job.image, job.prompt, options, negative_prompt=args.negative_prompt,
                      generator=generator_for(seed))
        written = save_video(result.frames[0], job.output, fps=fps)
        print(f"saved {written} ({len(result.frames[0])} frames) in {time.perf_counter() - t0:.1f}s")


def load_prompt_folder(folder: str | Path, prompts_file: str | Path | None = None,
                       interp: bool = False) -> PromptFolder:
    """A folder in the released ``prompts/`` format: images plus ``test_prompts.txt`` (or ``prompts_file``), one
    prompt per line in the sorted order of the images; for interpolation, pairs NAME_01 / NAME_02 per prompt. Images
    beyond the prompts and other files are listed in ``skipped``."""
    from dynamicrafter.media import IMAGE_EXTENSIONS

    folder = Path(folder)
    prompt_path = Path(prompts_file) if prompts_file else folder / PROMPTS_FILE
    if not prompt_path.is_file():
        others = sorted(p.name for p in folder.glob("*.txt"))
        hint = f" (the folder has {', '.join(others)}: name the prompt file with --prompts-file)" if others else ""
        raise UserError(f"no prompt file '{prompt_path}'{hint}; add {PROMPTS_FILE} with one prompt per image")
    prompts = [line.strip() for line in prompt_path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"prompt file '{prompt_path}' holds no prompts (one prompt per line, one line per image)")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    per = 2 if interp else 1
    if len(images) < per * len(prompts):
        raise UserError(f"'{folder}' has {len(prompts)} prompts but {len(images)} images (need {per} per prompt)")
    used = images[: per * len(prompts)]
    stems = [p.stem for p in used]
    if len(set(stems)) < len(stems):
        twins = sorted({p.name for p in used if stems.count(p.stem) > 1})
        raise UserError(f"'{folder}': images {', '.join(twins)} share a name and would write the same output")
    skipped = [p.name for p in files if p not in used and p.resolve() != prompt_path.resolve()]
    return PromptFolder([(used[per * i : per * (i + 1)], p) for i, p in enumerate(prompts)], skipped)
