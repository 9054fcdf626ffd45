"""Locating the model used when no checkpoint is given."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from dynamicrafter.checkpoint import RELEASES_URL
from dynamicrafter.errors import UserError

DEFAULT_MODEL_FILE = "dynamicrafter_tiny.safetensors"
ENV_CHECKPOINT = "DYNAMICRAFTER_CHECKPOINT"


def default_checkpoint() -> Path:
    """$DYNAMICRAFTER_CHECKPOINT, else the small model shipped with the package; a clear error if neither exists."""
    env = os.environ.get(ENV_CHECKPOINT)
    if env:
        return Path(env)
    shipped = Path(str(resources.files("dynamicrafter") / "weights" / DEFAULT_MODEL_FILE))
    if shipped.is_file():
        return shipped
    raise UserError(f"no checkpoint given: pass --checkpoint PATH (or set {ENV_CHECKPOINT}) with a released "
                    f"DynamiCrafter model.ckpt, published at {RELEASES_URL}")
