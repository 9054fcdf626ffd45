"""DynamiCrafter: animate open-domain images with video diffusion priors.

Public API (imported lazily so that ``import dynamicrafter`` stays fast)::

    from dynamicrafter import DynamiCrafterPipeline
    pipe = DynamiCrafterPipeline.from_checkpoint("model.ckpt")
    frames = pipe(image, "a boat sails on the sea").frames
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "DynamiCrafterPipeline": "dynamicrafter.pipeline",
    "PipelineOutput": "dynamicrafter.pipeline",
    "DynamiCrafter": "dynamicrafter.model",
    "ModelConfig": "dynamicrafter.config",
    "PRESETS": "dynamicrafter.config",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dynamicrafter' has no attribute {name!r}")
