"""Applications built on the pipeline: frame interpolation and looping, storytelling with shots, longer videos with
sliding temporal windows, and the controls of the two conditioning streams (lambda, stream switches, motion).

Public API (imported lazily)::

    from dynamicrafter.apps import interpolate_keyframes, loop, render_story, motion_controls

Command line: ``dynamicrafter interpolate | loop | story | lambda`` (:mod:`dynamicrafter.cli.apps`).
"""

from __future__ import annotations

from dynamicrafter.lazy import lazy_getattr

_LAZY = {
    "interpolate": "dynamicrafter.apps.interpolation",
    "interpolate_keyframes": "dynamicrafter.apps.interpolation",
    "loop": "dynamicrafter.apps.interpolation",
    "Shot": "dynamicrafter.apps.story",
    "Story": "dynamicrafter.apps.story",
    "load_story": "dynamicrafter.apps.story",
    "render_shot": "dynamicrafter.apps.story",
    "render_story": "dynamicrafter.apps.story",
    "motion_controls": "dynamicrafter.apps.lambdas",
    "read_checkpoint_lambdas": "dynamicrafter.apps.lambdas",
    "plot_lambdas": "dynamicrafter.apps.lambdas",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
