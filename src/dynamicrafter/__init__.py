"""DynamiCrafter: animate open-domain images with video diffusion priors.

Public API (imported lazily so that ``import dynamicrafter`` stays fast)::

    from dynamicrafter import DynamiCrafterPipeline
    pipe = DynamiCrafterPipeline.from_checkpoint("model.ckpt")
    frames = pipe(image, "a boat sails on the sea").frames
"""

from __future__ import annotations

from dynamicrafter.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "DynamiCrafterPipeline": "dynamicrafter.pipeline",
    "PipelineOutput": "dynamicrafter.pipeline",
    "DynamiCrafter": "dynamicrafter.model",
    "ModelConfig": "dynamicrafter.config",
    "PRESETS": "dynamicrafter.config",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
