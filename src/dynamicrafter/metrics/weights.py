"""Locating the user-supplied weight files that the learned metrics need.

No weights are bundled or downloaded: every network is loaded from a local file given on the command line or through
an environment variable. When neither is given the metric is skipped (the runner says so in one line) or, where the
caller insists, a one-line :class:`MissingWeightsError` names the file to fetch and the option that takes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dynamicrafter.errors import UserError

ENV_I3D = "DYNAMICRAFTER_I3D"
ENV_DREAMSIM = "DYNAMICRAFTER_DREAMSIM"
ENV_LPIPS = "DYNAMICRAFTER_LPIPS"
ENV_LPIPS_ALEXNET = "DYNAMICRAFTER_LPIPS_ALEXNET"


class MissingWeightsError(UserError):
    """A metric's weight file was not given, or the given path does not exist."""


@dataclass(frozen=True)
class WeightSpec:
    """How a metric's weight file is named and passed."""

    purpose: str  # e.g. "FVD needs the I3D weights"
    option: str  # command-line option, e.g. "--i3d"
    env: str  # environment variable, e.g. "DYNAMICRAFTER_I3D"
    public_names: str  # the file names under which the community distributes the weights


I3D_WEIGHTS = WeightSpec(
    purpose="FVD needs the I3D weights",
    option="--i3d",
    env=ENV_I3D,
    public_names="i3d_pretrained_400.pt (VideoGPT/TATS) or i3d_torchscript.pt (StyleGAN-V)",
)
DREAMSIM_WEIGHTS = WeightSpec(
    purpose="PIC needs the DreamSim weights",
    option="--dreamsim",
    env=ENV_DREAMSIM,
    public_names="a file made by 'dynamicrafter convert-dreamsim' or an unzipped DreamSim checkpoint folder "
                 "(dreamsim_ensemble_checkpoint.zip, v0.2.0 release)",
)
LPIPS_WEIGHTS = WeightSpec(
    purpose="the LPIPS stand-in for PIC needs the LPIPS linear-layer weights",
    option="--lpips",
    env=ENV_LPIPS,
    public_names="weights/v0.1/alex.pth of the lpips package",
)
LPIPS_ALEXNET_WEIGHTS = WeightSpec(
    purpose="the LPIPS stand-in for PIC needs the ImageNet AlexNet weights",
    option="--lpips-alexnet",
    env=ENV_LPIPS_ALEXNET,
    public_names="alexnet-owt-7be5be79.pth (torchvision)",
)


def _missing_message(spec: WeightSpec) -> str:
    return f"{spec.purpose}: pass {spec.option} PATH or set {spec.env} to a local copy of {spec.public_names}"


def resolve_weights(path: str | os.PathLike | None, spec: WeightSpec) -> Path | None:
    """The weight file from ``path`` or else from ``spec.env``; ``None`` when neither is set.

    A path that is set but does not exist raises :class:`MissingWeightsError` (a typo should not silently skip a
    metric).
    """
    source = spec.option
    if path is None or str(path) == "":
        path, source = os.environ.get(spec.env) or None, spec.env
    if path is None:
        return None
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise MissingWeightsError(f"{spec.purpose} but '{resolved}' (from {source}) does not exist: "
                                  f"pass {spec.option} PATH to a local copy of {spec.public_names}")
    return resolved


def require_weights(path: str | os.PathLike | None, spec: WeightSpec) -> Path:
    """Like :func:`resolve_weights`, but a missing file is an error naming the file and how to pass it."""
    resolved = resolve_weights(path, spec)
    if resolved is None:
        raise MissingWeightsError(_missing_message(spec))
    return resolved


def missing_weights_notice(spec: WeightSpec) -> str:
    """The one-line notice printed when a metric is skipped for want of its weights."""
    return _missing_message(spec)
