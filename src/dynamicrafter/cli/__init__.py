"""Command-line entry point: ``dynamicrafter <command> ...`` (also ``python -m dynamicrafter.cli``).

The commands live in this package, one module per group (:data:`COMMANDS`); each module has an
``add_parser(subparsers, name, help)`` that adds one command and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit code). Only the module of the command given is imported, and modules
import their libraries when a command runs, so ``dynamicrafter --help`` and ``dynamicrafter COMMAND --help`` start
without torch. Expected, user-facing failures raise :class:`dynamicrafter.errors.UserError` and are printed as one
line, without a traceback (exit code 2), as are argument errors and warnings.

Nothing below this package imports it: the library never depends on its command line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Collection, Iterator

from dynamicrafter.errors import UserError

# command -> (module in this package, one-line help), in the order of --help
COMMANDS: dict[str, tuple[str, str]] = {
    "animate": ("animate", "animate an image (or a folder of images with test_prompts.txt)"),
    "interpolate": ("apps", "generative frame interpolation between 2 or more keyframes"),
    "loop": ("apps", "a seamlessly looping video from one image"),
    "story": ("apps", "render a script of shots into one video (+ a sidecar to re-render)"),
    "lambda": ("apps", "print and plot the per-layer lambda of a checkpoint"),
    "inspect": ("checkpoint", "show what a checkpoint file holds"),
    "convert": ("convert", "write a model as a diffusers-style folder (model_index.json + a subfolder per part)"),
    "train": ("train", "train a stage (i, ii, iii, t2v, finetune) with Lightning"),
    "recipe": ("recipe", "train and evaluate the project's small DynamiCrafter"),
    "annotate": ("data", "add a motion_score column (optical flow) to a video index"),
    "synth": ("data", "write the generated captioned video data set (mp4 + index)"),
    "evaluate": ("metrics", "score generated videos: FVD, KVD, PIC and model-free metrics"),
    "benchmark": ("metrics", "the paper's UCF-101 / MSR-VTT benchmark: sample clips, generate, score (resumable)"),
    "convert-dreamsim": ("metrics", "merge an unzipped DreamSim checkpoint into one .safetensors file"),
    "ui": ("ui", "serve the web UI (animate, interpolate / loop, storyboard) in a browser"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UserErrors, printed in one line by :func:`main` (no usage block):
    ``error: dynamicrafter animate: argument --steps: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see: {self.prog} --help)")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given ``commands``, only those get their options (the others are listed by name
    and help, their modules not imported)."""
    parser = ArgumentParser(
        prog="dynamicrafter",
        description="Animate still images with DynamiCrafter (image + text prompt -> short video).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if commands is None or name in commands:
            importlib.import_module(f"{__name__}.{module}").add_parser(subparsers, name, help_text)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option), if it is one."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings printed as ``warning: MESSAGE`` (one line, no source line)."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_args, **_kwargs: print(f"warning: {message}", file=sys.stderr)
        yield


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser([command] if command else [])
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        with _one_line_warnings():
            _prepare_torch()
            return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _prepare_torch() -> None:
    import torch

    # tiny activations (small models, late sampling steps) would otherwise fall into slow denormal arithmetic on CPU
    torch.set_flush_denormal(True)


__all__ = ["COMMANDS", "build_parser", "main"]
