"""``dynamicrafter interpolate | loop | story | lambda``: the applications on the command line.

The generation commands share ``animate``'s sampling, stream and window options and write the same formats
(.mp4 / .gif / .webp, or a folder name for PNG frames).
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any

from dynamicrafter.cli.options import (
    add_model_options,
    add_output_options,
    add_sampling_options,
    check_output_path,
    check_writable_folder,
    generator_for,
    load_pipeline,
    positive_fps,
    resolve_seed,
    sampling_options,
)
from dynamicrafter.errors import UserError
from dynamicrafter.options import LOOP_METHODS

OUTPUT_HELP = "output video (.mp4/.gif/.webp, or a folder for PNGs)"

INTERPOLATE_EXAMPLES = """examples:
  dynamicrafter interpolate smile_01.png smile_02.png -p "a smiling girl" -c interp/model.ckpt -o smile.mp4
  dynamicrafter interpolate k1.png k2.png k3.png -p "she turns" -p "she waves" -o walk.gif   # one prompt per pair
  dynamicrafter interpolate k1.png k2.png k3.png --prompts-file prompts.txt --frames 32 --window -o long.mp4
"""
LOOP_EXAMPLES = """examples:
  dynamicrafter loop loop_beach.png -p "waves crash on the beach" -o beach.gif        # a ring loop (16 frames)
  dynamicrafter loop loop_beach.png -p "waves crash on the beach" -c interp/model.ckpt -o beach.gif  # closed loop
"""
STORY_EXAMPLES = """examples:
  dynamicrafter story story.yaml -o story.mp4                 # also writes story.story.json (the sidecar)
  dynamicrafter story story.story.json --shot 2 -o shot2.mp4  # re-render shot 2 alone, bit-identically

script (YAML or JSON):
  crossfade: 4                      # frames blended between shots (0 = hard cuts)
  seed: 123                         # shots without a seed use seed + index
  defaults: {steps: 50}             # applied to every shot
  shots:
    - {image: bear.png, prompt: a bear walks, frame_stride: 3}
    - {image: boat.png, prompt: a boat sails, seed: 7, frames: 16}
  shot fields: image, prompt, negative_prompt, end_image, loop, loop_method, frames, frame_stride, seed, steps,
  guidance_scale, image_guidance_scale, guidance_rescale, eta, image_attention_scale, context_stream, vdg, window,
  window_stride, window_weighting
"""
LAMBDA_EXAMPLES = """examples:
  dynamicrafter lambda dynamicrafter_256/model.ckpt -o lambda.png   # learned lambda per layer (paper Fig. 2 left)
"""


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    builders = {"interpolate": (run_interpolate, INTERPOLATE_EXAMPLES, _interpolate_arguments),
                "loop": (run_loop, LOOP_EXAMPLES, _loop_arguments),
                "story": (run_story, STORY_EXAMPLES, _story_arguments),
                "lambda": (run_lambda, LAMBDA_EXAMPLES, _lambda_arguments)}
    func, examples, add_arguments = builders[name]
    p = subparsers.add_parser(name, help=help_text, description=_doc(func), epilog=examples,
                              formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=func)


def _interpolate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keyframes", nargs="+", help="2 or more keyframe images, in order")
    add_output_options(p, OUTPUT_HELP)
    p.add_argument("--prompts-file", help="one prompt per line: one for all segments, or one per segment")
    add_sampling_options(p, multiple_prompts=True)
    add_model_options(p)


def _loop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="input image (the loop's first frame)")
    add_output_options(p, OUTPUT_HELP)
    p.add_argument("--method", choices=list(LOOP_METHODS),
                   help="ring: the image animated on a circular timeline, every frame distinct\n"
                        "  (default for image-to-video models)\n"
                        "closed: an interpolation from the image to itself whose closing frame is frame 0\n"
                        "  (default for interpolation models)\n"
                        "open: the released way, the closing frame sampled on its own")
    p.add_argument("--keep-last-frame", action="store_true",
                   help="also save the closing frame, a copy of frame 0\n"
                        "(by default the saved video plays seamlessly when repeated)")
    add_sampling_options(p)
    add_model_options(p)


def _story_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("script", help="story script (.yaml/.yml/.json) or a sidecar written by a previous run")
    p.add_argument("--output", "-o", required=True, help=OUTPUT_HELP)
    p.add_argument("--shot", type=int, metavar="N", help="render only shot N (1-based), alone, to --output")
    p.add_argument("--sidecar", help="where to write the sidecar JSON (default: OUTPUT with suffix .story.json)")
    p.add_argument("--seed", type=int, help="base seed for shots without their own (default: the script's, or 123)")
    p.add_argument("--crossfade", type=int, help="frames blended between shots (default: the script's, or 0)")
    p.add_argument("--fps", type=positive_fps, help="frame rate of the written video (default: the script's, or 8)")
    add_model_options(p)


def _lambda_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=".ckpt or .safetensors file (only the attn2 tensors are read)")
    p.add_argument("--output", "-o", help="bar chart PNG (bar per layer, coloured by input / middle / output)")
    p.add_argument("--config", help="preset or YAML when the file's kind cannot be detected")


def _doc(func) -> str:
    return inspect.cleandoc(func.__doc__ or "")


def _prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise UserError(f"prompts file not found: '{path}' (one prompt per line)")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        print("warning: no --prompt given; interpolating with an empty prompt")
    return prompts or [""]


def _saved(path: Path, frames: int, t0: float) -> None:
    print(f"saved {path} ({frames} frames) in {time.perf_counter() - t0:.1f}s")


def run_interpolate(args: argparse.Namespace) -> int:
    """Generative frame interpolation: the first and last frame latents in the VDG input (zeros between), the
    context stream from the first frame. With N keyframes, each consecutive pair is interpolated and the duplicated
    boundary frames are removed: (N - 1) * (T - 1) + 1 frames."""
    from dynamicrafter.apps.interpolation import interpolate_keyframes
    from dynamicrafter.media import save_video

    out_path = check_output_path(args.output)
    if len(args.keyframes) < 2:
        raise UserError(f"interpolate needs at least 2 keyframes, got {len(args.keyframes)}")
    for keyframe in args.keyframes:
        if not Path(keyframe).is_file():
            raise UserError(f"keyframe not found: '{keyframe}'")
    prompts = _prompts(args)
    if len(prompts) not in (1, len(args.keyframes) - 1):
        raise UserError(f"got {len(prompts)} prompts for {len(args.keyframes)} keyframes: give one prompt, or one per "
                        f"segment ({len(args.keyframes) - 1})")
    options, seed = sampling_options(args), resolve_seed(args.seed)
    pipe = load_pipeline(args)
    t0 = time.perf_counter()
    result = interpolate_keyframes(pipe, args.keyframes, prompts, options, negative_prompt=args.negative_prompt,
                                   generator=generator_for(seed))
    written = save_video(result.frames[0], out_path, fps=args.fps or pipe.config.defaults.save_fps)
    _saved(written, len(result.frames[0]), t0)
    return 0


def run_loop(args: argparse.Namespace) -> int:
    """A looping video of the image that plays seamlessly when repeated. Image-to-video models animate it on a
    circular timeline (--method ring: T distinct frames, the last one the first one's neighbour); interpolation
    models interpolate from the image to itself with frame 0 as the closing frame (--method closed: T - 1 frames)."""
    from dynamicrafter.apps.interpolation import loop
    from dynamicrafter.media import save_video

    out_path = check_output_path(args.output)
    if not Path(args.image).is_file():
        raise UserError(f"input image not found: '{args.image}'")
    if args.prompt is None:
        print("warning: no --prompt given; looping with an empty prompt")
    options, seed = sampling_options(args), resolve_seed(args.seed)
    pipe = load_pipeline(args)
    t0 = time.perf_counter()
    result = loop(pipe, args.image, args.prompt or "", options, method=args.method,
                  drop_last_frame=not args.keep_last_frame, negative_prompt=args.negative_prompt,
                  generator=generator_for(seed))
    written = save_video(result.frames[0], out_path, fps=args.fps or pipe.config.defaults.save_fps)
    _saved(written, len(result.frames[0]), t0)
    return 0


def run_story(args: argparse.Namespace) -> int:
    """Storytelling with shots: render every shot of a script (each with its own seed), join them with optional
    cross-fades, and write a sidecar JSON with every setting, seed and the model identity; `--shot N` re-renders
    one shot alone (from a script or a sidecar), bit-identically."""
    from dynamicrafter.apps.story import model_mismatch, render_shot, render_story, resolve_shot, sidecar
    from dynamicrafter.media import atomic_path, save_video

    out_path = check_output_path(args.output)
    story, sidecar_path = _story_and_sidecar(args, out_path)
    recorded = story.model or {}
    args.checkpoint = args.checkpoint or story.checkpoint
    args.config = args.config or story.config
    if args.dtype == "auto" and recorded.get("dtype"):
        args.dtype = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(recorded["dtype"], "auto")
    pipe = load_pipeline(args)
    mismatch = model_mismatch(recorded, pipe)
    if mismatch:
        print(f"warning: the model differs from the one recorded in the sidecar ({mismatch}); the shots will not be "
              f"bit-identical")
    fps = args.fps or story.fps or pipe.config.defaults.save_fps
    t0 = time.perf_counter()
    if args.shot is not None:
        shot = resolve_shot(pipe, story.shots[args.shot - 1], args.shot - 1)
        clip = render_shot(pipe, shot)
        written = save_video(clip, out_path, fps=fps)
        _saved(written, clip.shape[1], t0)
        print(f"shot {args.shot}: seed {shot.seed}, {shot.options.num_frames} frames, prompt {shot.prompt!r}")
        return 0
    result = render_story(pipe, story)
    written = save_video(result.video, out_path, fps=fps)
    _saved(written, result.video.shape[1], t0)
    with atomic_path(sidecar_path) as tmp:
        tmp.write_text(json.dumps(sidecar(story, result, pipe, fps), indent=2) + "\n")
    print(f"sidecar {sidecar_path} ({len(result.shots)} shots; re-render one with: dynamicrafter story "
          f"{sidecar_path} --shot N -o shotN{out_path.suffix})")
    return 0


def _story_and_sidecar(args: argparse.Namespace, out_path: Path) -> tuple[Any, Path]:
    """The script with the command line's overrides, and where its sidecar goes (checked before any work)."""
    from dynamicrafter.apps.story import load_story

    story = load_story(args.script, seed=args.seed)
    if args.crossfade is not None:
        if args.crossfade < 0:
            raise UserError(f"--crossfade must be >= 0 frames, got {args.crossfade}")
        story.crossfade = args.crossfade
    if args.shot is not None and not 1 <= args.shot <= len(story.shots):
        raise UserError(f"--shot {args.shot} is out of range: the script has shots 1 to {len(story.shots)}")
    sidecar_path = Path(args.sidecar or out_path.with_name(out_path.name.split(".")[0] + ".story.json"))
    if args.shot is None and sidecar_path.resolve() == Path(args.script).resolve():
        raise UserError(f"the sidecar would overwrite the script '{args.script}': pass --sidecar PATH")
    if args.shot is None:
        check_writable_folder(sidecar_path.parent, sidecar_path)
    return story, sidecar_path


def run_lambda(args: argparse.Namespace) -> int:
    """Print the lambda of every dual cross-attention layer of a checkpoint (learned for the 256 model:
    lambda = s * (tanh(alpha) + 1)), and plot it per layer, grouped by input / middle / output blocks (paper Fig. 2
    left). Only the attn2 tensors and the config are read; no model is built."""
    from dynamicrafter.apps.lambdas import format_lambdas, motion_controls, plot_lambdas, read_checkpoint_lambdas
    from dynamicrafter.config import resolve_config

    path = Path(args.output) if args.output else None
    if path is not None:
        if path.suffix.lower() != ".png":
            raise UserError(f"--output must be a .png file, got '{path}'")
        check_writable_folder(path.parent, path)
    lambdas = read_checkpoint_lambdas(args.checkpoint, resolve_config(args.config) if args.config else None)
    print(format_lambdas(lambdas))
    print(motion_controls(lambdas.config).describe())
    if path is not None:
        print(f"saved {plot_lambdas(lambdas, path)}")
    return 0
