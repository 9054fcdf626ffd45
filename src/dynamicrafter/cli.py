"""Command-line entry point: ``dynamicrafter <command> ...``.

Each command lives beside the code it drives and registers itself through an ``add_parser(subparsers)`` function
that sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code). Expected,
user-facing failures raise :class:`dynamicrafter.errors.UserError` and are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dynamicrafter.errors import UserError

# module path of every command group, in the order they appear in --help
COMMAND_MODULES = (
    "dynamicrafter.commands.animate",
    "dynamicrafter.apps.cli",  # interpolate, loop, story, lambda
    "dynamicrafter.commands.inspect",
    "dynamicrafter.commands.convert",  # convert (diffusers-style folders)
    "dynamicrafter.training.cli",  # train
    "dynamicrafter.recipe.cli",  # recipe (the project's small model)
    "dynamicrafter.data.cli",  # annotate, synth
    "dynamicrafter.metrics.cli",  # evaluate, benchmark
    "dynamicrafter.ui.cli",  # ui
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamicrafter",
        description="Animate still images with DynamiCrafter (image + text prompt -> short video).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command group not built in this install
            if e.name and name.startswith(e.name):
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch

    # tiny activations (small models, late sampling steps) would otherwise fall into slow denormal arithmetic on CPU
    torch.set_flush_denormal(True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
