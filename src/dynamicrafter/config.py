"""Typed configuration: one dataclass per component, the released models as named presets, and a reader for the
released YAML files.

Presets mirror the released inference configs (``configs/inference_{256,512,1024}_v1.0.yaml``) and the inference
settings of the released ``scripts/run.sh``. YAML is only read to import the official files; everything inside the
project is built from these dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from dynamicrafter.errors import ConfigError

TEXT_CONTEXT_LEN = 77  # CLIP text tokens per prompt (start, words, end, padding)


@dataclass(frozen=True)
class UNetConfig:
    """The 3D denoising U-Net (``model.diffusion_model``).

    Layout: input ``(b, in_channels, t, h, w)`` = noisy latents (4) concatenated with the VDG image latents (4).
    """

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)  # downsampling factors at which transformers are used
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    dropout: float = 0.1
    use_linear: bool = True  # linear (vs 1x1 conv) projections in/out of the spatial and temporal transformers
    temporal_conv: bool = True
    temporal_attention: bool = True
    use_relative_position: bool = False
    use_causal_attention: bool = False
    temporal_length: int = 16
    addition_attention: bool = True  # the extra temporal transformer after the first input convolution
    init_attn_heads: int = 8
    image_cross_attention: bool = True
    image_cross_attention_scale: float = 1.0
    image_cross_attention_scale_learnable: bool = False  # per-layer learnable lambda gate (256 model)
    fs_condition: bool = True
    default_fs: int = 3
    text_context_len: int = TEXT_CONTEXT_LEN
    image_tokens_per_frame: int = 16  # P's queries per frame: context of 77 + 16 * t tokens is split per frame
    norm_groups: int = 32
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class ResamplerConfig:
    """The query transformer P (released ``Resampler``): CLIP image tokens -> text-aligned context tokens."""

    dim: int = 1024
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16  # learned queries per frame
    embedding_dim: int = 1280  # width of the CLIP image tokens
    output_dim: int = 1024  # = U-Net context_dim
    ff_mult: int = 4
    video_length: int | None = 16  # None: one set of num_queries queries for the whole video


@dataclass(frozen=True)
class VAEConfig:
    """The SD AutoencoderKL (``first_stage_model``), applied to each frame."""

    in_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    latent_channels: int = 4
    norm_groups: int = 32
    scale_factor: float = 0.18215

    @property
    def downscale(self) -> int:
        """Pixels per latent cell (8 for the SD VAE)."""
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class CLIPTextConfig:
    """OpenCLIP ViT-H/14 text tower (``cond_stage_model``), read at the penultimate layer + final LayerNorm."""

    vocab_size: int = 49408
    context_length: int = TEXT_CONTEXT_LEN
    width: int = 1024
    layers: int = 24  # layers in the checkpoint
    layers_used: int = 23  # "penultimate": the last block is skipped
    heads: int = 16
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class CLIPVisionConfig:
    """OpenCLIP ViT-H/14 image tower (``embedder``): all 257 tokens of the last block, before ``ln_post``."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    heads: int = 16
    mlp_ratio: float = 4.0


Parameterization = Literal["eps", "v"]


@dataclass(frozen=True)
class ScheduleConfig:
    """The DDPM noise schedule and what the network predicts."""

    num_timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    parameterization: Parameterization = "eps"
    rescale_betas_zero_snr: bool = False
    use_dynamic_rescale: bool = False
    base_scale: float = 0.7
    turning_step: int = 400


TimestepSpacing = Literal["uniform", "uniform_trailing"]
SPACINGS: tuple[str, ...] = ("uniform", "uniform_trailing")  # the values of TimestepSpacing (sampled timesteps)


@dataclass(frozen=True)
class InferenceDefaults:
    """Sampling settings of the released ``scripts/run.sh`` for each model."""

    height: int = 256
    width: int = 256
    num_frames: int = 16
    num_inference_steps: int = 50
    eta: float = 1.0
    guidance_scale: float = 7.5
    frame_stride: int = 3  # frame stride (256 model) or fps (512/1024/interp models)
    frame_stride_range: tuple[int, int] = (1, 6)  # recommended range, for messages and the UI
    timestep_spacing: TimestepSpacing = "uniform"
    guidance_rescale: float = 0.0
    perframe_ae: bool = False
    save_fps: float = 8.0  # fps of the written video file (the released scripts write 8 fps)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a DynamiCrafter model."""

    name: str = "256"
    unet: UNetConfig = field(default_factory=UNetConfig)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    image_encoder: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    defaults: InferenceDefaults = field(default_factory=InferenceDefaults)
    fs_condition_type: Literal["fs", "fps"] = "fs"  # what the fs embedding means: frame stride or frames per second
    interp_mode: bool = False  # VDG input holds the first and last frame latents (interpolation / looping model)
    uncond_prob: float = 0.05  # training: classifier-free-guidance dropout probability per case

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict` (used for the configs stored beside the project's own checkpoints)."""
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = _NESTED.get((cls.__name__, name))
        if sub is not None and isinstance(value, dict):
            value = _from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


_NESTED: dict[tuple[str, str], type] = {
    ("ModelConfig", "unet"): UNetConfig,
    ("ModelConfig", "resampler"): ResamplerConfig,
    ("ModelConfig", "vae"): VAEConfig,
    ("ModelConfig", "text_encoder"): CLIPTextConfig,
    ("ModelConfig", "image_encoder"): CLIPVisionConfig,
    ("ModelConfig", "schedule"): ScheduleConfig,
    ("ModelConfig", "defaults"): InferenceDefaults,
}


# ----------------------------------------------------------------------------------------------------------------
# Presets: the four released models
# ----------------------------------------------------------------------------------------------------------------

DYNAMICRAFTER_256 = ModelConfig(
    name="256",
    unet=UNetConfig(image_cross_attention_scale_learnable=True, default_fs=3),
    schedule=ScheduleConfig(parameterization="eps"),
    defaults=InferenceDefaults(height=256, width=256, frame_stride=3, frame_stride_range=(1, 6)),
    fs_condition_type="fs",
)

_V_SCHEDULE = ScheduleConfig(parameterization="v", rescale_betas_zero_snr=True, use_dynamic_rescale=True,
                             base_scale=0.7)

DYNAMICRAFTER_512 = ModelConfig(
    name="512",
    unet=UNetConfig(default_fs=24),
    schedule=_V_SCHEDULE,
    defaults=InferenceDefaults(height=320, width=512, frame_stride=24, frame_stride_range=(15, 30),
                               timestep_spacing="uniform_trailing", guidance_rescale=0.7, perframe_ae=True),
    fs_condition_type="fps",
)

DYNAMICRAFTER_1024 = ModelConfig(
    name="1024",
    unet=UNetConfig(default_fs=10),
    schedule=replace(_V_SCHEDULE, base_scale=0.3),
    defaults=InferenceDefaults(height=576, width=1024, frame_stride=10, frame_stride_range=(5, 15),
                               timestep_spacing="uniform_trailing", guidance_rescale=0.7, perframe_ae=True),
    fs_condition_type="fps",
)

# The interpolation / looping model: run with the 512 inference config; VDG gets first + last frame latents.
DYNAMICRAFTER_512_INTERP = replace(
    DYNAMICRAFTER_512,
    name="512_interp",
    defaults=replace(DYNAMICRAFTER_512.defaults, frame_stride=5, frame_stride_range=(5, 30)),
    interp_mode=True,
)

PRESETS: dict[str, ModelConfig] = {
    c.name: c for c in (DYNAMICRAFTER_256, DYNAMICRAFTER_512, DYNAMICRAFTER_1024, DYNAMICRAFTER_512_INTERP)
}


def config_for_tests(name: str = "test_size", *, parameterization: Parameterization = "eps",
                     learnable_lambda: bool = True, height: int = 64, width: int = 64, num_frames: int = 4
                     ) -> ModelConfig:
    """The random-weight test size: the released architecture at the smallest widths that exercise every layer
    (64 x 64, 4 frames), for tests, examples and speed checks of code paths. Not the shipped small model: that is
    :data:`dynamicrafter.recipe.config.TINY` (model "tiny", trained by ``dynamicrafter recipe tiny``)."""
    return ModelConfig(
        name=name,
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1, 2),
                        num_head_channels=16, context_dim=32, temporal_length=num_frames, init_attn_heads=2,
                        norm_groups=8, image_cross_attention_scale_learnable=learnable_lambda, default_fs=3,
                        image_tokens_per_frame=4, dropout=0.0),
        resampler=ResamplerConfig(dim=32, depth=1, dim_head=16, heads=2, num_queries=4, embedding_dim=48,
                                  output_dim=32, ff_mult=2, video_length=num_frames),
        vae=VAEConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8),
        text_encoder=CLIPTextConfig(width=32, layers=2, layers_used=1, heads=2),
        image_encoder=CLIPVisionConfig(image_size=28, patch_size=14, width=48, layers=2, heads=2),
        schedule=ScheduleConfig(parameterization=parameterization, rescale_betas_zero_snr=parameterization == "v",
                                use_dynamic_rescale=parameterization == "v"),
        defaults=InferenceDefaults(height=height, width=width, num_frames=num_frames, num_inference_steps=4,
                                   frame_stride=3),
    )


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset '{name}'; choose one of {sorted(PRESETS)} or pass a YAML file")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------------------------
# Reading the released YAML files
# ----------------------------------------------------------------------------------------------------------------

# U-Net YAML keys that the released code accepts but that only have one supported value here.
_UNET_FIXED = {"dims": 2, "conv_resample": True, "use_scale_shift_norm": False, "resblock_updown": False,
               "tempspatial_aware": False, "use_fp16": False, "num_heads": -1}
# U-Net YAML keys without effect on the computed function (memory/speed switches, or ignored by the released code).
_UNET_IGNORED = {"use_checkpoint", "temporal_selfatt_only"}
_UNET_RENAMED = {"image_cross_attention_scale_learnable": "image_cross_attention_scale_learnable"}


def config_from_yaml(path: str | Path, name: str | None = None) -> ModelConfig:
    """Read a released config (inference or training YAML) into a :class:`ModelConfig`.

    Reads ``model.params``: the schedule, parameterization, ``unet_config.params``,
    ``image_proj_stage_config.params`` and ``first_stage_config.params.ddconfig``. Inference defaults come from the
    preset whose network matches (the YAML files do not hold the sampling settings of ``run.sh``).
    """
    path = Path(path)
    params = _model_params(path)
    unet = _unet_from_yaml(path, params)
    resampler = ResamplerConfig()
    if "image_proj_stage_config" in params:
        resampler = ResamplerConfig(**params["image_proj_stage_config"]["params"])
    unet = replace(unet, image_tokens_per_frame=resampler.num_queries)
    vae = _vae_from_yaml(path, params)
    schedule = _schedule_from_yaml(path, params)
    return ModelConfig(
        name=name or path.stem,
        unet=unet,
        resampler=resampler,
        vae=vae,
        schedule=schedule,
        defaults=_defaults_from_yaml(params, unet, vae, schedule),
        fs_condition_type=params.get("fps_condition_type", "fs"),
        interp_mode=bool(params.get("interp_mode", False)),
        uncond_prob=float(params.get("uncond_prob", 0.05)),
    )


def _model_params(path: Path) -> dict[str, Any]:
    """``model.params`` of a released YAML, or a one-line error when the file is not one."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: '{path}' (pass a released YAML or a preset name: {sorted(PRESETS)})")
    with open(path) as f:
        raw = yaml.safe_load(f)
    try:
        params = raw["model"]["params"]
        dict(params["unet_config"]["params"])  # a mapping
    except (KeyError, TypeError) as e:
        raise ConfigError(f"'{path}' is not a DynamiCrafter model config (no model.params.unet_config)") from e
    return params


def _unet_from_yaml(path: Path, params: dict[str, Any]) -> UNetConfig:
    """``unet_config.params``: the keys with one supported value are checked, those without effect dropped."""
    unet_params = dict(params["unet_config"]["params"])
    for key, value in _UNET_FIXED.items():
        if key in unet_params and unet_params.pop(key) != value:
            raise ConfigError(f"'{path}': unet_config {key}={params['unet_config']['params'][key]!r} is not "
                              f"supported (only {value!r}, as in the released models)")
    for key in _UNET_IGNORED:
        unet_params.pop(key, None)
    unet_fields = {f.name for f in fields(UNetConfig)}
    unknown = set(unet_params) - unet_fields
    if unknown:
        raise ConfigError(f"'{path}': unknown unet_config parameter(s) {sorted(unknown)}")
    for key in ("channel_mult", "attention_resolutions"):
        if key in unet_params:
            unet_params[key] = tuple(unet_params[key])
    return UNetConfig(**unet_params)


def _vae_from_yaml(path: Path, params: dict[str, Any]) -> VAEConfig:
    """``first_stage_config.params`` (``ddconfig``, ``embed_dim``) and the latent ``scale_factor``."""
    first_stage = params.get("first_stage_config", {}).get("params", {})
    dd = first_stage.get("ddconfig", {})
    vae = VAEConfig(
        in_channels=dd.get("in_channels", 3), base_channels=dd.get("ch", 128),
        channel_mult=tuple(dd.get("ch_mult", (1, 2, 4, 4))), num_res_blocks=dd.get("num_res_blocks", 2),
        latent_channels=first_stage.get("embed_dim", 4),
        scale_factor=float(params.get("scale_factor", 0.18215)),
    )
    if dd.get("attn_resolutions"):
        raise ConfigError(f"'{path}': VAE attn_resolutions={dd['attn_resolutions']} is not supported (SD VAE has [])")
    return vae


def _schedule_from_yaml(path: Path, params: dict[str, Any]) -> ScheduleConfig:
    schedule = ScheduleConfig(
        num_timesteps=int(params.get("timesteps", 1000)),
        linear_start=float(params.get("linear_start", 0.00085)),
        linear_end=float(params.get("linear_end", 0.012)),
        parameterization=params.get("parameterization", "eps"),
        rescale_betas_zero_snr=bool(params.get("rescale_betas_zero_snr", False)),
        use_dynamic_rescale=bool(params.get("use_dynamic_rescale", False)),
        base_scale=float(params.get("base_scale", 0.7)),
    )
    if schedule.parameterization not in ("eps", "v"):
        raise ConfigError(f"'{path}': parameterization '{schedule.parameterization}' not supported (eps or v)")
    return schedule


def _defaults_from_yaml(params: dict[str, Any], unet: UNetConfig, vae: VAEConfig, schedule: ScheduleConfig
                        ) -> InferenceDefaults:
    """The matching preset's sampling settings at the YAML's size (latent ``image_size`` x VAE factor), frames and
    frame stride."""
    image_size = params.get("image_size", [32, 32])
    if isinstance(image_size, int):
        image_size = [image_size, image_size]
    base = _closest_preset(unet, schedule)
    scale = 2 ** (len(vae.channel_mult) - 1)
    return replace(base.defaults, height=int(image_size[0]) * scale, width=int(image_size[1]) * scale,
                   num_frames=unet.temporal_length, frame_stride=unet.default_fs,
                   perframe_ae=bool(params.get("perframe_ae", base.defaults.perframe_ae)))


def _closest_preset(unet: UNetConfig, schedule: ScheduleConfig) -> ModelConfig:
    if schedule.parameterization == "eps":
        return DYNAMICRAFTER_256
    return DYNAMICRAFTER_1024 if schedule.base_scale < 0.5 else DYNAMICRAFTER_512


def resolve_config(spec: str | Path | ModelConfig) -> ModelConfig:
    """A preset name, a YAML path or a ModelConfig -> ModelConfig."""
    if isinstance(spec, ModelConfig):
        return spec
    spec_str = str(spec)
    if spec_str in PRESETS:
        return PRESETS[spec_str]
    if spec_str.endswith((".yaml", ".yml")) or Path(spec_str).is_file():
        return config_from_yaml(spec_str)
    raise ConfigError(f"unknown config '{spec_str}': use a preset name {sorted(PRESETS)} or a released YAML file")
