"""Training DynamiCrafter: the paper's three-stage paradigm (plus T2V and fine-tuning) with PyTorch Lightning.

    from dynamicrafter.training import TrainConfig, train
    train(TrainConfig(stage="iii", model="test_size", data="synthetic:64", max_steps=100, run_dir="runs/iii"))

See :mod:`dynamicrafter.training.config` for the stages and :mod:`dynamicrafter.training.trainer` for the run
folder; ``dynamicrafter train --help`` for the command line. Names are imported lazily:
``import dynamicrafter.training.config`` needs neither torch nor Lightning.
"""

from __future__ import annotations

from dynamicrafter.lazy import lazy_getattr

_LAZY = {
    "STAGES": "dynamicrafter.training.config",
    "StageConfig": "dynamicrafter.training.config",
    "TrainConfig": "dynamicrafter.training.config",
    "get_stage": "dynamicrafter.training.config",
    "add_image_cross_attention": "dynamicrafter.training.model_setup",
    "expand_conv_in": "dynamicrafter.training.model_setup",
    "parameter_groups": "dynamicrafter.training.model_setup",
    "parameter_table": "dynamicrafter.training.model_setup",
    "trainable_names": "dynamicrafter.training.model_setup",
    "DynamiCrafterTraining": "dynamicrafter.training.module",
    "RunPaths": "dynamicrafter.training.trainer",
    "build_run": "dynamicrafter.training.trainer",
    "load_run_config": "dynamicrafter.training.trainer",
    "train": "dynamicrafter.training.trainer",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
