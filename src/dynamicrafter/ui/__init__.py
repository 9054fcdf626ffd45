"""Web UI: a Gradio app for animation, interpolation / looping and storyboards (``dynamicrafter ui``).

    from dynamicrafter.ui import ModelService, UIConfig, build_app, launch
    service = ModelService(DynamiCrafterPipeline.from_checkpoint(), UIConfig(port=7860))
    launch(build_app(service), service)

:mod:`dynamicrafter.ui.service` (the model, input checks, jobs) does not need Gradio; :mod:`dynamicrafter.ui.app`
does (``pip install "dynamicrafter[ui]"``).
"""

from __future__ import annotations

from dynamicrafter.lazy import lazy_getattr

_LAZY = {
    "UIConfig": "dynamicrafter.ui.config",
    "ModelService": "dynamicrafter.ui.service",
    "JobResult": "dynamicrafter.ui.service",
    "build_app": "dynamicrafter.ui.app",
    "launch": "dynamicrafter.ui.app",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
