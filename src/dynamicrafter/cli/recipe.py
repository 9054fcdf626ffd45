"""``dynamicrafter recipe``: train the project's small model (``tiny``) and measure it (``report``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamicrafter.cli.options import finite_float

EXAMPLES = """examples:
  dynamicrafter recipe tiny --out runs/tiny                   # all stages, resumable (~65 min + 35 min ablations)
  dynamicrafter recipe tiny --out runs/tiny --ship src/dynamicrafter/weights/dynamicrafter_tiny.safetensors
  dynamicrafter recipe report --out runs/tiny -o reports/tiny  # held-out evaluation: table + figure
"""


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="recipe_command", metavar="RECIPE", required=True)
    tiny = sub.add_parser("tiny", help="train every stage (autoencoder, CLIP towers, T2V base, stages i-iii)")
    tiny.add_argument("--out", default="runs/tiny", help="run folder (resumable)")
    tiny.add_argument("--quick", action="store_true", help="a few steps per stage (smoke test of the recipe)")
    tiny.add_argument("--no-ablations", action="store_true", help="skip the two ablation models")
    tiny.add_argument("--ship", help="write the full model (fp16) to this .safetensors path")
    tiny.add_argument("--steps-scale", type=finite_float, default=1.0,
                      help="multiply the diffusion stages' steps (e.g. 10 on a GPU; the defaults fit a 2-core CPU)")
    tiny.add_argument("--data", choices=("released", "centred"), default="released",
                      help="the generated data: 'released' (32 x 32, the earlier shipped model's) or 'centred' "
                           "(64 x 64, no first-frame shortcut: the motion is named by the text alone; the shipped "
                           "model's, with --train-temporal)")
    tiny.add_argument("--train-temporal", action="store_true",
                      help="stages ii, iii and the ablations train the temporal layers too (the paper freezes them)")
    tiny.set_defaults(func=run_tiny)
    report = sub.add_parser("report", help="evaluate the trained variants on held-out clips: table + figure")
    report.add_argument("--out", default="runs/tiny", help="the recipe's run folder")
    report.add_argument("--output", "-o", default="reports/tiny", help="where to write REPORT.md, figure.png")
    report.add_argument("--clips-per-motion", type=int, default=10)
    report.add_argument("--steps", type=int, default=25)
    report.add_argument("--quick", action="store_true", help="2 clips per motion, 3 steps (smoke test)")
    report.add_argument("--no-tracker", action="store_true",
                        help="motion by the optical-flow classifier only (faster; the tracker is the validated one)")
    report.add_argument("--swapped-per-motion", type=int, default=0,
                        help="also the swapped-caption test of every variant on N held-out frames per motion (each "
                             "with all 9 motion prompts: 81 N videos per variant)")
    report.add_argument("--cache", help="keep the swapped-caption videos per variant in CACHE/<run folder> (reuses "
                                        "rescore --cache folders of the same settings; resumable)")
    report.add_argument("--card", help="also write the model card of the shipped model to this path")
    report.add_argument("--weights", default="src/dynamicrafter/weights/dynamicrafter_tiny.safetensors",
                        help="the shipped weights described by --card")
    report.set_defaults(func=run_report)


def run_tiny(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dynamicrafter.recipe.config import BUDGET_PRESETS, QUICK_BUDGET
    from dynamicrafter.recipe.tiny import DATA_PRESETS, RecipePlan, run

    data = DATA_PRESETS[args.data]
    data = replace(data, num_clips=16) if args.quick else data
    budget = (QUICK_BUDGET if args.quick else BUDGET_PRESETS[args.data]).scaled(args.steps_scale)
    plan = RecipePlan(Path(args.out), budget, not args.no_ablations, data, train_temporal=args.train_temporal)
    run(plan, Path(args.ship) if args.ship else None)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from dynamicrafter.recipe.evaluation import write_report

    write_report(Path(args.out), Path(args.output), clips_per_motion=2 if args.quick else args.clips_per_motion,
                 steps=3 if args.quick else args.steps, tracker=not args.no_tracker,
                 swapped_per_motion=args.swapped_per_motion, cache=Path(args.cache) if args.cache else None)
    if args.card:
        from dynamicrafter.recipe.card import write_card

        print(f"wrote {write_card(Path(args.out), Path(args.output), Path(args.weights), Path(args.card))}")
    return 0
