"""``dynamicrafter convert``: a checkpoint -> a diffusers-style folder (model_index.json + one subfolder per
component; see dynamicrafter.pretrained), readable by ``DynamiCrafterPipeline.from_pretrained`` and, for the VAE and
the CLIP towers, by diffusers' AutoencoderKL and transformers' CLIPTextModel / CLIPVisionModel."""

from __future__ import annotations

import argparse
import time

EXAMPLES = """examples:
  dynamicrafter convert dynamicrafter_512/model.ckpt dynamicrafter-512 --dtype fp16
  dynamicrafter convert ~/.cache/huggingface/hub/models--Doubiiu--DynamiCrafter_1024 dynamicrafter-1024
  dynamicrafter convert runs/iii/model.safetensors my-model          # one of this project's own checkpoints
"""
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # flag -> torch dtype name


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("src", help="released model.ckpt / .safetensors, one of this project's checkpoints, a Hugging Face "
                               "cache folder of a released model, or a converted folder")
    p.add_argument("out_dir", help="the folder to write (written beside it and renamed into place)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="dtype of the written weights (default fp32)")
    p.add_argument("--config", help="preset (256, 512, 1024, 512_interp) or a released YAML; default: detected")
    p.add_argument("--text-encoder", help="separate CLIP text tower (for repacks without cond_stage_model.*)")
    p.add_argument("--image-encoder", help="separate CLIP image tower (OpenCLIP ViT-H-14 weights)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR when it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dynamicrafter.config import resolve_config
    from dynamicrafter.pretrained import load_model_or_folder, save_pretrained

    t0 = time.perf_counter()
    dtype = getattr(torch, DTYPES[args.dtype])
    model = load_model_or_folder(args.src, resolve_config(args.config) if args.config else None,
                       text_encoder_path=args.text_encoder, image_encoder_path=args.image_encoder, dtype=dtype)
    out = save_pretrained(model, args.out_dir, dtype, overwrite=args.overwrite)
    print(f"wrote {out} (model '{model.config.name}', {args.dtype}) in {time.perf_counter() - t0:.1f}s; load it with "
          f"DynamiCrafterPipeline.from_pretrained('{out}') or --checkpoint {out}")
    return 0
