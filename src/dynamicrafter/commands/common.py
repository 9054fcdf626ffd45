"""Options shared by the generation commands (animate, interpolate, loop, story) and pipeline loading."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from dynamicrafter.errors import UserError
from dynamicrafter.options import DEFAULT_SEED, SETTING_NAMES, WEIGHTINGS, SamplingOptions


def add_model_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", "-c", help="released model.ckpt / .safetensors, or the project's own; default: "
                   "$DYNAMICRAFTER_CHECKPOINT, else the built-in small model")
    g.add_argument("--config", help="preset (256, 512, 1024, 512_interp) or a released YAML; default: detected")
    g.add_argument("--text-encoder", help="separate CLIP text tower (for repacks without cond_stage_model.*)")
    g.add_argument("--image-encoder", help="separate CLIP image tower (OpenCLIP ViT-H-14 weights)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="weights dtype (auto: fp32 on CPU, bf16 on CUDA)")


def add_sampling_options(parser: argparse.ArgumentParser, multiple_prompts: bool = False) -> None:
    """The shared sampling options, then the stream and long-video controls (:func:`add_control_options`).

    ``multiple_prompts``: ``--prompt`` may be repeated (a list, e.g. one prompt per interpolation segment).
    """
    g = parser.add_argument_group("sampling (defaults: the released settings of the loaded model)")
    if multiple_prompts:
        g.add_argument("--prompt", "-p", action="append", default=None,
                       help="text prompt; repeat it for one prompt per segment")
    else:
        g.add_argument("--prompt", "-p", default=None, help="text prompt (motion and scene)")
    g.add_argument("--negative-prompt", default=None, help="replaces the empty prompt of the unconditional branch")
    g.add_argument("--steps", type=int, help="DDIM steps (released: 50)")
    g.add_argument("--guidance-scale", type=float, help="text classifier-free guidance scale (released: 7.5)")
    g.add_argument("--image-guidance-scale", type=float, help="separate image guidance scale (third branch)")
    g.add_argument("--guidance-rescale", type=float, help="guidance rescale phi (released: 0 for 256, 0.7 otherwise)")
    g.add_argument("--eta", type=float, help="DDIM eta in [0, 1] (released: 1.0)")
    g.add_argument("--frame-stride", "--fs", dest="frame_stride", type=int,
                   help="motion control: frame stride for the 256 model (larger = more motion), fps for the others "
                        "(smaller = more motion)")
    g.add_argument("--frames", type=int, help="number of frames (default: the model's 16)")
    g.add_argument("--height", type=int, help="output height (default: the model's)")
    g.add_argument("--width", type=int, help="output width (default: the model's)")
    g.add_argument("--resize", choices=["released", "cover"], default="released",
                   help="released: shorter side to min(h, w) then center crop (pads if needed); cover: never pads")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED}; -1: random)")
    g.add_argument("--fps", type=float, help="frame rate of the written video (default: 8, as released)")
    add_control_options(parser)


def add_control_options(parser: argparse.ArgumentParser) -> None:
    """Lambda, the stream switches and sliding temporal windows (read back by :func:`sampling_options`)."""
    g = parser.add_argument_group("conditioning streams and long videos")
    g.add_argument("--image-attention-scale", dest="image_attention_scale", metavar="S",
                   help="scale lambda of the image cross-attention: one value (1 = as trained, 0 = context stream "
                        "off; smaller = weaker context stream, less adherence to the image) or per group / layer, e.g. "
                        "input=0.5,middle=1.0,output=1.0")
    g.add_argument("--no-context-stream", dest="context_stream", action="store_false",
                   help="switch the context stream off (no image cross-attention; lambda = 0)")
    g.add_argument("--no-vdg", dest="vdg", action="store_false",
                   help="switch the visual detail guidance off (zeros instead of the image latents)")
    g.add_argument("--window", nargs="?", const="auto", metavar="N",
                   help="longer videos: denoise --frames in sliding windows of N frames (default with no N: the "
                        "model's temporal length, 16)")
    g.add_argument("--window-stride", type=int, metavar="N",
                   help="frames between window starts (default: half the window)")
    g.add_argument("--window-weighting", choices=list(WEIGHTINGS),
                   help="blending of overlapping windows: linear (tent, default) or uniform (average)")


def resolve_seed(seed: int) -> int:
    if seed < 0:
        seed = random.randrange(2**31)
        print(f"seed: {seed}")
    return seed


def load_pipeline(args: argparse.Namespace):
    from dynamicrafter.pipeline import DynamiCrafterPipeline
    from dynamicrafter.utils import default_device

    t0 = time.perf_counter()
    on_cpu = torch.device(args.device or default_device()).type == "cpu"
    pipe = DynamiCrafterPipeline.from_checkpoint(args.checkpoint, config=args.config, device=args.device,
                                                 dtype=args.dtype, text_encoder_path=args.text_encoder,
                                                 image_encoder_path=args.image_encoder,
                                                 low_memory=on_cpu)  # CLIP towers loaded per call, chunked decode
    print(f"loaded model '{pipe.config.name}' on {pipe.device} ({str(pipe.dtype).removeprefix('torch.')}) "
          f"in {time.perf_counter() - t0:.1f}s")
    return pipe


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling options of the shared CLI flags (unset flags: the model's released settings)."""
    settings = {name: getattr(args, name) for name in SETTING_NAMES if hasattr(args, name) and name != "seed"}
    if settings.get("window") not in (None, "auto"):
        try:
            settings["window"] = int(settings["window"])
        except ValueError:
            raise UserError(f"--window must be a number of frames (or nothing: the model's length), got "
                            f"{settings['window']!r}") from None
    return SamplingOptions.from_settings(settings, style="flag")


def generator_for(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif", ".webp", ""):
        raise UserError(f"unsupported output '{path}': use .mp4, .gif, .webp or a folder name (PNG frames)")
    return path
