"""Sampling options: every setting of one generation in one frozen, validated dataclass.

    options = SamplingOptions(num_inference_steps=25, guidance_scale=5.0, seed=123)
    out = pipe(image, prompt, options)                   # or: pipe(image, prompt, num_inference_steps=25, ...)
    options.resolved(pipe.config)                        # every None -> the loaded model's released setting

Field names are the pipeline's keyword names (diffusers conventions); ``None`` means "the loaded model's released
setting". Scripts, the command line and the web UI name the settings more briefly (``steps``, ``frames``,
``window`` ...): :meth:`SamplingOptions.from_settings` reads those names and :meth:`SamplingOptions.to_settings`
writes them, both through the one table :data:`SETTINGS`, which also holds every range. Every value is checked
when the options are made (finite numbers, whole counts, ranges), with a one-line error that names the setting, the
value and what is accepted; :meth:`SamplingOptions.resolved` adds the checks that need the model.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamicrafter.config import SPACINGS, ModelConfig
from dynamicrafter.errors import UserError
from dynamicrafter.models.controls import ImageAttentionScale, parse_image_attention_scale

DEFAULT_SEED = 123  # the released scripts' seed
SEED_MAX = 2**63 - 1
LOOP_METHODS: tuple[str, ...] = ("ring", "closed", "open")  # see dynamicrafter.apps.interpolation.loop
RESIZE_MODES: tuple[str, ...] = ("released", "cover")
WEIGHTINGS: tuple[str, ...] = ("linear", "uniform")  # blending of overlapping temporal windows
SAMPLER_NAMES: tuple[str, ...] = ("ddim", "dpmpp_2m", "unipc")  # functions: dynamicrafter.diffusion.samplers.SAMPLERS
STOCHASTIC_SAMPLERS: tuple[str, ...] = ("ddim",)  # the samplers that use eta; the others are deterministic ODE solvers
MAX_FRAMES_PER_CALL_FACTOR = 2  # without windows, at most this many times the model's temporal length in one call


@dataclass(frozen=True)
class Setting:
    """One user-facing setting: its name in scripts / on the command line (``--name-with-dashes``) / in the UI, the
    :class:`SamplingOptions` field it sets, its kind and its accepted values."""

    name: str
    field: str
    kind: type  # int, float, bool or str
    low: float | None = None  # inclusive bounds of numbers
    high: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""

    def accepted(self) -> str:
        """What is accepted, for messages."""
        if self.choices is not None:
            return f"one of {', '.join(self.choices)}"
        if self.kind is bool:
            return "true or false"
        what = "a whole number" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{what} in [{self.low:g}, {self.high:g}]"
        return f"{what} >= {self.low:g}" if self.low is not None else what

    def check(self, value: Any, label: str | None = None) -> Any:
        """``value`` converted to the setting's kind, or a one-line UserError naming ``label``, the value and what is
        accepted."""
        label = label or self.name
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            str: isinstance(value, str),
        }[self.kind]
        if self.kind is int and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True  # 25.0 from a JSON number or a UI slider
        if ok and self.choices is not None and value not in self.choices:
            ok = False
        if ok and self.kind in (int, float):
            ok = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        if not ok:
            raise UserError(f"{label} must be {self.accepted()}, got {value!r}")
        return float(value) if self.kind is float else value


@dataclass(frozen=True)
class TemporalWindows:
    """Sliding temporal windows for videos longer than the model's temporal length: their settings and layout
    (``size=None``: the model's temporal length, ``stride=None``: half the size); the blending of their predictions
    is :mod:`dynamicrafter.diffusion.windows`."""

    size: int | None = None
    stride: int | None = None
    weighting: str = "linear"

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise UserError(f"window size must be >= 1 frame, got {self.size}")
        if self.stride is not None and self.stride < 1:
            raise UserError(f"window stride must be >= 1 frame, got {self.stride}")
        if self.size is not None and self.stride is not None and self.stride > self.size:
            raise UserError(f"window stride {self.stride} is larger than the window size {self.size}: frames between "
                            f"windows would never be denoised; use a stride <= {self.size}")
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"window weighting must be one of {list(WEIGHTINGS)}, got {self.weighting!r}")

    def window_size(self, num_frames: int, temporal_length: int) -> int:
        """Frames per window for a video of ``num_frames`` (never more than the video)."""
        return min(self.size or temporal_length, num_frames)

    def window_stride(self, num_frames: int, temporal_length: int) -> int:
        """Frames between window starts (half the window when unset; never more than the window)."""
        size = self.window_size(num_frames, temporal_length)
        return min(self.stride or max(size // 2, 1), size)

    def slices(self, num_frames: int, temporal_length: int) -> list[slice]:
        """The windows, in order; together they cover every frame ``0 .. num_frames - 1``."""
        size = self.window_size(num_frames, temporal_length)
        stride = self.window_stride(num_frames, temporal_length)
        starts = list(range(0, num_frames - size + 1, stride))
        if starts[-1] + size < num_frames:
            starts.append(num_frames - size)  # align the last window to the end
        return [slice(s, s + size) for s in starts]

    def windows(self, num_frames: int, temporal_length: int, circular: bool = False) -> list[slice | list[int]]:
        """The windows as slices, or on a circle as lists of frame indices starting every ``stride`` frames,
        wrapping past the last frame (a circle of one window's length or less is one window)."""
        size = self.window_size(num_frames, temporal_length)
        if not circular or size == num_frames:
            return list(self.slices(num_frames, temporal_length))
        stride = self.window_stride(num_frames, temporal_length)
        return [[(start + k) % num_frames for k in range(size)] for start in range(0, num_frames, stride)]


# The table of every sampling setting. "image_attention_scale" (numbers or NAME=NUMBER pairs) and the window
# settings (gathered into one TemporalWindows) have their own readers below.
SETTINGS: tuple[Setting, ...] = (
    Setting("frames", "num_frames", int, 1, 4096, help="number of frames (default: the model's 16)"),
    Setting("height", "height", int, 1, 8192, help="output height (default: the model's)"),
    Setting("width", "width", int, 1, 8192, help="output width (default: the model's)"),
    Setting("steps", "num_inference_steps", int, 1, 1000, help="sampling steps (released: 50)"),
    Setting("sampler", "sampler", str, choices=SAMPLER_NAMES,
            help="sampler: ddim (released), or the deterministic fewer-step ODE solvers dpmpp_2m (DPM-Solver++ 2M) "
                 "and unipc (UniPC-2), which come as close to the converged result in about 15 steps as ddim in "
                 "50 (README: Samplers)"),
    Setting("guidance_scale", "guidance_scale", float, 0, 100,
            help="text classifier-free guidance scale (released: 7.5)"),
    Setting("image_guidance_scale", "image_guidance_scale", float, 0, 100,
            help="separate image guidance scale (a third branch)"),
    Setting("guidance_rescale", "guidance_rescale", float, 0, 1,
            help="guidance rescale phi (released: 0 for 256, 0.7 otherwise)"),
    Setting("eta", "eta", float, 0, 1,
            help="DDIM eta in [0, 1]: 0 deterministic, 1 the released stochastic sampling (released: 1.0); ignored "
                 "by the deterministic samplers dpmpp_2m and unipc"),
    Setting("frame_stride", "frame_stride", int, 1, 1000,
            help="motion control: frame stride for the 256 model (larger = more motion), fps for the others "
                 "(smaller = more motion)"),
    Setting("timestep_spacing", "timestep_spacing", str, choices=SPACINGS,
            help="sampled timesteps (released: uniform for 256, uniform_trailing otherwise)"),
    Setting("image_attention_scale", "image_attention_scale", float, 0, None,
            help="scale lambda of the image cross-attention: one value (1 = as trained, 0 = context stream off; "
                 "smaller = weaker context stream, less adherence to the image) or per group / layer, e.g. "
                 "input=0.5,middle=1.0,output=1.0"),
    Setting("context_stream", "context_stream", bool, help="the context stream (image cross-attention) on"),
    Setting("vdg", "vdg", bool, help="the visual detail guidance (image latents beside the noise) on"),
    Setting("window", "temporal_windows", int, 1, 4096,
            help="longer videos: denoise in sliding windows of N frames ('auto': the model's temporal length)"),
    Setting("window_stride", "temporal_windows", int, 1, 4096, help="frames between window starts (default: half)"),
    Setting("window_weighting", "temporal_windows", str, choices=WEIGHTINGS,
            help="blending of overlapping windows: linear (tent, default) or uniform (average)"),
    Setting("loop", "loop", bool, help="sample a seamless loop"),
    Setting("loop_method", "loop_method", str, choices=LOOP_METHODS,
            help="ring (image-to-video models), closed (interpolation models) or open (released)"),
    Setting("seed", "seed", int, 0, SEED_MAX, help=f"random seed (the released scripts use {DEFAULT_SEED})"),
    Setting("resize", "resize_mode", str, choices=RESIZE_MODES,
            help="released: shorter side to min(h, w) then center crop (pads if needed); cover: never pads"),
)
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)
SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}
WINDOW_SETTINGS = ("window", "window_stride", "window_weighting")


@dataclass(frozen=True)
class SamplingOptions:
    """The settings of one generation; ``None`` = the loaded model's released setting (see :meth:`resolved`).

    ``image_attention_scale``: the factor s on lambda, one value or per group ("input", "middle", "output") / layer
    name; ``context_stream=False`` sets it to 0 and ``vdg=False`` replaces the VDG latents by zeros (the paper's
    ablations). ``temporal_windows``: sliding windows for videos longer than the model's temporal length. ``loop``:
    sample a loop by ``loop_method`` ("ring": on a circular timeline; "closed": an interpolation from the image to
    itself whose closing frame is frame 0; "open": the released way). ``seed`` seeds the run when no generator is
    passed.
    """

    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    sampler: str | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    guidance_rescale: float | None = None
    eta: float | None = None
    frame_stride: int | None = None
    timestep_spacing: str | None = None
    image_attention_scale: ImageAttentionScale | None = None
    context_stream: bool = True
    vdg: bool = True
    temporal_windows: TemporalWindows | None = None
    loop: bool = False
    loop_method: str | None = None
    seed: int | None = None
    resize_mode: str = "released"

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            value = getattr(self, setting.field)
            if value is None or setting.field in ("temporal_windows", "image_attention_scale"):
                continue
            object.__setattr__(self, setting.field, setting.check(value, setting.field))
        if self.image_attention_scale is not None:
            scale = parse_image_attention_scale(self.image_attention_scale, "image_attention_scale")
            object.__setattr__(self, "image_attention_scale", scale)
        if self.temporal_windows is not None and not isinstance(self.temporal_windows, TemporalWindows):
            raise UserError(f"temporal_windows must be a TemporalWindows, got {type(self.temporal_windows).__name__}")
        if self.loop_method is not None and not self.loop:
            raise UserError(f"loop_method {self.loop_method!r} is set but loop is not: set loop=True or drop it")

    # -------------------------------------------------------------------------------------------------------------
    # From and to the user-facing settings
    # -------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], where: str = "", style: str = "name") -> SamplingOptions:
        """Options from user-facing settings (``None`` values are skipped); unknown names are refused.

        ``where`` prefixes error messages (e.g. "story.yaml: shot 2:"); ``style="flag"`` names the settings as
        command-line flags (``--steps``) in them.
        """
        values: dict[str, Any] = {}
        for name, value in settings.items():
            if name not in SETTINGS_BY_NAME:
                close = difflib.get_close_matches(str(name), SETTING_NAMES, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise UserError(f"{where} unknown setting '{name}' ({hint}known: {', '.join(SETTING_NAMES)})".strip())
            if value is None or name in WINDOW_SETTINGS:
                continue
            label = _label(name, where, style)
            if name == "image_attention_scale":
                values["image_attention_scale"] = parse_image_attention_scale(value, label)
            else:
                values[SETTINGS_BY_NAME[name].field] = SETTINGS_BY_NAME[name].check(value, label)
        values["temporal_windows"] = _windows_from_settings(settings, where, style)
        if values.get("loop_method") is not None and not values.get("loop"):
            raise UserError(f"{_label('loop_method', where, style)} is set but {_label('loop', '', 'quoted')} is not "
                            f"true: make it a loop or drop the method")
        return cls(**values)

    def to_settings(self) -> dict[str, Any]:
        """The user-facing settings that differ from "unset" (what a story sidecar records)."""
        defaults = SamplingOptions()
        out: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.name in WINDOW_SETTINGS:
                continue
            value = getattr(self, setting.field)
            if value is not None and value != getattr(defaults, setting.field):
                out[setting.name] = dict(value) if isinstance(value, Mapping) else value
        windows = self.temporal_windows
        if windows is not None:
            out.update(window=windows.size if windows.size is not None else "auto", window_stride=windows.stride,
                       window_weighting=windows.weighting)
            if windows.stride is None:
                del out["window_stride"]
        return out

    def replace(self, **changes: Any) -> SamplingOptions:
        """A copy with ``changes`` (field names); unknown names are refused with a hint."""
        unknown = [k for k in changes if k not in FIELD_NAMES]
        if unknown:
            close = difflib.get_close_matches(unknown[0], FIELD_NAMES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TypeError(f"unexpected sampling option '{unknown[0]}'{hint}; options: {', '.join(FIELD_NAMES)}")
        return dataclasses.replace(self, **changes)

    # -------------------------------------------------------------------------------------------------------------
    # Against a model
    # -------------------------------------------------------------------------------------------------------------

    def resolved(self, config: ModelConfig) -> SamplingOptions:
        """Every unset value filled with the model's released setting, windows made explicit, and the checks that
        need the model (sizes, loop method, frames per network call); warns about values outside the recommended
        ranges."""
        d = config.defaults
        fill = {
            "num_frames": d.num_frames, "height": d.height, "width": d.width,
            "num_inference_steps": d.num_inference_steps, "sampler": "ddim", "guidance_scale": d.guidance_scale,
            "guidance_rescale": d.guidance_rescale, "eta": d.eta, "frame_stride": d.frame_stride,
            "timestep_spacing": d.timestep_spacing,
        }
        if self.loop:
            fill["loop_method"] = "closed" if config.interp_mode else "ring"  # = apps.interpolation.default_loop_method
        out = dataclasses.replace(self, **{k: v for k, v in fill.items() if getattr(self, k) is None})
        if out.temporal_windows is not None:
            frames, length = int(out.num_frames), config.unet.temporal_length  # type: ignore[arg-type]
            windows = out.temporal_windows
            out = dataclasses.replace(out, temporal_windows=TemporalWindows(
                windows.window_size(frames, length), windows.window_stride(frames, length), windows.weighting))
        out._check_against(config)
        return out

    @property
    def frames_per_call(self) -> int:
        """Frames the network sees in one call (resolved options)."""
        assert self.num_frames is not None, "resolve the options first"
        return self.num_frames if self.temporal_windows is None else int(self.temporal_windows.size)  # type: ignore

    def _check_against(self, config: ModelConfig) -> None:
        multiple = config.vae.downscale * 2 ** (len(config.unet.channel_mult) - 1)
        if self.height % multiple or self.width % multiple:  # type: ignore[operator]
            raise UserError(f"height and width must be multiples of {multiple} for model '{config.name}' (VAE x U-Net "
                            f"downsampling), got {self.height}x{self.width}")
        if self.loop and self.loop_method != "ring" and self.num_frames < 2:  # type: ignore[operator]
            raise UserError(f"num_frames must be >= 2 for a {self.loop_method} loop, got {self.num_frames}")
        if self.loop and self.loop_method == "ring" and config.interp_mode:
            raise UserError(f"a ring loop animates the image, which interpolation model '{config.name}' is not "
                            f"trained for: use the 'closed' loop method")
        length = config.unet.temporal_length
        per_call = self.frames_per_call
        if per_call > MAX_FRAMES_PER_CALL_FACTOR * length:
            raise UserError(f"{per_call} frames in one network call, but model '{config.name}' is trained on {length}: "
                            f"use sliding windows (--window / temporal_windows) for longer videos, or at most "
                            f"{MAX_FRAMES_PER_CALL_FACTOR * length} frames")
        if self.sampler not in STOCHASTIC_SAMPLERS and self.eta not in (None, 0.0, config.defaults.eta):
            warnings.warn(f"eta {self.eta:g} is ignored by the deterministic sampler '{self.sampler}' (eta is used by "
                          f"{', '.join(STOCHASTIC_SAMPLERS)})", stacklevel=4)
        lo, hi = config.defaults.frame_stride_range
        if not lo <= self.frame_stride <= hi:  # type: ignore[operator]
            kind = "fps" if config.fs_condition_type == "fps" else "frame stride"
            warnings.warn(f"{kind} {self.frame_stride} is outside the recommended range [{lo}, {hi}] for model "
                          f"'{config.name}'", stacklevel=4)
        if per_call != length:
            hint = " (use temporal_windows / --window for longer videos)" if per_call > length else ""
            warnings.warn(f"{per_call} frames per network call differ from the model's temporal length {length}: "
                          f"quality may degrade{hint}", stacklevel=4)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SamplingOptions))


def _label(name: str, where: str, style: str) -> str:
    """How errors name a setting: ``--flag`` (command line), ``'name'`` (scripts) or ``name``, after ``where``."""
    label = f"--{name.replace('_', '-')}" if style == "flag" else f"'{name}'" if where or style == "quoted" else name
    return f"{where} {label}".strip()


def _windows_from_settings(settings: Mapping[str, Any], where: str, style: str) -> TemporalWindows | None:
    """``window`` (frames, or "auto" = the model's temporal length), ``window_stride``, ``window_weighting`` -> one
    TemporalWindows, or None when none of them is set."""
    size, stride, weighting = (settings.get(name) for name in WINDOW_SETTINGS)
    if size is None and stride is None and weighting is None:
        return None
    if size == "auto":
        size = None
    elif size is not None:
        size = SETTINGS_BY_NAME["window"].check(size, _label("window", where, style))
    if stride is not None:
        stride = SETTINGS_BY_NAME["window_stride"].check(stride, _label("window_stride", where, style))
    if weighting is not None:
        weighting = SETTINGS_BY_NAME["window_weighting"].check(weighting, _label("window_weighting", where, style))
    if size is not None and stride is not None and stride > size:
        raise UserError(f"{_label('window_stride', where, style)} {stride} is larger than "
                        f"{_label('window', where, style)} {size}: frames between windows would never be denoised; "
                        f"use a stride <= {size}")
    return TemporalWindows(size, stride, weighting or "linear")


__all__ = ["DEFAULT_SEED", "FIELD_NAMES", "LOOP_METHODS", "RESIZE_MODES", "SAMPLER_NAMES", "SETTINGS",
           "SETTING_NAMES", "STOCHASTIC_SAMPLERS", "SamplingOptions", "Setting", "TemporalWindows", "WEIGHTINGS"]
