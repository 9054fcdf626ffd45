"""Training configuration: the paper's three training stages (plus T2V and fine-tuning) as named
:class:`StageConfig` values, and :class:`TrainConfig`, everything one run needs.

The stages (paper Sec. 3.2, "Training paradigm"):

=========  =========================================================================  ===========================
stage      what is trained                                                            network input
=========  =========================================================================  ===========================
i          P + the image cross-attention projections (``to_k_ip``, ``to_v_ip``,       one frame, temporal layers
           ``alpha``) on the text-to-image model (the U-Net as an image model)        bypassed, no VDG
ii         P + the spatial layers of the video model; temporal layers frozen          video clip, no VDG
iii        P + spatial layers jointly, with VDG (image latent concatenated with the   video clip + VDG latents
           noise), a random frame as the condition, CFG dropout as released
t2v        the whole U-Net from text only (the base text-to-video model)              video clip, text tokens only
finetune   from a released checkpoint: the full U-Net or spatial-only (+ P)            as stage iii
=========  =========================================================================  ===========================

Ablations (paper Table 3): ``iii-no-context`` (VDG without the context stream) and ``iii-no-vdg`` (the context
stream without VDG).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from dynamicrafter.config import ModelConfig, config_for_tests, resolve_config
from dynamicrafter.errors import ConfigError

# Parameter groups a stage can train (see training.model_setup.parameter_groups).
TRAINABLE_GROUPS = ("image_proj", "image_attention", "spatial", "temporal")
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
VDGMode = Literal["none", "cond_frame", "first_last"]

# Released training settings (configs/training_512_v1.0/config.yaml, main/trainer.py)
RELEASED_LR = 1e-5
RELEASED_GRAD_CLIP = 0.5
RELEASED_BATCH_SIZE = 2
RELEASED_ACCUMULATE = 2
RELEASED_SEED = 20230211
RELEASED_FRAME_STRIDE = 6
RELEASED_EMA_DECAY = 0.9999  # LitEma default (EMA is off in the released configs)


@dataclass(frozen=True)
class StageConfig:
    """One training stage: which parameters learn and how a batch is conditioned.

    ``trainable``: groups from :data:`TRAINABLE_GROUPS` ("spatial" includes the image cross-attention projections).
    ``num_frames``: frames per sample (None: the model's ``temporal_length``). ``use_temporal=False`` runs the U-Net as
    an image model. ``image_condition=False``: the context is the 77 text tokens only (T2V). ``vdg``: the stage feeds
    the VDG latents (otherwise zeros when the network has 8 input channels, nothing when it has 4).
    ``base_in_channels``: input channels of a model built for this stage without ``--init`` (None: the config's).
    """

    name: str
    summary: str
    trainable: tuple[str, ...]
    use_temporal: bool = True
    num_frames: int | None = None
    image_condition: bool = True
    vdg: bool = False
    rand_cond_frame: bool = True
    needs_init: bool = False
    base_in_channels: int | None = 4

    def __post_init__(self) -> None:
        unknown = set(self.trainable) - set(TRAINABLE_GROUPS)
        if unknown:
            raise ConfigError(f"stage '{self.name}': unknown trainable group(s) {sorted(unknown)}; "
                              f"use {TRAINABLE_GROUPS}")


STAGE_I = StageConfig(
    name="i", summary="P + image cross-attention on the text-to-image model (one frame, temporal layers bypassed)",
    trainable=("image_proj", "image_attention"), use_temporal=False, num_frames=1, rand_cond_frame=False)
STAGE_II = StageConfig(
    name="ii", summary="P + spatial layers adapted to the video model (temporal layers frozen)",
    trainable=("image_proj", "spatial"))
STAGE_III = StageConfig(
    name="iii", summary="P + spatial layers with VDG (image latent concatenated with the noise)",
    trainable=("image_proj", "spatial"), vdg=True, base_in_channels=None)
STAGE_T2V = StageConfig(
    name="t2v", summary="base text-to-video model: the whole U-Net from text only",
    trainable=("spatial", "temporal"), image_condition=False, rand_cond_frame=False)
STAGE_FINETUNE = StageConfig(
    name="finetune", summary="fine-tuning a released checkpoint (P + spatial, or P + the full U-Net)",
    trainable=("image_proj", "spatial"), vdg=True, needs_init=True, base_in_channels=None)

# The paper's Table 3 ablations, trained like stage iii without one of the two image streams.
STAGE_III_NO_CONTEXT = StageConfig(
    name="iii-no-context", summary="ablation: stage iii without the context stream (VDG only, no image tokens)",
    trainable=("spatial",), vdg=True, image_condition=False, base_in_channels=None)
STAGE_III_NO_VDG = StageConfig(
    name="iii-no-vdg", summary="ablation: stage iii without VDG (context stream only, 4 input channels)",
    trainable=("image_proj", "spatial"), vdg=False, base_in_channels=None)

STAGES: dict[str, StageConfig] = {s.name: s for s in (STAGE_I, STAGE_II, STAGE_III, STAGE_T2V, STAGE_FINETUNE,
                                                      STAGE_III_NO_CONTEXT, STAGE_III_NO_VDG)}
# the stages that fine-tune a video model (with --lora only the adapters learn)
LORA_STAGES = ("ii", "iii", "finetune")
FINETUNE_TRAINABLE = {"spatial": ("image_proj", "spatial"), "full": ("image_proj", "spatial", "temporal")}
# The video stages that freeze the temporal layers in the paper; with --trainable full they train them too (a
# deviation for a base model that learned little motion, see the recipe's model card).
TEMPORAL_CHOICE_STAGES = ("ii", "iii", "iii-no-context", "iii-no-vdg", "finetune")


def get_stage(name: str, finetune_trainable: str = "spatial") -> StageConfig:
    if name not in STAGES:
        raise ConfigError(f"unknown training stage '{name}': use one of {', '.join(STAGES)}")
    if finetune_trainable not in FINETUNE_TRAINABLE:
        raise ConfigError(f"--trainable '{finetune_trainable}' is not known: use 'spatial' or 'full'")
    stage = STAGES[name]
    if name == "finetune":
        return replace(stage, trainable=FINETUNE_TRAINABLE[finetune_trainable],
                       summary=f"fine-tuning a released checkpoint ({finetune_trainable} U-Net + P trainable)")
    if finetune_trainable == "full":
        if name not in TEMPORAL_CHOICE_STAGES:
            raise ConfigError(f"--trainable full applies to the stages {', '.join(TEMPORAL_CHOICE_STAGES)}, not "
                              f"'{name}' (its trainable layers are fixed: {', '.join(stage.trainable)})")
        stage = replace(stage, trainable=(*stage.trainable, "temporal"),
                        summary=f"{stage.summary}; temporal layers trainable too (--trainable full)")
    return stage


# Model configurations the trainer knows by name besides the released presets: the random-weight test size
# (dynamicrafter.config.config_for_tests), with eps- or v-prediction.
TEST_SIZE_MODELS = {
    "test_size": lambda: config_for_tests("test_size"),
    "test_size_v": lambda: config_for_tests("test_size_v", parameterization="v"),
}
RENAMED_MODELS = {"tiny": "test_size", "tiny_v": "test_size_v"}  # old names, easily taken for the shipped model


def model_config(spec: str | ModelConfig) -> ModelConfig:
    """A released preset (256, 512, 1024, 512_interp), a released YAML, or "test_size" / "test_size_v"."""
    if isinstance(spec, str) and spec in RENAMED_MODELS:
        raise ConfigError(f"model '{spec}' is now called '{RENAMED_MODELS[spec]}' (the random-weight test size, 64 x "
                          f"64, 4 frames); the shipped small model 'tiny' is trained by 'dynamicrafter recipe tiny'")
    if isinstance(spec, str) and spec in TEST_SIZE_MODELS:
        return TEST_SIZE_MODELS[spec]()
    return resolve_config(spec)


@dataclass
class TrainConfig:
    """Everything a training run needs (the CLI fills it; every field has the released value or a safe default)."""

    stage: str = "iii"
    model: str | None = None  # preset, released (training) YAML, "test_size" or "test_size_v"; None: the --init
    #                           file's own (stored or detected) configuration, or "test_size" without --init
    data: str = "synthetic:64"  # index (CSV/JSONL, WebVid or generic), folder with an index, or synthetic:N
    data_root: str | None = None  # folder the index's paths are relative to (WebVid: the videos folder)
    init: str | None = None  # checkpoint to start from (released model.ckpt, .safetensors, the project's own)
    text_encoder: str | None = None  # separate CLIP tower files (checkpoints without cond_stage_model.* / embedder.*)
    image_encoder: str | None = None
    run_dir: str = "runs/train"
    resume: str | None = None  # "latest" (newest checkpoint in run_dir/checkpoints) or a checkpoint path
    finetune_trainable: str = "spatial"  # "full": the temporal layers learn too (stages finetune, ii, iii, ablations)
    in_channels: int | None = None  # U-Net input: 4 (no VDG) or 8; None: 4 for a new model of stages i / ii / t2v,
    #                                 the config's for iii / finetune, the checkpoint's with --init (iii expands to 8)
    interp: bool | None = None  # interpolation / looping VDG (first + last frame); None: the model config's
    interp_fraction: float = 0.0  # otherwise: this fraction of the samples (drawn per sample) gets the first + last
    #                               frame VDG, the rest the conditioning frame (one model animates and interpolates)
    rand_cond_frame: bool | None = None  # None: the stage's (released: true, false for interpolation)
    uncond_prob: float | None = None  # CFG dropout probability per case; None: the model config's (0.05)
    # data
    num_frames: int | None = None  # None: the stage's (1 for stage i) or the model's temporal length
    resolution: tuple[int, int] | None = None  # (h, w); None: the model's inference size
    frame_stride: int = RELEASED_FRAME_STRIDE
    frame_stride_min: int = 1
    random_fs: bool = True
    batch_size: int = RELEASED_BATCH_SIZE
    num_workers: int = 2
    # optimization
    lr: float = RELEASED_LR
    warmup_steps: int = 0
    weight_decay: float = 0.01  # torch AdamW default, as released
    max_steps: int = 100_000
    accumulate_grad_batches: int = RELEASED_ACCUMULATE
    gradient_clip_val: float = RELEASED_GRAD_CLIP
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    # LoRA (dynamicrafter.lora): with a rank, only low-rank adapters of the --init model learn (lora.safetensors)
    lora_rank: int | None = None
    lora_alpha: float | None = None  # None: = rank
    lora_targets: str = "spatial"  # spatial | temporal | all | a regular expression over module names
    lora_image_proj: bool = False  # also P's linear layers
    lora_convs: bool = False  # also the 2D convolutions of the targeted part
    # engine
    accelerator: str = "auto"
    strategy: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32"
    seed: int = RELEASED_SEED
    # outputs
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 500
    sample_steps: int = 4
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.resolution is not None:
            self.resolution = (int(self.resolution[0]), int(self.resolution[1]))
        checks = [
            (self.strategy in STRATEGIES,
             f"--strategy '{self.strategy}' is not known: use one of {', '.join(STRATEGIES)}"),
            (str(self.precision) in PRECISIONS,
             f"--precision '{self.precision}' is not supported: use one of {', '.join(PRECISIONS)}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}"),
            (self.accumulate_grad_batches >= 1,
             f"--accumulate-grad-batches must be >= 1, got {self.accumulate_grad_batches}"),
            (self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
             f"--ema-decay must be in (0, 1), got {self.ema_decay}"),
            (self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}"),
            (self.sample_every >= 0, f"--sample-every must be >= 0 (0: no samples), got {self.sample_every}"),
            (self.devices >= 1 and self.num_nodes >= 1, "--devices and --num-nodes must be >= 1"),
            (self.num_frames is None or self.num_frames >= 1, f"--frames must be >= 1, got {self.num_frames}"),
            (self.in_channels in (None, 4, 8), f"--in-channels must be 4 or 8, got {self.in_channels}"),
            (0.0 <= self.interp_fraction <= 1.0, f"--interp-fraction must be in [0, 1], got {self.interp_fraction}"),
            (self.uncond_prob is None or 0.0 <= self.uncond_prob <= 1.0 / 3.0,
             f"uncond_prob must be in [0, 1/3] (three dropout cases), got {self.uncond_prob}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.precision = str(self.precision)
        if self.lora_rank is not None:
            self._check_lora()

    def _check_lora(self) -> None:
        if self.stage not in LORA_STAGES:
            raise ConfigError(f"--lora fine-tunes a video model: use --stage {' / '.join(LORA_STAGES)}, not "
                              f"'{self.stage}'")
        if self.init is None:
            raise ConfigError("--lora adapts a trained model: pass --init CHECKPOINT (the base the adapter is for)")
        self.lora_spec()  # validates rank, alpha and targets

    def lora_spec(self) -> Any:
        """The :class:`dynamicrafter.lora.LoraSpec` of the run (None without --lora)."""
        if self.lora_rank is None:
            return None
        from dynamicrafter.lora import LoraSpec

        return LoraSpec(int(self.lora_rank), self.lora_alpha, self.lora_targets, self.lora_image_proj, self.lora_convs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields that must not change when a run is resumed (they change what is trained or the data order).
RESUME_FIXED_FIELDS = ("stage", "finetune_trainable", "data", "batch_size", "seed", "num_frames", "resolution",
                       "interp", "interp_fraction", "accumulate_grad_batches", "lora_rank", "lora_alpha",
                       "lora_targets", "lora_image_proj", "lora_convs")


def training_yaml_overrides(path: str | Path) -> dict[str, Any]:
    """Training settings of a released training YAML (``configs/training_*/config.yaml``), as TrainConfig fields.

    Reads ``model.base_learning_rate``, ``model.params.rand_cond_frame`` / ``uncond_prob``, ``data.params.batch_size``,
    the WebVid dataset's ``video_length`` / ``frame_stride`` / ``resolution`` / ``random_fs`` and
    ``lightning.trainer.accumulate_grad_batches`` / ``gradient_clip_val``. Inference YAMLs give no overrides.
    """
    import yaml

    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    out: dict[str, Any] = {}
    model = raw.get("model", {}) or {}
    params = model.get("params", {}) or {}
    if "base_learning_rate" in model:
        out["lr"] = float(model["base_learning_rate"])
    if "rand_cond_frame" in params:
        out["rand_cond_frame"] = bool(params["rand_cond_frame"])
    data = (raw.get("data", {}) or {}).get("params", {}) or {}
    if "batch_size" in data:
        out["batch_size"] = int(data["batch_size"])
    train = (data.get("train", {}) or {}).get("params", {}) or {}
    if "video_length" in train:
        out["num_frames"] = int(train["video_length"])
    if "frame_stride" in train:
        out["frame_stride"] = int(train["frame_stride"])
    if "resolution" in train:
        out["resolution"] = tuple(int(v) for v in train["resolution"])
    if "random_fs" in train:
        out["random_fs"] = bool(train["random_fs"])
    trainer = ((raw.get("lightning", {}) or {}).get("trainer", {}) or {})
    if "accumulate_grad_batches" in trainer:
        out["accumulate_grad_batches"] = int(trainer["accumulate_grad_batches"])
    if "gradient_clip_val" in trainer:
        out["gradient_clip_val"] = float(trainer["gradient_clip_val"])
    return out
