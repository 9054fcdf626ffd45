"""``dynamicrafter evaluate`` (FVD, KVD, PIC and model-free metrics) and ``dynamicrafter convert-dreamsim``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamicrafter.metrics.dreamsim import DREAMSIM_TYPES
from dynamicrafter.metrics.i3d import FVD_NUM_FRAMES, I3D_PRESETS, FVDConfig
from dynamicrafter.metrics.kernel import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS
from dynamicrafter.metrics.weights import ENV_DREAMSIM, ENV_I3D, ENV_LPIPS, ENV_LPIPS_ALEXNET


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score generated videos: FVD, KVD, PIC and model-free metrics",
        description="Score generated videos against real clips and input images (paired by file stem). FVD/KVD "
                    "need the I3D weights, PIC the DreamSim weights (local files; metrics whose weights are absent "
                    "are skipped with a notice). Writes metrics.json, metrics.md and per_video.csv to OUT_DIR and "
                    "caches per-video features there, so an interrupted run resumes.")
    p.add_argument("--real", type=Path, required=True, metavar="DIR_OR_INDEX",
                   help="folder of real clips (mp4/gif/webp/PNG folders), or an index file: the project's .csv/.jsonl "
                        "clip index (optional columns 'id', 'start_frame', 'frame_stride') or a .txt list of paths")
    p.add_argument("--generated", type=Path, required=True, metavar="DIR", help="folder of generated videos")
    p.add_argument("--inputs", type=Path, metavar="DIR",
                   help="folder of input images named like the videos (default: first frame of the real clip)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument("--i3d", metavar="PATH", help=f"I3D weights: i3d_pretrained_400.pt or i3d_torchscript.pt "
                                                 f"(default: ${ENV_I3D})")
    p.add_argument("--fvd-preset", default="auto", choices=["auto", *I3D_PRESETS],
                   help="I3D preprocessing lineage (auto: tats for the state dict, stylegan-v for the TorchScript)")
    p.add_argument("--num-frames", type=int, default=FVD_NUM_FRAMES, help="frames per clip (default 16)")
    p.add_argument("--real-frame-stride", type=int, default=1,
                   help="stride between the real clip's frames when the index gives none (protocol: 3 on raw "
                        "videos; 1 for clips already cut)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per I3D batch")
    p.add_argument("--kvd-subsets", type=int, default=DEFAULT_SUBSETS)
    p.add_argument("--kvd-subset-size", type=int, default=DEFAULT_SUBSET_SIZE)
    p.add_argument("--dreamsim", metavar="PATH", help=f"DreamSim weights: a converted .safetensors file or an unzipped "
                                                      f"DreamSim checkpoint folder (default: ${ENV_DREAMSIM})")
    p.add_argument("--dreamsim-type", choices=list(DREAMSIM_TYPES), help="model in a DreamSim folder (default: "
                                                                         "ensemble if present)")
    p.add_argument("--pic-distance", default="dreamsim", choices=["dreamsim", "lpips"],
                   help="PIC's distance; lpips is a labelled stand-in, not the paper's metric")
    p.add_argument("--lpips", metavar="PATH", help=f"LPIPS v0.1 alex.pth (default: ${ENV_LPIPS})")
    p.add_argument("--lpips-alexnet", metavar="PATH",
                   help=f"torchvision alexnet-owt-7be5be79.pth (default: ${ENV_LPIPS_ALEXNET})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the KVD subsets")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_evaluate)

    c = subparsers.add_parser(
        "convert-dreamsim", help="merge an unzipped DreamSim checkpoint into one .safetensors file",
        description="Convert the files DreamSim distributes (unzipped dreamsim_<type>_checkpoint.zip plus the DINO "
                    "backbone) into the single LoRA-merged file that 'evaluate --dreamsim' loads.")
    c.add_argument("folder", type=Path, help="unzipped DreamSim checkpoint folder (DreamSim's cache_dir)")
    c.add_argument("-o", "--out", type=Path, required=True, help="output .safetensors file")
    c.add_argument("--type", dest="dreamsim_type", choices=list(DREAMSIM_TYPES),
                   help="which model (default: ensemble if present)")
    c.set_defaults(func=run_convert)


def run_evaluate(args: argparse.Namespace) -> int:
    from dynamicrafter.errors import UserError
    from dynamicrafter.metrics.evaluate import EvaluateConfig, evaluate, markdown_table

    if args.num_frames < 1 or args.batch_size < 1 or args.real_frame_stride < 1:
        raise UserError("--num-frames, --batch-size and --real-frame-stride must be positive")
    config = EvaluateConfig(
        generated=args.generated, out_dir=args.out, real=args.real, inputs=args.inputs, i3d=args.i3d,
        dreamsim=args.dreamsim, dreamsim_type=args.dreamsim_type, pic_distance=args.pic_distance,
        lpips=args.lpips, lpips_alexnet=args.lpips_alexnet,
        fvd=FVDConfig(preset=args.fvd_preset, num_frames=args.num_frames, batch_size=args.batch_size,
                      device=args.device),
        real_frame_stride=args.real_frame_stride, kvd_subsets=args.kvd_subsets,
        kvd_subset_size=args.kvd_subset_size, seed=args.seed, progress=not args.no_progress)
    result = evaluate(config)
    table = markdown_table(result.metrics).split("\n\n")[0]
    print(table)
    print(f"wrote {args.out / 'metrics.json'}, metrics.md and per_video.csv")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from dynamicrafter.metrics.dreamsim import convert_dreamsim_checkpoint, save_dreamsim

    state, dreamsim_type = convert_dreamsim_checkpoint(args.folder, args.dreamsim_type)
    path = save_dreamsim(state, dreamsim_type, args.out)
    print(f"wrote DreamSim ({dreamsim_type}, {len(state)} tensors) to {path}")
    return 0
