"""Image animation pipeline (diffusers conventions): image + prompt -> video.

    pipe = DynamiCrafterPipeline.from_checkpoint("dynamicrafter_256/model.ckpt")
    out = pipe(Image.open("bear.png"), "a brown bear is walking", generator=torch.Generator().manual_seed(123))
    save_video(out.frames[0], "bear.mp4")

Each stage is a public method so it can be run and checked alone: :meth:`encode_prompt`, :meth:`encode_image`,
:meth:`encode_video`, :meth:`decode_latents`. Precomputed inputs (``prompt_embeds``, ``negative_prompt_embeds``,
``image_embeds``, ``image_latents``, ``latents``) skip the corresponding stage. Given ``latents`` and ``eta=0`` the
run is deterministic; seeded runs are bit-identical.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from dynamicrafter.apps.windows import Frames
from dynamicrafter.apps.windows import closed_loop as close_loop
from dynamicrafter.conditioning import Conditioning, build_conditioning, encode_image_tokens, encode_text, vdg_latents
from dynamicrafter.config import ModelConfig, resolve_config
from dynamicrafter.diffusion.ddim import ddim_timesteps, sample_ddim
from dynamicrafter.diffusion.guidance import guided
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.media import image_to_tensor, load_image, resize_and_center_crop
from dynamicrafter.model import DynamiCrafter
from dynamicrafter.utils import default_device, parse_dtype, randn

if TYPE_CHECKING:
    from dynamicrafter.apps.windows import TemporalWindows

ImageInput = Image.Image | str | os.PathLike | torch.Tensor
OutputType = Literal["pil", "np", "pt", "latent"]


@dataclass
class PipelineOutput:
    """``frames``: per video a list of PIL images ("pil"), or an array (b, t, h, w, 3) in [0, 1] ("np"), or a tensor
    (b, 3, t, h, w) in [-1, 1] ("pt"); for "latent" the final latents (b, 4, t, h/8, w/8)."""

    frames: Any
    latents: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)


class DynamiCrafterPipeline:
    def __init__(self, model: DynamiCrafter, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device) if device is not None else model.device
        self.dtype = dtype or model.dtype
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.offload_encoders = False  # move the CLIP towers to the CPU between uses (saves GPU memory)
        self.progress_bar_config: dict[str, Any] = {}
        self.checkpoint_path: Path | None = None  # the file the model was loaded from (set by from_checkpoint)

    # -------------------------------------------------------------------------------------------------------------
    # Construction
    # -------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, config: str | Path | ModelConfig | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
                        text_encoder_path: str | os.PathLike | None = None,
                        image_encoder_path: str | os.PathLike | None = None) -> DynamiCrafterPipeline:
        """Load a released checkpoint (.ckpt / .safetensors) or one of the project's own.

        ``config``: a preset name ("256", "512", "1024", "512_interp"), a released YAML file or a ModelConfig;
        detected from the tensors when None. ``device`` defaults to CUDA when available; ``dtype`` to fp32 on CPU
        and bf16 on CUDA. Without ``path`` the project's built-in small model is used (when installed).
        """
        from dynamicrafter.checkpoint import load_model

        device = torch.device(device) if device is not None else default_device()
        torch_dtype = parse_dtype(dtype, device)
        if path is None:
            from dynamicrafter.weights import default_checkpoint

            path = default_checkpoint()
        model = load_model(path, resolve_config(config) if config is not None else None,
                           text_encoder_path=text_encoder_path, image_encoder_path=image_encoder_path,
                           device=device, dtype=torch_dtype)
        pipe = cls(model, device, torch_dtype)
        pipe.checkpoint_path = Path(path)
        return pipe

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        self.progress_bar_config = kwargs

    # -------------------------------------------------------------------------------------------------------------
    # Stages
    # -------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> text tokens (b, 77, d)."""
        with self._encoder_on_device(self.model.text_encoder):
            return encode_text(self.model, prompts)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (b, 3, H, W) in [-1, 1] -> context tokens of P (b, n_img, d)."""
        with self._encoder_on_device(self.model.image_encoder):
            return encode_image_tokens(self.model, images.to(self.device, self.dtype))

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True,
                     chunk_size: int | None = None) -> torch.Tensor:
        """Frames (b, 3, t, H, W) in [-1, 1] -> scaled VAE latents (b, 4, t, H/8, W/8).

        ``sample=True`` draws from the posterior with ``generator`` (as released); False uses its mean.
        """
        return self.model.vae.encode(video.to(self.device, self.dtype), generator, sample, chunk_size).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Latents (b, 4, t, h, w) -> frames (b, 3, t, 8h, 8w) in [-1, 1] (clamped)."""
        video = self.model.vae.decode(latents.to(self.device, self.dtype), chunk_size)
        return video.float().clamp(-1.0, 1.0)

    def preprocess_image(self, image: ImageInput, height: int, width: int, resize_mode: str = "released"
                         ) -> torch.Tensor:
        """A path, PIL image or tensor -> (3, height, width) in [-1, 1] (resize + center crop, as released)."""
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise UserError(f"image tensors must be (3, H, W) in [-1, 1], got shape {tuple(image.shape)}")
            if tuple(image.shape[1:]) != (height, width):
                raise UserError(f"image tensor is {tuple(image.shape[1:])}, expected ({height}, {width}); pass a PIL "
                                f"image or a path to have it resized")
            return image.float()
        if not isinstance(image, Image.Image):
            image = load_image(image)
        return image_to_tensor(resize_and_center_crop(image.convert("RGB"), height, width, resize_mode))

    # -------------------------------------------------------------------------------------------------------------
    # Generation
    # -------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput] | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        guidance_rescale: float | None = None,
        frame_stride: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "pil",
        decode_chunk_size: int | None = None,
        callback_on_step_end: Callable[[DynamiCrafterPipeline, int, int, dict[str, torch.Tensor]], Any] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        image_latents: torch.Tensor | None = None,
        end_image: ImageInput | Sequence[ImageInput] | None = None,
        sample_posterior: bool = True,
        timestep_spacing: str | None = None,
        resize_mode: str = "released",
        image_attention_scale: float | dict[str, float] | None = None,
        context_stream: bool = True,
        vdg: bool = True,
        denoiser_wrapper: Callable[[Callable, Conditioning], Callable] | None = None,
        temporal_windows: TemporalWindows | None = None,
        closed_loop: bool = False,
        circular: bool = False,
    ) -> PipelineOutput:
        """Animate ``image`` following ``prompt``.

        Unset options take the released inference settings of the loaded model (``config.defaults``).
        ``end_image`` (or an interpolation model with ``image`` given twice) puts the first and last frame latents
        in the VDG input with zeros between: generative frame interpolation, or a loop with the same image.
        ``image_attention_scale`` scales lambda of the image cross-attention (one value, or per group "input" /
        "middle" / "output" / layer name); ``context_stream=False`` sets it to 0 (no image cross-attention) and
        ``vdg=False`` replaces the VDG latents by zeros (the paper's ablations).
        ``denoiser_wrapper(denoise, conditioning)`` may wrap the guided denoiser ``denoise(z, t)``.
        ``temporal_windows`` (:class:`dynamicrafter.apps.windows.TemporalWindows`) denoises ``num_frames`` beyond
        the model's temporal length with overlapping windows whose predictions are blended (long videos).
        ``closed_loop``: frame ``num_frames - 1`` is frame 0 again (a loop): the sampler keeps ``num_frames - 1``
        latents, frame 0's prediction averages its two positions (:func:`dynamicrafter.apps.windows.closed_loop`),
        and the ``num_frames - 1`` distinct frames are returned.
        ``circular``: the timeline is a circle, frame ``num_frames - 1`` is frame 0's neighbour (a ring loop, every
        returned frame distinct): the network's time axis wraps around (``UNet3D.circular_time``), or with
        ``temporal_windows`` shorter than the video the windows wrap around the circle.
        """
        timings: dict[str, float] = {}
        d = self.config.defaults
        # 1. Check inputs and fill defaults ------------------------------------------------------------------------
        num_frames = d.num_frames if num_frames is None else num_frames
        height = d.height if height is None else height
        width = d.width if width is None else width
        steps = d.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance_scale = d.guidance_scale if guidance_scale is None else guidance_scale
        guidance_rescale = d.guidance_rescale if guidance_rescale is None else guidance_rescale
        frame_stride = d.frame_stride if frame_stride is None else frame_stride
        eta = d.eta if eta is None else eta
        spacing = timestep_spacing or d.timestep_spacing
        temporal_length = self.config.unet.temporal_length
        window_frames = num_frames if temporal_windows is None else temporal_windows.window_size(num_frames,
                                                                                                 temporal_length)
        self._check_options(num_frames, height, width, steps, guidance_scale, frame_stride, eta, output_type,
                            window_frames, closed_loop)
        if circular and closed_loop:
            raise UserError("circular and closed_loop are two ways to sample a loop: choose one")
        prompts = self._as_list(prompt if prompt is not None else "", "prompt")
        images = self._as_list(image, "image") if image is not None else None
        batch = self._batch_size(prompts, images, prompt_embeds, image_embeds, image_latents)
        prompts = prompts * batch if len(prompts) == 1 else prompts
        negatives = self._as_list(negative_prompt if negative_prompt is not None else "", "negative_prompt")
        negatives = negatives * batch if len(negatives) == 1 else negatives
        if len(prompts) != batch or len(negatives) != batch:
            raise UserError(f"got {len(prompts)} prompts and {len(negatives)} negative prompts for a batch of {batch}")
        do_cfg = guidance_scale != 1.0
        interp = end_image is not None or self.config.interp_mode
        h, w = height // self.model.vae.downscale, width // self.model.vae.downscale

        # 2. Preprocess images -------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        pixels = end_pixels = None
        if images is not None:
            pixels = torch.stack([self.preprocess_image(im, height, width, resize_mode) for im in images])
            pixels = pixels.expand(batch, -1, -1, -1) if pixels.shape[0] == 1 else pixels
        if interp and image_latents is None:
            ends = self._as_list(end_image, "end_image") if end_image is not None else images
            if ends is None:
                raise UserError("interpolation needs a start and an end image (image=..., end_image=...)")
            end_pixels = torch.stack([self.preprocess_image(im, height, width, resize_mode) for im in ends])
            end_pixels = end_pixels.expand(batch, -1, -1, -1) if end_pixels.shape[0] == 1 else end_pixels

        # 3. Encode the prompts (conditional and unconditional in one batch) ------------------------------------
        if prompt_embeds is None or (do_cfg and negative_prompt_embeds is None):
            texts = (prompts if prompt_embeds is None else []) + (negatives if do_cfg and negative_prompt_embeds is None
                                                                   else [])
            encoded = self.encode_prompt(texts)
            if prompt_embeds is None:
                prompt_embeds, encoded = encoded[:batch], encoded[batch:]
            if do_cfg and negative_prompt_embeds is None:
                negative_prompt_embeds = encoded
        prompt_embeds = prompt_embeds.to(self.device, self.dtype)

        # 4. Encode the image: context tokens of P, for the image and for an all-zeros image --------------------
        if image_embeds is None:
            if pixels is None:
                raise UserError("give an image (or precomputed image_embeds)")
            image_embeds = self.encode_image(pixels)
        image_embeds = image_embeds.to(self.device, self.dtype)
        null_image_embeds = None
        if do_cfg:
            zeros = torch.zeros(1, 3, height, width)
            null_image_embeds = self.encode_image(zeros).expand(batch, -1, -1)
        timings["encode_conditions"] = time.perf_counter() - t0

        # 5. VDG latents: VAE posterior of the conditioning frame(s) ---------------------------------------------
        t0 = time.perf_counter()
        if image_latents is None:
            if pixels is None:
                raise UserError("give an image (or precomputed image_latents)")
            frames = torch.stack([pixels, end_pixels], dim=2) if interp else pixels[:, :, None]  # (b, 3, k, H, W)
            frame_latents = self.encode_video(frames, generator, sample_posterior)  # (b, 4, k, h, w)
            image_latents = vdg_latents(frame_latents, num_frames, interp)
        image_latents = image_latents.to(self.device, torch.float32)
        if image_latents.shape[2] == 1:
            image_latents = vdg_latents(image_latents, num_frames)
        expected = (batch, self.config.vae.latent_channels, num_frames, h, w)
        if tuple(image_latents.shape) != expected:
            raise UserError(f"image_latents has shape {tuple(image_latents.shape)}, expected {expected}")
        timings["encode_vdg"] = time.perf_counter() - t0

        # 6. Conditioning of every guidance branch --------------------------------------------------------------
        fs = torch.full((batch,), int(frame_stride), dtype=torch.long, device=self.device)
        concat = image_latents if self.config.unet.in_channels > self.config.unet.out_channels else None
        if concat is not None and not vdg:
            concat = torch.zeros_like(concat)
        branches = [build_conditioning(self.model, fs=fs, text_embeds=prompt_embeds, image_embeds=image_embeds,
                                       concat=concat)]
        if do_cfg:
            assert negative_prompt_embeds is not None and null_image_embeds is not None
            neg = negative_prompt_embeds.to(self.device, self.dtype)
            branches.append(build_conditioning(self.model, fs=fs, text_embeds=neg, image_embeds=null_image_embeds,
                                               concat=concat))
            if image_guidance_scale is not None:
                branches.append(build_conditioning(self.model, fs=fs, text_embeds=neg, image_embeds=image_embeds,
                                                   concat=concat))
        cond = Conditioning.cat(branches)

        # 7. Initial noise (a closed loop keeps only its distinct frames) ----------------------------------------
        state_frames = num_frames - 1 if closed_loop else num_frames
        shape = (batch, self.config.unet.out_channels, state_frames, h, w)
        if latents is None:
            latents = randn(shape, generator, self.device, torch.float32)
        elif tuple(latents.shape) != shape:
            raise UserError(f"latents has shape {tuple(latents.shape)}, expected {shape}")
        latents = latents.to(self.device, torch.float32)

        # 8. Denoising loop (DDIM + classifier-free guidance, all branches in one batch) -----------------------
        t0 = time.perf_counter()

        def denoise_frames(z: torch.Tensor, t: torch.Tensor, frames: Frames) -> torch.Tensor:
            """Guided prediction for ``frames`` of the video; z (b, 4, len(frames), h, w)."""
            return guided(self._batched_unet(cond, frames), len(branches), guidance_scale, image_guidance_scale,
                          guidance_rescale)(z, t)

        desc = "denoising"
        circular_network = circular and window_frames == num_frames  # else the windows wrap around the circle
        if temporal_windows is None:
            denoise = functools.partial(denoise_frames, frames=slice(None))
        else:
            denoise = temporal_windows.denoiser(denoise_frames, num_frames, temporal_length, circular)
            desc += f" ({len(temporal_windows.windows(num_frames, temporal_length, circular))} windows)"
        if closed_loop:
            denoise = close_loop(denoise)
        if denoiser_wrapper is not None:
            denoise = denoiser_wrapper(denoise, cond)
        timesteps = ddim_timesteps(steps, spacing, self.model.schedule.num_timesteps)
        bar = tqdm(total=len(timesteps), desc=desc, **self.progress_bar_config)

        def on_step(i: int, t: int, z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor | None:
            bar.update(1)
            if callback_on_step_end is not None:
                result = callback_on_step_end(self, i, t, {"latents": z, "pred_x0": z0})
                if isinstance(result, dict) and "latents" in result:
                    return result["latents"]
            return None

        scale = 0.0 if not context_stream else image_attention_scale
        previous = self.model.unet.set_image_attention_scale(scale) if scale is not None else None
        try:
            with self.model.unet.circular_time(circular_network):
                latents = sample_ddim(denoise, latents, self.model.schedule, timesteps, eta, generator, on_step)
        finally:
            bar.close()
            if previous is not None:
                self.model.unet.set_image_attention_scale(previous)
        timings["denoise"] = time.perf_counter() - t0

        # 9. Decode ---------------------------------------------------------------------------------------------
        if output_type == "latent":
            return PipelineOutput(frames=latents, latents=latents, timings=timings)
        t0 = time.perf_counter()
        chunk = decode_chunk_size or (1 if d.perframe_ae else None)
        video = self.decode_latents(latents, chunk).cpu()  # (b, 3, t, H, W) in [-1, 1]
        timings["decode"] = time.perf_counter() - t0
        return PipelineOutput(frames=self.postprocess(video, output_type), latents=latents, timings=timings)

    # -------------------------------------------------------------------------------------------------------------
    # Helpers
    # -------------------------------------------------------------------------------------------------------------

    def _batched_unet(self, cond: Conditioning, frames: Frames = slice(None)
                      ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        """z (b, 4, t, h, w) of the video frames ``frames`` (a slice, or indices of a window wrapping around a
        circle) -> predictions of every branch (n*b, 4, t, h, w) from one network call.

        The VDG latents are sliced to ``frames``; the context is not: P's per-frame image tokens are used in
        window-relative order (frame k of the slice gets token group k, as in a plain run of that length).
        """
        unet = self.model.unet
        concat = cond.concat[:, :, frames] if cond.concat is not None else None  # (n*b, 4, t, h, w)

        def model_fn(z: torch.Tensor, t: torch.Tensor, n: int) -> torch.Tensor:
            x = z.repeat(n, 1, 1, 1, 1)  # (n*b, 4, t, h, w)
            if concat is not None:
                x = torch.cat([x, concat], dim=1)  # (n*b, 8, t, h, w)
            return unet(x.to(self.dtype), t.repeat(n), cond.context, cond.fs).float()  # (n*b, 4, t, h, w)

        return model_fn

    def _check_options(self, num_frames: int, height: int, width: int, steps: int, guidance_scale: float,
                       frame_stride: int, eta: float, output_type: str, window_frames: int,
                       closed_loop: bool = False) -> None:
        multiple = self.model.vae.downscale * 2 ** (len(self.config.unet.channel_mult) - 1)
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise UserError(f"height and width must be positive multiples of {multiple} (VAE x U-Net downsampling), "
                            f"got {height}x{width}")
        min_frames, what = (2, " for a closed loop") if closed_loop else (1, "")
        if num_frames < min_frames:
            raise UserError(f"num_frames must be >= {min_frames}{what}, got {num_frames}")
        if not 1 <= steps <= 1000:
            raise UserError(f"num_inference_steps must be in [1, 1000], got {steps}")
        if guidance_scale < 0:
            raise UserError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if not 0.0 <= eta <= 1.0:
            raise UserError(f"eta must be in [0, 1], got {eta}")
        if frame_stride < 1:
            raise UserError(f"frame_stride must be >= 1, got {frame_stride}")
        lo, hi = self.config.defaults.frame_stride_range
        if not lo <= frame_stride <= hi:
            kind = "fps" if self.config.fs_condition_type == "fps" else "frame stride"
            warnings.warn(f"{kind} {frame_stride} is outside the recommended range [{lo}, {hi}] for model "
                          f"'{self.config.name}'", stacklevel=3)
        if output_type not in ("pil", "np", "pt", "latent"):
            raise UserError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        length = self.config.unet.temporal_length
        if window_frames != length:
            hint = " (use temporal_windows / --window for longer videos)" if window_frames > length else ""
            warnings.warn(f"{window_frames} frames per network call differ from the model's temporal length "
                          f"{length}: quality may degrade{hint}", stacklevel=3)

    @staticmethod
    def _as_list(value: Any, name: str) -> list:
        if isinstance(value, (list, tuple)):
            if not value:
                raise UserError(f"{name} is an empty list")
            return list(value)
        return [value]

    @staticmethod
    def _batch_size(prompts: list, images: list | None, *precomputed: torch.Tensor | None) -> int:
        sizes = {len(prompts)} - {1}
        if images is not None:
            sizes |= {len(images)} - {1}
        sizes |= {t.shape[0] for t in precomputed if t is not None} - {1}
        if len(sizes) > 1:
            raise UserError(f"inconsistent batch sizes between prompts, images and precomputed inputs: {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    @staticmethod
    def postprocess(video: torch.Tensor, output_type: str) -> Any:
        """Frames (b, 3, t, H, W) in [-1, 1] -> ``output_type`` ("pt": unchanged, "np", "pil"); see PipelineOutput."""
        if output_type == "pt":
            return video
        array = ((video + 1.0) / 2.0).permute(0, 2, 3, 4, 1).numpy()  # (b, t, H, W, 3) in [0, 1]
        if output_type == "np":
            return array
        uint8 = (array * 255.0).astype(np.uint8)  # truncation, as the released writer
        return [[Image.fromarray(frame) for frame in clip] for clip in uint8]

    @contextlib.contextmanager
    def _encoder_on_device(self, encoder: torch.nn.Module) -> Iterator[None]:
        """With ``offload_encoders``, keep a CLIP tower on the CPU except while it runs."""
        if not self.offload_encoders or self.device.type == "cpu":
            yield
            return
        encoder.to(self.device)
        try:
            yield
        finally:
            encoder.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def load_prompt_folder(folder: str | os.PathLike, interp: bool = False) -> list[tuple[list[Path], str]]:
    """A folder in the released ``prompts/`` format: images plus ``test_prompts.txt`` (one prompt per line, in the
    sorted order of the images; for interpolation, pairs NAME_01 / NAME_02 per prompt)."""
    folder = Path(folder)
    prompt_files = sorted(folder.glob("*.txt"))
    if not prompt_files:
        raise UserError(f"no prompt file (*.txt) in '{folder}': add test_prompts.txt with one prompt per image")
    prompts = [line.strip() for line in prompt_files[0].read_text().splitlines() if line.strip()]
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    per = 2 if interp else 1
    if len(images) < per * len(prompts):
        raise UserError(f"'{folder}' has {len(prompts)} prompts but {len(images)} images (need {per} per prompt)")
    return [(images[per * i : per * (i + 1)], p) for i, p in enumerate(prompts)]


__all__ = ["ConfigError", "DynamiCrafterPipeline", "PipelineOutput", "load_prompt_folder"]
