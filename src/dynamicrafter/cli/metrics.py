"""``dynamicrafter evaluate`` (FVD, KVD, PIC and model-free metrics), ``dynamicrafter benchmark`` (the paper's
UCF-101 / MSR-VTT protocol: sample, generate, evaluate; resumable, sharded with torchrun) and
``dynamicrafter convert-dreamsim``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamicrafter.metrics.dreamsim import DREAMSIM_TYPES
from dynamicrafter.metrics.i3d import FVD_NUM_FRAMES, I3D_PRESETS, FVDConfig
from dynamicrafter.metrics.kernel import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS
from dynamicrafter.metrics.weights import ENV_DREAMSIM, ENV_I3D, ENV_LPIPS, ENV_LPIPS_ALEXNET


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    builders = {"evaluate": add_evaluate_parser, "benchmark": add_benchmark_parser,
                "convert-dreamsim": add_convert_parser}
    builders[name](subparsers, name, help_text)


def add_evaluate_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(
        name, help=help_text,
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


def add_convert_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    c = subparsers.add_parser(
        name, help=help_text,
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


BENCHMARK_EXAMPLES = """examples:
  dynamicrafter benchmark --make-index ucf101 --root UCF-101/ -o ucf101.csv
  dynamicrafter benchmark --make-index msrvtt --root MSRVTT/ --annotations test_videodatainfo.json -o msrvtt.csv
  dynamicrafter benchmark --index ucf101.csv --checkpoint dynamicrafter_256_v1/model.ckpt \\
      --i3d i3d_pretrained_400.pt --dreamsim dreamsim.safetensors -o bench/ucf101
  torchrun --nproc_per_node 8 -m dynamicrafter.cli benchmark --index ucf101.csv -c model.ckpt -o bench/ucf101

Protocol: NUM_SAMPLES test videos (seeded; with replacement only when the index holds fewer usable videos), from
each a random NUM_FRAMES-frame clip at FRAME_STRIDE (too-short videos are skipped and counted); the clip's first
frame is animated with the video's caption. Writes OUT/samples.jsonl, OUT/real/, OUT/inputs/, OUT/generated/ and
the evaluate outputs (metrics.json, metrics.md, per_video.csv); re-running the same command resumes."""


def add_benchmark_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    from dynamicrafter.cli.options import add_model_options
    from dynamicrafter.data.benchmark_index import MAKE_INDEX_KINDS
    from dynamicrafter.metrics.benchmark import (
        DEFAULT_FRAME_STRIDE,
        DEFAULT_NUM_SAMPLES,
        DEFAULT_RESOLUTION,
        REAL_FORMATS,
    )
    from dynamicrafter.options import DEFAULT_SEED

    p = subparsers.add_parser(
        name, help=help_text,
        description="Sample test clips from a video index, animate their first frames with their captions and score "
                    "the generated videos (FVD, KVD, PIC, model-free metrics). Every stage resumes after an "
                    "interruption; under torchrun the work is sharded over the ranks and rank 0 merges. With "
                    "--make-index, build the index of a UCF-101 or MSR-VTT folder instead.",
        epilog=BENCHMARK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, metavar="INDEX",
                   help="video index: generic CSV/JSONL (path, caption, fps) or WebVid CSV, e.g. from --make-index")
    p.add_argument("--root", type=Path, metavar="DIR", help="folder the index's paths are relative to (default: the "
                                                            "index's folder); with --make-index: the data set folder")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output folder (benchmark) or index file .csv/.jsonl (--make-index)")
    p.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES,
                   help=f"clips to generate and score (default {DEFAULT_NUM_SAMPLES})")
    p.add_argument("--frame-stride", type=int, default=DEFAULT_FRAME_STRIDE,
                   help=f"stride between the real clip's frames, also the 256 model's fs input; fps-conditioned "
                        f"models get source fps // stride (default {DEFAULT_FRAME_STRIDE})")
    p.add_argument("--num-frames", type=int, default=FVD_NUM_FRAMES, help="frames per clip (default 16)")
    p.add_argument("--resolution", default=str(DEFAULT_RESOLUTION), metavar="SIZE",
                   help=f"clip and generation size: 256 or HEIGHTxWIDTH (default {DEFAULT_RESOLUTION})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the sample list, the clip starts, the per-sample generation seeds and the KVD "
                        f"subsets; with --make-index msrvtt: of the caption choice (default {DEFAULT_SEED})")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the model's released 50)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: released 7.5)")
    p.add_argument("--eta", type=float, help="DDIM eta (default: released 1.0)")
    p.add_argument("--real-format", choices=list(REAL_FORMATS), default="png",
                   help="how real clips are stored: png (lossless frame folders, default) or mp4")
    add_model_options(p)
    m = p.add_argument_group("metrics (weights are local files; a metric without them is skipped with a notice)")
    m.add_argument("--i3d", metavar="PATH", help=f"I3D weights for FVD/KVD (default: ${ENV_I3D})")
    m.add_argument("--fvd-preset", default="auto", choices=["auto", *I3D_PRESETS], help="I3D preprocessing lineage")
    m.add_argument("--dreamsim", metavar="PATH", help=f"DreamSim weights for PIC (default: ${ENV_DREAMSIM})")
    m.add_argument("--dreamsim-type", choices=list(DREAMSIM_TYPES), help="model in a DreamSim folder")
    m.add_argument("--batch-size", type=int, default=8, help="clips per I3D batch")
    m.add_argument("--kvd-subsets", type=int, default=DEFAULT_SUBSETS)
    m.add_argument("--kvd-subset-size", type=int, default=DEFAULT_SUBSET_SIZE)
    m.add_argument("--no-progress", action="store_true", help="hide progress bars")
    i = p.add_argument_group("index builders")
    i.add_argument("--make-index", choices=list(MAKE_INDEX_KINDS),
                   help="write the index of a UCF-101 folder (--root UCF-101/) or of MSR-VTT's test videos (--root, "
                        "--annotations) to -o, then stop")
    i.add_argument("--annotations", type=Path, metavar="JSON", help="MSR-VTT annotations (test_videodatainfo.json)")
    i.add_argument("--split-list", type=Path, metavar="TXT",
                   help="UCF-101: keep only the videos of this list (ucfTrainTestlist/testlist01.txt)")
    p.set_defaults(func=run_benchmark_command)


def run_benchmark_command(args: argparse.Namespace) -> int:
    from dynamicrafter.errors import UserError
    from dynamicrafter.metrics.benchmark import BenchmarkConfig, run_benchmark
    from dynamicrafter.metrics.distributed import distributed_context
    from dynamicrafter.metrics.evaluate import markdown_table

    if args.make_index:
        return _make_index(args)
    if args.index is None:
        raise UserError("benchmark needs --index INDEX (or --make-index ucf101|msrvtt to build one)")
    config = BenchmarkConfig(
        index=args.index, out_dir=args.out, checkpoint=args.checkpoint, model_config=args.config, root=args.root,
        num_samples=args.num_samples, frame_stride=args.frame_stride, num_frames=args.num_frames,
        resolution=args.resolution, seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale,
        eta=args.eta, real_format=args.real_format, device=args.device, dtype=args.dtype,
        text_encoder=args.text_encoder, image_encoder=args.image_encoder, i3d=args.i3d, fvd_preset=args.fvd_preset,
        dreamsim=args.dreamsim, dreamsim_type=args.dreamsim_type, batch_size=args.batch_size,
        kvd_subsets=args.kvd_subsets, kvd_subset_size=args.kvd_subset_size, progress=not args.no_progress,
        loras=tuple(args.lora or ()), compile=args.compile)
    with distributed_context() as dist:
        result = run_benchmark(config, dist.rank, dist.world_size, local_rank=dist.local_rank, barrier=dist.barrier)
    if result is not None:
        print(markdown_table(result.metrics).split("\n\n")[0])
        print(f"wrote {args.out / 'metrics.json'}, metrics.md and per_video.csv")
    return 0


def _make_index(args: argparse.Namespace) -> int:
    from dynamicrafter.data.benchmark_index import make_msrvtt_index, make_ucf101_index
    from dynamicrafter.errors import UserError

    if args.root is None:
        raise UserError(f"--make-index {args.make_index} needs --root (the data set folder)")
    if args.out.suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"--make-index writes an index file: give -o a .csv or .jsonl name, got '{args.out}'")
    if args.make_index == "ucf101":
        counts = make_ucf101_index(args.root, args.out, args.split_list, progress=not args.no_progress)
    else:
        if args.annotations is None:
            raise UserError("--make-index msrvtt needs --annotations test_videodatainfo.json")
        counts = make_msrvtt_index(args.root, args.annotations, args.out, args.seed, progress=not args.no_progress)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items()))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from dynamicrafter.metrics.dreamsim import convert_dreamsim_checkpoint, save_dreamsim

    state, dreamsim_type = convert_dreamsim_checkpoint(args.folder, args.dreamsim_type)
    path = save_dreamsim(state, dreamsim_type, args.out)
    print(f"wrote DreamSim ({dreamsim_type}, {len(state)} tensors) to {path}")
    return 0
