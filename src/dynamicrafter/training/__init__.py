"""Training DynamiCrafter: the paper's three-stage paradigm (plus T2V and fine-tuning) with PyTorch Lightning.

    from dynamicrafter.training import TrainConfig, train
    train(TrainConfig(stage="iii", model="test_size", data="synthetic:64", max_steps=100, run_dir="runs/iii"))

See :mod:`dynamicrafter.training.config` for the stages and :mod:`dynamicrafter.training.trainer` for the run
folder; ``dynamicrafter train --help`` for the command line.
"""

from dynamicrafter.training.config import STAGES, StageConfig, TrainConfig, get_stage
from dynamicrafter.training.model_setup import (
    add_image_cross_attention,
    expand_conv_in,
    parameter_groups,
    parameter_table,
    trainable_names,
)
from dynamicrafter.training.module import DynamiCrafterTraining
from dynamicrafter.training.trainer import RunPaths, build_run, load_run_config, train

__all__ = [
    "STAGES",
    "DynamiCrafterTraining",
    "RunPaths",
    "StageConfig",
    "TrainConfig",
    "add_image_cross_attention",
    "build_run",
    "expand_conv_in",
    "get_stage",
    "load_run_config",
    "parameter_groups",
    "parameter_table",
    "train",
    "trainable_names",
]
