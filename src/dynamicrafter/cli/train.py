"""``dynamicrafter train``: one stage of the training paradigm (see dynamicrafter.training.config)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from dynamicrafter.cli.options import finite_float
from dynamicrafter.errors import UserError

EXAMPLES = """examples:
  dynamicrafter train --stage iii --config test_size --data synthetic:500 --max-steps 2000 --run-dir runs/iii
  dynamicrafter train --stage t2v --config test_size --data data/synth --run-dir runs/base  # own base T2V model
  dynamicrafter train --stage i --init runs/base/model.safetensors --data images.csv --run-dir runs/stage-i
  dynamicrafter train --stage finetune --init dynamicrafter_512/model.ckpt --config training_512_v1.0.yaml \\
      --data webvid/results_2M_train.csv --data-root webvid/videos --trainable spatial --precision bf16-mixed \\
      --gradient-checkpointing --strategy ddp --devices 8 --run-dir runs/ft512
  dynamicrafter train --run-dir runs/ft512 --resume          # continue exactly where the run stopped
  dynamicrafter train --stage finetune --init model.safetensors --data my_videos/ --lora 8 --run-dir runs/lora

multi-GPU / multi-node: Lightning launches one process per device itself (--strategy ddp --devices N); under
torchrun or SLURM start one process per device and pass the same --devices / --num-nodes:
  torchrun --nnodes 2 --nproc-per-node 8 --node-rank R --master-addr HOST --master-port 29500 \\
      -m dynamicrafter.cli train --strategy ddp --devices 8 --num-nodes 2 ..."""


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawTextHelpFormatter)
    # every option defaults to None: unset options take TrainConfig's value, or the resumed run's
    _model_arguments(p.add_argument_group("what to train"))
    _data_arguments(p.add_argument_group("data"))
    _optimization_arguments(p.add_argument_group("optimization"))
    _lora_arguments(p.add_argument_group("LoRA (stages ii, iii, finetune: only low-rank adapters of the --init model "
                                         "learn; written as RUN_DIR/lora.safetensors)"))
    _engine_arguments(p.add_argument_group("engine"))
    _run_arguments(p.add_argument_group("run folder"))
    p.set_defaults(func=run)


def _model_arguments(g: argparse._ArgumentGroup) -> None:
    from dynamicrafter.training.config import STAGES

    g.add_argument("--stage", choices=list(STAGES), help="i: P + image cross-attention on the image model; ii: P + "
                   "spatial layers; iii: P + spatial with VDG; t2v: base text-to-video U-Net; finetune: from --init")
    g.add_argument("--config", dest="model", metavar="PRESET_OR_YAML",
                   help="model: 256, 512, 1024, 512_interp, a released YAML (training YAMLs also set lr, batch, "
                        "frames, stride, accumulation), test_size or test_size_v; default: --init's, else test_size")
    g.add_argument("--init", help="checkpoint to start from (released model.ckpt, .safetensors, or a run's "
                                  "model.safetensors)")
    g.add_argument("--text-encoder", help="separate CLIP text tower file (OpenCLIP ViT-H-14)")
    g.add_argument("--image-encoder", help="separate CLIP image tower file (OpenCLIP ViT-H-14)")
    g.add_argument("--trainable", dest="finetune_trainable", choices=["spatial", "full"],
                   help="stages finetune, ii, iii and the iii ablations: their layers (default 'spatial': P + "
                        "spatial) or with the temporal layers too ('full')")
    g.add_argument("--in-channels", type=int, choices=[4, 8],
                   help="U-Net input channels (4: no VDG; 8: VDG, zeros before stage iii); default: per stage")
    g.add_argument("--interp", action=argparse.BooleanOptionalAction, default=None,
                   help="interpolation / looping mode: first + last frame latents in VDG (default: the model's)")
    g.add_argument("--interp-fraction", type=finite_float,
                   help="fraction of samples trained with first + last frame VDG (one model for animation and "
                        "interpolation / loops; default 0)")
    g.add_argument("--rand-cond-frame", action=argparse.BooleanOptionalAction, default=None,
                   help="condition on a random frame of the clip (default: on, off for interpolation and stage i)")
    g.add_argument("--uncond-prob", type=finite_float, help="CFG dropout probability per case (released 0.05)")


def _data_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--data", help="index (.csv/.jsonl: WebVid or path,caption[,fps]; images for stage i), a folder "
                                  "holding one, or synthetic:N")
    g.add_argument("--data-root", help="folder the index's paths are relative to (WebVid: the videos folder)")
    g.add_argument("--frames", dest="num_frames", type=int, help="frames per clip (default: 1 for stage i, else "
                                                                  "the model's 16)")
    g.add_argument("--resolution", type=_size, help="HxW of the clips (default: the model's, e.g. 320x512)")
    g.add_argument("--frame-stride", type=int, help="largest frame stride (released 6); random in [1, N] unless "
                                                    "--no-random-fs")
    g.add_argument("--random-fs", action=argparse.BooleanOptionalAction, default=None, help="random frame stride")
    g.add_argument("--batch-size", type=int, help="clips per device and step (released 2)")
    g.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 2)")


def _optimization_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--max-steps", type=int, help="optimizer steps to train (total, also when resuming)")
    g.add_argument("--lr", type=finite_float, help="AdamW learning rate (released 1e-5)")
    g.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up steps, then constant (default 0)")
    g.add_argument("--accumulate-grad-batches", type=int, help="batches per optimizer step (released 2)")
    g.add_argument("--gradient-clip", dest="gradient_clip_val", type=finite_float,
                   help="gradient norm clip (released 0.5)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute U-Net activations in the backward pass (less memory, ~30%% slower)")
    g.add_argument("--ema-decay", type=finite_float,
                   help="keep an EMA of the trainable weights (e.g. 0.9999); exported")


def _lora_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--lora", dest="lora_rank", type=int, metavar="RANK", help="train a LoRA adapter of this rank")
    g.add_argument("--lora-alpha", type=finite_float,
                   help="LoRA alpha; the update is scaled by alpha / rank (default: rank)")
    g.add_argument("--lora-targets", metavar="spatial|temporal|all|REGEX",
                   help="attention projections (to_q/k/v/out, to_k_ip/to_v_ip) of the spatial (default) or temporal "
                        "transformers, or both; or a regular expression searched in the module names")
    g.add_argument("--lora-image-proj", action=argparse.BooleanOptionalAction, default=None,
                   help="also adapt P's linear layers")
    g.add_argument("--lora-convs", action=argparse.BooleanOptionalAction, default=None,
                   help="also adapt the 2D convolutions (ResBlocks, down / upsampling) of the targeted part")


def _engine_arguments(g: argparse._ArgumentGroup) -> None:
    from dynamicrafter.training.config import PRECISIONS, STRATEGIES

    g.add_argument("--strategy", choices=list(STRATEGIES), help="auto (one device), ddp, fsdp, deepspeed_stage_2/3")
    g.add_argument("--devices", type=int, help="devices per node (default 1)")
    g.add_argument("--num-nodes", type=int, help="nodes (default 1)")
    g.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], help="default auto")
    g.add_argument("--precision", choices=list(PRECISIONS), help="32 (default), 16-mixed, bf16-mixed")
    g.add_argument("--seed", type=int, help="seed of the data order and of every random draw (released 20230211)")


def _run_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--run-dir", help="where checkpoints, samples, logs and model.safetensors go (default runs/train)")
    g.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue the run in --run-dir from its newest checkpoint (or CHECKPOINT), exactly")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 1000)")
    g.add_argument("--keep-checkpoints", type=int, help="newest checkpoints kept (default 3; 0 keeps all)")
    g.add_argument("--sample-every", type=int, help="steps between sample videos (default 500; 0: none)")
    g.add_argument("--sample-steps", type=int, help="DDIM steps of the sample videos (default 4)")
    g.add_argument("--log-every", type=int, help="steps between logged metrics (default 10)")
    g.add_argument("--logger", choices=["auto", "tensorboard", "csv"], default="auto",
                   help="auto: TensorBoard when installed, else CSV")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(x.isdigit() for x in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not HxW (e.g. 320x512)")
    return int(parts[0]), int(parts[1])


def config_from_args(args: argparse.Namespace) -> Any:
    """TrainConfig from the options given; --resume starts from the run's stored config."""
    from dynamicrafter.training.config import TrainConfig, training_yaml_overrides
    from dynamicrafter.training.trainer import load_run_config

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.resume is not None:
        run_dir = args.run_dir or TrainConfig.run_dir
        base = dataclasses.asdict(load_run_config(run_dir))
    else:
        base = {}
        model = given.get("model")
        if model and (model.endswith((".yaml", ".yml")) and Path(model).is_file()):
            overrides = training_yaml_overrides(model)
            if given.get("stage") == "i":
                overrides.pop("num_frames", None)  # stage i trains on single frames
            base.update(overrides)
    base.update(given)
    return TrainConfig(**base)


def run(args: argparse.Namespace) -> int:
    from dynamicrafter.training.trainer import train

    if args.resume is None and (args.stage is None or args.data is None):
        raise UserError("give --stage (i, ii, iii, t2v, finetune) and --data (index, folder or synthetic:N), or "
                        "--resume to continue the run in --run-dir")
    from lightning.pytorch.utilities import rank_zero_only

    config = config_from_args(args)
    paths = train(config, logger=args.logger)
    if rank_zero_only.rank == 0:
        export = "lora.safetensors" if config.lora_rank is not None else "model.safetensors"
        print(f"run folder: {paths.root} (checkpoints/, samples/, logs/, {export})")
    return 0
