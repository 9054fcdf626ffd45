"""Running a training stage with Lightning: model preparation, the run folder, strategies, resume.

Run folder (``--run-dir``)::

    train_config.json          the TrainConfig of the run (read back by --resume)
    checkpoints/step-*.ckpt    full training state every --checkpoint-every steps and at the end (atomic writes)
    samples/step-*.mp4/.txt    sample videos (generated | real clip) every --sample-every steps, with the caption
    logs/version_*/            TensorBoard events (when tensorboard is installed) or metrics.csv; one per (re)start
    model.safetensors          the trained model at the end (EMA weights when EMA is on), for
                               DynamiCrafterPipeline.from_checkpoint / dynamicrafter animate --checkpoint
    lora.safetensors           instead, with --lora: the adapter alone (pipe.load_lora / animate --lora FILE)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L

from dynamicrafter.config import ModelConfig
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.media import atomic_path
from dynamicrafter.model import DynamiCrafter
from dynamicrafter.training.callbacks import (
    AtomicCheckpointIO,
    ExportModel,
    PeriodicCheckpoint,
    SampleVideos,
    StepProgressBar,
    list_checkpoints,
)
from dynamicrafter.training.config import RESUME_FIXED_FIELDS, StageConfig, TrainConfig, get_stage, model_config
from dynamicrafter.training.data import DataSettings, TrainingData, build_dataset
from dynamicrafter.training.model_setup import (
    add_image_cross_attention,
    build_model,
    expand_conv_in,
    set_gradient_checkpointing,
)
from dynamicrafter.training.module import DynamiCrafterTraining

SHARDED_STRATEGIES = ("fsdp", "deepspeed_stage_3")


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "train_config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def export(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def lora(self) -> Path:
        return self.root / "lora.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# The model of a stage
# ----------------------------------------------------------------------------------------------------------------


def prepare_model(config: TrainConfig, stage: StageConfig, log: Any = print) -> DynamiCrafter:
    """The starting model of ``stage``, after the surgery the stage needs (see model_setup)."""
    if stage.needs_init and config.init is None:
        raise UserError(f"stage '{stage.name}' starts from a checkpoint: pass --init model.ckpt (a released "
                        f"DynamiCrafter checkpoint or one of this project's)")
    spec: ModelConfig | None = model_config(config.model) if config.model is not None else None
    if config.init is None:
        spec = spec or model_config("test_size")
        unet = spec.unet
        in_channels = config.in_channels or stage.base_in_channels or unet.in_channels
        # the paper's base models: no VDG input before stage iii, no image cross-attention in the T2V model
        spec = replace(spec, unet=replace(unet, in_channels=in_channels,
                                          image_cross_attention=unet.image_cross_attention and stage.image_condition))
    model = build_model(spec, config.init, text_encoder=config.text_encoder, image_encoder=config.image_encoder,
                        seed=config.seed)
    unet = model.config.unet
    if stage.image_condition and not unet.image_cross_attention:
        _no_surgery_with_lora(config, "has no image cross-attention")
        log("adding image cross-attention to the text-only U-Net (to_k_ip / to_v_ip copied from to_k / to_v)")
        model = add_image_cross_attention(model)
    wanted = config.in_channels or (unet.out_channels + model.config.vae.latent_channels if stage.vdg else None)
    if wanted is not None and wanted != model.config.unet.in_channels:
        _no_surgery_with_lora(config, f"has {model.config.unet.in_channels} input channels, the stage needs {wanted}")
        log(f"expanding the U-Net input from {model.config.unet.in_channels} to {wanted} channels for VDG "
            f"(new conv_in weights zero: the network's function is unchanged at the start)")
        model = expand_conv_in(model, wanted)
    interp = model.config.interp_mode if config.interp is None else config.interp
    if interp != model.config.interp_mode:
        model.config = replace(model.config, interp_mode=interp)
    return set_gradient_checkpointing(model, config.gradient_checkpointing)


def _no_surgery_with_lora(config: TrainConfig, problem: str) -> None:
    """A LoRA adapter is for its base model as it is: a stage that would change the network is refused."""
    if config.lora_rank is not None:
        raise ConfigError(f"--lora: the --init model {problem}; an adapter cannot change the network: train that "
                          f"stage fully first, or choose the stage the model was trained for")


def stage_frames(config: TrainConfig, stage: StageConfig, model: DynamiCrafter) -> int:
    return config.num_frames or stage.num_frames or model.config.unet.temporal_length


def stage_resolution(config: TrainConfig, model: DynamiCrafter) -> tuple[int, int]:
    d = model.config.defaults
    h, w = config.resolution or (d.height, d.width)
    multiple = model.vae.downscale * 2 ** (len(model.config.unet.channel_mult) - 1)
    if h % multiple or w % multiple:
        raise ConfigError(f"--resolution {h}x{w}: height and width must be multiples of {multiple} "
                          f"(VAE x U-Net downsampling)")
    return h, w


# ----------------------------------------------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------------------------------------------


def make_strategy(config: TrainConfig) -> Any:
    """The Lightning strategy object for ``--strategy``."""
    name = config.strategy
    if name == "auto":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=False)
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from dynamicrafter.models.attention import SpatialTransformer, TemporalTransformer
        from dynamicrafter.models.unet import ResBlock

        # shard per U-Net block; use_orig_params: frozen and trainable tensors may share a wrapped module
        return FSDPStrategy(auto_wrap_policy={ResBlock, SpatialTransformer, TemporalTransformer},
                            state_dict_type="full", use_orig_params=True)
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(stage=2 if name == "deepspeed_stage_2" else 3)


def make_logger(paths: RunPaths, kind: str = "auto") -> Any:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    has_tb = importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None
    if kind == "tensorboard" or (kind == "auto" and has_tb):
        if not has_tb:
            raise UserError("TensorBoard logging needs the 'tensorboard' package: pip install tensorboard")
        return TensorBoardLogger(str(paths.root), name="logs")
    return CSVLogger(str(paths.root), name="logs")


def check_engine(config: TrainConfig) -> None:
    import torch

    if config.strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"--strategy {config.strategy} needs the 'deepspeed' package, which is not installed: pip "
                        f"install deepspeed (CUDA machines), or use --strategy ddp / fsdp")
    on_cpu = config.accelerator == "cpu" or (config.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and config.precision == "16-mixed":
        raise UserError("--precision 16-mixed needs a GPU; on CPU use 32 or bf16-mixed")
    if on_cpu and config.strategy in ("fsdp", "deepspeed_stage_2", "deepspeed_stage_3"):
        raise UserError(f"--strategy {config.strategy} needs GPUs; on CPU use auto or ddp")
    if config.ema_decay and config.strategy in SHARDED_STRATEGIES:
        raise UserError(f"--ema-decay is not supported with --strategy {config.strategy} (the weights are sharded "
                        f"across devices): use ddp or deepspeed_stage_2, or train without EMA")


# ----------------------------------------------------------------------------------------------------------------
# Run folder and resume
# ----------------------------------------------------------------------------------------------------------------


def load_run_config(run_dir: str | Path) -> TrainConfig:
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise UserError(f"'{run_dir}' is not a training run folder (no train_config.json): check --run-dir")
    data = json.loads(paths.config.read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in data.items() if k in known}
    if values.get("resolution") is not None:
        values["resolution"] = tuple(values["resolution"])
    return TrainConfig(**values)


def resolve_resume(config: TrainConfig, paths: RunPaths) -> Path | None:
    """The checkpoint to resume from (None for a new run); checks that the run's fixed settings are unchanged."""
    existing = list_checkpoints(paths.checkpoints)
    if config.resume is None:
        if existing:
            raise UserError(f"'{paths.root}' already holds checkpoints of a run (newest: {existing[-1][1].name}): pass "
                            f"--resume to continue it, or choose another --run-dir")
        return None
    if paths.config.is_file():
        stored = load_run_config(paths.root)
        changed = [f for f in RESUME_FIXED_FIELDS if getattr(stored, f) != getattr(config, f)]
        if changed:
            f = changed[0]
            raise UserError(f"--resume: '{f}' was {getattr(stored, f)!r} in this run and is {getattr(config, f)!r} "
                            f"now; resuming must keep {', '.join(RESUME_FIXED_FIELDS)} (start a new run instead)")
    if config.resume != "latest":
        path = Path(config.resume)
        if not path.is_file():
            raise UserError(f"--resume checkpoint '{path}' not found")
        return path
    if not existing:
        raise UserError(f"--resume: no checkpoint in '{paths.checkpoints}' yet; start the run without --resume")
    return existing[-1][1]


def write_run_config(config: TrainConfig, paths: RunPaths) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths.config) as tmp:
        tmp.write_text(replace(config, resume=None).to_json() + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    """What :func:`build_run` assembles; ``fit()`` trains."""

    config: TrainConfig
    stage: StageConfig
    module: DynamiCrafterTraining
    data: TrainingData
    trainer: L.Trainer
    paths: RunPaths
    resume_from: Path | None

    def fit(self) -> RunPaths:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen parts, on purpose
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__`.*")
            self.trainer.fit(self.module, datamodule=self.data,
                             ckpt_path=str(self.resume_from) if self.resume_from else None,
                             weights_only=True)  # resume reads tensors and plain values only: no pickled code
        return self.paths


def build_run(config: TrainConfig, callbacks: list[L.Callback] | None = None, logger: str = "auto") -> TrainingRun:
    """Prepare model, data, callbacks and the Lightning Trainer of a run (nothing is trained yet)."""
    stage = get_stage(config.stage, config.finetune_trainable)
    check_engine(config)
    paths = RunPaths(Path(config.run_dir))
    resume_from = resolve_resume(config, paths)
    model = prepare_model(config, stage)
    frames = stage_frames(config, stage, model)
    if model.config.interp_mode and stage.vdg and frames < 2:
        raise ConfigError("interpolation training needs clips of at least 2 frames (first and last in VDG)")
    settings = DataSettings(num_frames=frames, resolution=stage_resolution(config, model),
                            frame_stride=config.frame_stride, frame_stride_min=config.frame_stride_min,
                            random_fs=config.random_fs, seed=config.seed, root=config.data_root)
    dataset = build_dataset(config.data, settings)
    write_run_config(config, paths)
    data = TrainingData(dataset, frames, config.batch_size, config.num_workers, config.seed)
    module = DynamiCrafterTraining(model, stage, config, interp=model.config.interp_mode)

    sampling = config.strategy not in SHARDED_STRATEGIES
    all_callbacks: list[L.Callback] = [
        PeriodicCheckpoint(paths.checkpoints, config.checkpoint_every, config.keep_checkpoints),
        SampleVideos(paths.samples, config.sample_every, data.sample_item() if config.sample_every else {},
                     config.sample_steps, model.config.defaults.save_fps, enabled=sampling and config.sample_every > 0),
        ExportModel(paths.lora if config.lora_rank is not None else paths.export, config.strategy),
    ]
    if config.progress:
        all_callbacks.append(StepProgressBar(config.max_steps))
    all_callbacks += callbacks or []
    strategy = make_strategy(config)
    plugins = [] if config.strategy.startswith("deepspeed") else [AtomicCheckpointIO()]
    trainer = L.Trainer(
        accelerator=config.accelerator, strategy=strategy, devices=config.devices, num_nodes=config.num_nodes,
        precision=config.precision, max_steps=config.max_steps, max_epochs=-1,
        accumulate_grad_batches=config.accumulate_grad_batches,
        gradient_clip_val=config.gradient_clip_val or None, gradient_clip_algorithm="norm",
        callbacks=all_callbacks, logger=make_logger(paths, logger), plugins=plugins,
        log_every_n_steps=config.log_every, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0,
        default_root_dir=str(paths.root))
    return TrainingRun(config, stage, module, data, trainer, paths, resume_from)


def train(config: TrainConfig, callbacks: list[L.Callback] | None = None, logger: str = "auto") -> RunPaths:
    """Train one stage as ``config`` says and return the run's paths (see the module docstring)."""
    return build_run(config, callbacks, logger).fit()
