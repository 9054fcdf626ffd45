"""Image animation pipeline (diffusers conventions): image + prompt -> video.

    pipe = DynamiCrafterPipeline.from_checkpoint("dynamicrafter_256/model.ckpt")
    out = pipe(Image.open("bear.png"), "a brown bear is walking", generator=torch.Generator().manual_seed(123))
    save_video(out.frames[0], "bear.mp4")

A call runs five named steps, each a method: :meth:`prepare_inputs`, :meth:`encode_conditions` (text, P's image
tokens, VDG latents of every guidance branch), :meth:`prepare_latents`, :meth:`denoise` and :meth:`decode`. The
stages are public so they can be run and checked alone (:meth:`encode_prompt`, :meth:`encode_image`,
:meth:`encode_video`, :meth:`decode_latents`). Precomputed inputs (``prompt_embeds``, ``negative_prompt_embeds``,
``image_embeds``, ``image_latents``, ``latents``) skip their stage. Given ``latents`` and ``eta=0`` the run is
deterministic; seeded runs are bit-identical. Nothing in the model is changed by a call: the run-time controls
(lambda, the circular time axis) travel with the network calls, so two calls can run at once. LoRA adapters
(:meth:`load_lora`, :meth:`set_lora_scale`, :meth:`fuse_lora`, :meth:`unload_lora`; :mod:`dynamicrafter.lora`) are
different: they change the model in place, for every later call, so calls with different adapter scales cannot run
at the same time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from dynamicrafter.conditioning import Conditioning, build_conditioning, encode_image_tokens, encode_text, vdg_latents
from dynamicrafter.config import ModelConfig, resolve_config
from dynamicrafter.diffusion.denoiser import make_denoiser
from dynamicrafter.diffusion.guidance import Guidance
from dynamicrafter.diffusion.samplers import SAMPLERS
from dynamicrafter.diffusion.timesteps import sampling_timesteps
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.lora import LoadedAdapters
from dynamicrafter.media import as_image_list, image_input_to_tensor
from dynamicrafter.memory import Mode, Placement
from dynamicrafter.model import COMPONENTS, DynamiCrafter
from dynamicrafter.models.controls import UNetControls
from dynamicrafter.options import SamplingOptions
from dynamicrafter.utils import parse_dtype, randn, resolve_device, warn_half_on_cpu

ImageInput = Image.Image | str | os.PathLike | np.ndarray | torch.Tensor
OutputType = Literal["pil", "np", "pt", "latent"]
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
StepCallback = Callable[["DynamiCrafterPipeline", int, int, dict[str, torch.Tensor]], Any]
DenoiserWrapper = Callable[[Callable, Conditioning], Callable]
TOWERS = ("text_encoder", "image_encoder")  # the CLIP towers: used once per call, before denoising


@dataclass
class PipelineOutput:
    """``frames``: per video a list of PIL images ("pil"), or an array (b, t, h, w, 3) in [0, 1] ("np"), or a tensor
    (b, 3, t, h, w) in [-1, 1] ("pt"); for "latent" the final latents (b, 4, t, h/8, w/8)."""

    frames: Any
    latents: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class GenerationInputs:
    """The checked inputs of one call (step 1): prompts per video, conditioning pixels in [-1, 1]."""

    batch: int
    prompts: list[str]
    negative_prompts: list[str]
    pixels: torch.Tensor | None  # (b, 3, H, W): the image (context stream, VDG frame 0)
    end_pixels: torch.Tensor | None  # (b, 3, H, W): the last VDG frame (interpolation and loops), else None


@dataclass
class Precomputed:
    """Stages the caller already ran (each skips its step when given)."""

    prompt_embeds: torch.Tensor | None = None  # (b, 77, d)
    negative_prompt_embeds: torch.Tensor | None = None  # (b, 77, d)
    image_embeds: torch.Tensor | None = None  # (b, n_img, d), output of P
    image_latents: torch.Tensor | None = None  # (b, 4, t or 1, h, w) VDG latents


class DynamiCrafterPipeline:
    def __init__(self, model: DynamiCrafter, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.device = resolve_device(device) if device is not None else model.device
        self.dtype = dtype or model.dtype
        warn_half_on_cpu(self.device, self.dtype)
        for name in COMPONENTS:  # networks skipped when loading (meta tensors) stay as they are
            if not any(p.is_meta for p in model.component(name).parameters()):
                model.component(name).to(self.device, self.dtype)
        self.model = model.eval().requires_grad_(False)
        self.placement = Placement(self.model, self.device)  # where each network's weights live (memory.py)
        self.decode_chunk_size: int | None = None  # frames per VAE decoder call (None: the released batching)
        self.progress_bar_config: dict[str, Any] = {}
        self.checkpoint_path: Path | None = None  # the file the model was loaded from (set by from_checkpoint)
        self.encoder_paths: tuple[Path | None, Path | None] = (None, None)  # separate text / image tower files
        self.lora = LoadedAdapters(self.model)  # LoRA adapters in use (see load_lora)

    # -------------------------------------------------------------------------------------------------------------
    # Construction
    # -------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, config: str | Path | ModelConfig | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
                        text_encoder_path: str | os.PathLike | None = None,
                        image_encoder_path: str | os.PathLike | None = None,
                        low_memory: bool = False) -> DynamiCrafterPipeline:
        """Load a released checkpoint (.ckpt / .safetensors) or one of the project's own.

        ``config``: a preset name ("256", "512", "1024", "512_interp"), a released YAML file or a ModelConfig;
        detected from the tensors when None. ``device`` defaults to CUDA when available; ``dtype`` to fp32 on CPU
        and bf16 on CUDA. Without ``path`` the project's built-in small model is used (when installed). A folder is
        read as :meth:`from_pretrained` does. ``low_memory``: :meth:`enable_low_memory` (the CLIP towers are not even
        loaded until a call needs them; files only: a folder is loaded whole).
        """
        from dynamicrafter.pretrained import load_model_or_folder

        device = resolve_device(device)
        torch_dtype = parse_dtype(dtype, device)
        if path is None:
            from dynamicrafter.weights import default_checkpoint

            path = default_checkpoint()
        low_memory = low_memory and not Path(path).is_dir()  # a folder's parts are loaded whole
        model = load_model_or_folder(path, resolve_config(config) if config is not None else None,
                           text_encoder_path=text_encoder_path, image_encoder_path=image_encoder_path,
                           device=device, dtype=torch_dtype, skip=TOWERS if low_memory else ())
        pipe = cls(model, device, torch_dtype)
        pipe.checkpoint_path = Path(path)
        pipe.encoder_paths = tuple(Path(p) if p is not None else None  # type: ignore[assignment]
                                   for p in (text_encoder_path, image_encoder_path))
        if low_memory:
            pipe.enable_low_memory()
        return pipe

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: str | Path | ModelConfig | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
                        ) -> DynamiCrafterPipeline:
        """Load a diffusers-style folder (``dynamicrafter convert``) or a Hugging Face cache folder of a released
        repository (a snapshot holding ``model.ckpt``, or ``models--Doubiiu--…`` itself), offline."""
        if not Path(path).is_dir():
            raise UserError(f"from_pretrained reads a folder, '{path}' is not one (use from_checkpoint for files)")
        return cls.from_checkpoint(path, config=config, device=device, dtype=dtype)

    # -------------------------------------------------------------------------------------------------------------
    # Memory plans (memory.py): where the weights live while a call runs
    # -------------------------------------------------------------------------------------------------------------

    def enable_low_memory(self, decode_chunk_size: int | None = 2) -> None:
        """Lower the peak memory of a call (for CPU runs of the released models): the CLIP towers are loaded from the
        checkpoint file (memory-mapped) when a call encodes its prompts and image, and dropped right after, so they
        never sit beside the U-Net's activations; the VAE decodes ``decode_chunk_size`` frames at a time (models
        released with per-frame decoding keep one frame). Outputs are unchanged (see tests/test_memory.py)."""
        if self.checkpoint_path is None:
            raise UserError("low-memory mode reloads the CLIP towers from the checkpoint file: build the pipeline with "
                            "DynamiCrafterPipeline.from_checkpoint(...)")
        self.placement.reload = self._reload
        for name in TOWERS:
            self.placement.set(name, "released")
        self.decode_chunk_size = decode_chunk_size

    def enable_model_cpu_offload(self, device: torch.device | str | None = None) -> None:
        """Keep every network on the CPU and copy each to ``device`` (default: CUDA) only while it runs: the GPU
        holds one network at a time (the U-Net's weights at most)."""
        self._offload({name: "offload" for name in COMPONENTS}, device)

    def enable_sequential_cpu_offload(self, device: torch.device | str | None = None) -> None:
        """As :meth:`enable_model_cpu_offload`, but the U-Net and the VAE are copied block by block while each block
        runs (one U-Net layer's weights on the GPU at a time: for 6-8 GB cards; slower, every step copies all)."""
        self._offload({name: "blocks" if name in ("unet", "vae") else "offload" for name in COMPONENTS}, device)

    def enable_fp8_weights(self) -> None:
        """Store the U-Net's linear-layer weights in float8 (e4m3, one scale per output row; torchao) and compute in
        bf16: about half the U-Net's weight memory of bf16 (its convolutions keep bf16 weights)."""
        try:
            from torchao.quantization import Float8WeightOnlyConfig, quantize_
        except ImportError as e:
            raise UserError(f"fp8 weights need torchao ({_one_line(e)}): pip install torchao") from None
        if self.dtype != torch.bfloat16:
            dtype = str(self.dtype).removeprefix("torch.")
            raise UserError(f"fp8 weights compute in bf16 but the pipeline runs in {dtype}: load it with dtype='bf16'")
        with self.placement.use("unet"):
            quantize_(self.model.unet, Float8WeightOnlyConfig())

    def enable_compile(self, backend: str = "inductor", mode: str | None = None) -> None:
        """Run the U-Net through ``torch.compile`` (inductor fuses the norms, activations and other pointwise chains).
        The first call compiles: measured for the 256 U-Net on a 2-core CPU, 157 s for compiling plus one step, then
        0.874 of the eager step time (38.7 vs 44.3 s; outputs equal to 1.9e-6). It pays off over a whole 50-step
        generation, not for a few steps. Needs a C++ compiler on the CPU. New shapes, dtypes or devices recompile."""
        self.model.unet.compile(backend=backend, mode=mode)

    def _offload(self, modes: dict[str, Mode], device: torch.device | str | None) -> None:
        execution = resolve_device(device)
        self.device = self.placement.device = execution
        for name, mode in modes.items():
            if self.placement.modes[name] != "released":
                self.placement.set(name, mode)

    def _reload(self, names: list[str]) -> None:
        """Load released networks back from the checkpoint file (and the separate tower files)."""
        from dynamicrafter.checkpoint import load_components

        assert self.checkpoint_path is not None
        load_components(self.model, names, self.checkpoint_path, text_encoder_path=self.encoder_paths[0],
                        image_encoder_path=self.encoder_paths[1], device=self.device, dtype=self.dtype)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    # -------------------------------------------------------------------------------------------------------------
    # LoRA adapters: each call changes the model in place (for every later generation), unlike the per-call lambda
    # -------------------------------------------------------------------------------------------------------------

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0, name: str | None = None) -> str:
        """Add a LoRA adapter file (``dynamicrafter train --lora``) at ``scale``; returns its name (default: the file
        stem). An adapter for another model kind, or with layers this model lacks, is refused."""
        return self.lora.load(path, scale, name)

    def set_lora_scale(self, name: str, scale: float) -> None:
        """Change a loaded adapter's scale (0: no effect, the base model's output exactly)."""
        self.lora.set_scale(name, scale)

    def fuse_lora(self) -> None:
        """Add the loaded adapters into the weights (faster sampling; scales are then fixed until unload)."""
        self.lora.fuse()

    def unload_lora(self) -> None:
        """Remove every adapter: the model computes exactly what it did before the first load."""
        self.lora.unload()

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        self.progress_bar_config = kwargs

    # -------------------------------------------------------------------------------------------------------------
    # Stages
    # -------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> text tokens (b, 77, d)."""
        with self.placement.use("text_encoder"):
            return encode_text(self.model, prompts)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (b, 3, H, W) in [-1, 1] -> context tokens of P (b, n_img, d)."""
        with self.placement.use("image_encoder", "image_proj"):
            return encode_image_tokens(self.model, images.to(self.device, self.dtype))

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True,
                     chunk_size: int | None = None) -> torch.Tensor:
        """Frames (b, 3, t, H, W) in [-1, 1] -> scaled VAE latents (b, 4, t, H/8, W/8).

        ``sample=True`` draws from the posterior with ``generator`` (as released); False uses its mean.
        """
        with self.placement.use("vae"):
            return self.model.vae.encode(video.to(self.device, self.dtype), generator, sample, chunk_size).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Latents (b, 4, t, h, w) -> frames (b, 3, t, 8h, 8w) in [-1, 1] (clamped)."""
        with self.placement.use("vae"):
            video = self.model.vae.decode(latents.to(self.device, self.dtype), chunk_size)
        return video.float().clamp(-1.0, 1.0)

    def preprocess_image(self, image: ImageInput, height: int, width: int, resize_mode: str = "released"
                         ) -> torch.Tensor:
        """A path, PIL image, array (H, W, 3) or tensor (3, H, W) -> (3, height, width) in [-1, 1] (resize + center
        crop, as released)."""
        return image_input_to_tensor(image, height, width, resize_mode)

    # -------------------------------------------------------------------------------------------------------------
    # Generation
    # -------------------------------------------------------------------------------------------------------------

    def resolve_options(self, options: SamplingOptions | None = None, **overrides: Any) -> SamplingOptions:
        """``options`` (default: all unset) with the keyword ``overrides``, every unset value filled with the loaded
        model's released setting and checked against the model."""
        options = options or SamplingOptions()
        options = options.replace(**overrides).resolved(self.config) if overrides else options.resolved(self.config)
        _controls(options).check_layers([name for name, _ in self.model.unet.image_attention_layers()])
        return options

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput] | None = None,
        prompt: str | list[str] | None = None,
        options: SamplingOptions | None = None,
        *,
        negative_prompt: str | list[str] | None = None,
        end_image: ImageInput | Sequence[ImageInput] | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "pil",
        decode_chunk_size: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        image_latents: torch.Tensor | None = None,
        sample_posterior: bool = True,
        denoiser_wrapper: DenoiserWrapper | None = None,
        **overrides: Any,
    ) -> PipelineOutput:
        """Animate ``image`` following ``prompt``.

        ``options`` (:class:`~dynamicrafter.options.SamplingOptions`) and the keyword ``overrides`` (its field names:
        ``num_inference_steps``, ``guidance_scale``, ``num_frames``, ``image_attention_scale``, ``loop`` ...) set the
        sampling; unset values take the released settings of the loaded model. ``end_image`` (or an interpolation
        model with ``image`` given twice) puts the first and last frame latents in the VDG input with zeros between:
        generative frame interpolation. A loop (``loop=True``) returns ``num_frames`` frames for the ring method,
        ``num_frames - 1`` distinct ones for a closed loop and ``num_frames`` with the closing frame for an open one.
        ``denoiser_wrapper(denoise, conditioning)`` may wrap the guided denoiser ``denoise(z, t)``.
        """
        timings: dict[str, float] = {}
        # 1. Options and inputs
        opts = self.resolve_options(options, **overrides)
        if output_type not in OUTPUT_TYPES:
            raise UserError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if generator is None and opts.seed is not None:
            generator = torch.Generator().manual_seed(opts.seed)
        pre = Precomputed(prompt_embeds, negative_prompt_embeds, image_embeds, image_latents)
        with _timed(timings, "encode_conditions"):
            inputs = self.prepare_inputs(image, prompt, negative_prompt, end_image, opts, pre)
            # 2. Conditions of every guidance branch (text, P's image tokens, VDG latents)
            cond = self.encode_conditions(inputs, opts, pre, generator, sample_posterior, timings)
        # 3. Initial noise, 4. denoising
        latents = self.prepare_latents(inputs.batch, opts, generator, latents)
        with _timed(timings, "denoise"):
            latents = self.denoise(latents, cond, opts, generator, callback_on_step_end, denoiser_wrapper)
        # 5. Decode
        if output_type == "latent":
            return PipelineOutput(frames=latents, latents=latents, timings=timings)
        with _timed(timings, "decode"):
            video = self.decode(latents, decode_chunk_size)  # (b, 3, t, H, W) in [-1, 1]
        return PipelineOutput(frames=self.postprocess(video, output_type), latents=latents, timings=timings)

    def prepare_inputs(self, image: Any, prompt: Any, negative_prompt: Any, end_image: Any,
                       opts: SamplingOptions, pre: Precomputed) -> GenerationInputs:
        """Step 1: prompts and images as lists of one batch, the images resized and cropped to the output size."""
        prompts = _text_list(prompt, "prompt")
        images = as_image_list(image, "image") if image is not None else None
        batch = _batch_size(prompts, images, pre.prompt_embeds, pre.image_embeds, pre.image_latents)
        prompts = prompts * batch if len(prompts) == 1 else prompts
        negatives = _text_list(negative_prompt, "negative_prompt")
        negatives = negatives * batch if len(negatives) == 1 else negatives
        if len(prompts) != batch or len(negatives) != batch:
            raise UserError(f"got {len(prompts)} prompts and {len(negatives)} negative prompts for a batch of {batch}")
        if opts.loop and opts.loop_method != "ring":
            if end_image is not None:
                raise UserError("a closed or open loop ends on its own image: do not pass end_image")
            end_image = image
        interp = end_image is not None or self.config.interp_mode
        pixels = self._pixels(images, batch, opts)
        end_pixels = None
        if interp and pre.image_latents is None:
            ends = as_image_list(end_image, "end_image") if end_image is not None else images
            if ends is None:
                raise UserError("interpolation needs a start and an end image (image=..., end_image=...)")
            end_pixels = self._pixels(ends, batch, opts)
        return GenerationInputs(batch, prompts, negatives, pixels, end_pixels)

    def encode_conditions(self, inputs: GenerationInputs, opts: SamplingOptions, pre: Precomputed,
                          generator: torch.Generator | None, sample_posterior: bool = True,
                          timings: dict[str, float] | None = None) -> Conditioning:
        """Step 2: the conditioning of every guidance branch, stacked [cond; uncond; (uncond text + image)]: text
        tokens ("" or the negative prompt when unconditional), P's tokens of the image (of an all-zeros image when
        unconditional), the VDG latents (the same in every branch) and fs."""
        guidance = _guidance(opts)
        with self.placement.use(*TOWERS, lazy=True):  # a tower loaded for this step serves all its encodings
            text, negative_text = self._text_embeds(inputs, pre, guidance.num_branches > 1)
            image_tokens, null_tokens = self._image_embeds(inputs, opts, pre, guidance.num_branches > 1)
        with _timed(timings if timings is not None else {}, "encode_vdg"):
            concat = self._vdg_input(inputs, opts, pre, generator, sample_posterior)
        fs = torch.full((inputs.batch,), int(opts.frame_stride), dtype=torch.long,  # type: ignore[arg-type]
                        device=self.device)
        branches = [build_conditioning(self.model, fs=fs, text_embeds=text, image_embeds=image_tokens, concat=concat)]
        if guidance.num_branches > 1:
            assert negative_text is not None and null_tokens is not None
            branches.append(build_conditioning(self.model, fs=fs, text_embeds=negative_text, image_embeds=null_tokens,
                                               concat=concat))
        if guidance.num_branches > 2:
            branches.append(build_conditioning(self.model, fs=fs, text_embeds=negative_text, image_embeds=image_tokens,
                                               concat=concat))
        return Conditioning.cat(branches)

    def prepare_latents(self, batch: int, opts: SamplingOptions, generator: torch.Generator | None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Step 3: the initial noise z_T (float32; a closed loop keeps only its ``num_frames - 1`` distinct frames)."""
        frames = int(opts.num_frames) - (1 if opts.loop and opts.loop_method == "closed" else 0)  # type: ignore
        down = self.model.vae.downscale
        shape = (batch, self.config.unet.out_channels, frames, int(opts.height) // down,  # type: ignore[arg-type]
                 int(opts.width) // down)  # type: ignore[arg-type]
        if latents is None:
            return randn(shape, generator, self.device, torch.float32)
        if tuple(latents.shape) != shape:
            raise UserError(f"latents has shape {tuple(latents.shape)}, expected {shape}")
        return latents.to(self.device, torch.float32)

    def denoise(self, latents: torch.Tensor, cond: Conditioning, opts: SamplingOptions,
                generator: torch.Generator | None = None, callback_on_step_end: StepCallback | None = None,
                denoiser_wrapper: DenoiserWrapper | None = None) -> torch.Tensor:
        """Step 4: the sampler over the guided denoiser (all guidance branches in one network batch)."""
        loop = opts.loop_method if opts.loop and opts.loop_method != "open" else None
        frames, length = int(opts.num_frames), self.config.unet.temporal_length  # type: ignore[arg-type]
        denoise = make_denoiser(self._network(opts), context=cond.context, concat=cond.concat, fs=cond.fs,
                                guidance=_guidance(opts), num_frames=frames, temporal_length=length,
                                windows=opts.temporal_windows, loop=loop)
        if denoiser_wrapper is not None:
            denoise = denoiser_wrapper(denoise, cond)
        timesteps = sampling_timesteps(int(opts.num_inference_steps), str(opts.timestep_spacing),  # type: ignore
                                   self.model.schedule.num_timesteps)
        desc = "denoising"
        if opts.temporal_windows is not None:
            desc += f" ({len(opts.temporal_windows.windows(frames, length, loop == 'ring'))} windows)"
        with tqdm(total=len(timesteps), desc=desc, **self.progress_bar_config) as bar:

            def on_step(i: int, t: int, z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor | None:
                bar.update(1)
                if callback_on_step_end is None:
                    return None
                result = callback_on_step_end(self, i, t, {"latents": z, "pred_x0": z0})
                return result["latents"] if isinstance(result, dict) and "latents" in result else None

            sampler = SAMPLERS[str(opts.sampler)]
            with self.placement.use("unet"):
                return sampler(denoise, latents, self.model.schedule, timesteps, opts.eta, generator, on_step)

    def _network(self, opts: SamplingOptions) -> Callable[..., torch.Tensor]:
        """The U-Net in the pipeline's dtype with this call's controls (lambda per layer; the circular time axis
        when the denoiser asks for it); float32 out."""
        plain = _controls(opts)
        circular = _controls(opts, circular=True)
        unet, dtype = self.model.unet, self.dtype

        def network(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, fs: torch.Tensor,
                    on_circle: bool) -> torch.Tensor:
            return unet(x.to(dtype), t, context, fs, controls=circular if on_circle else plain).float()

        return network

    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Step 5: latents -> frames (b, 3, t, H, W) in [-1, 1] on the CPU (one frame at a time for models
        released with ``perframe_ae``, else ``decode_chunk_size`` frames: all at once by default)."""
        chunk = chunk_size or (1 if self.config.defaults.perframe_ae else self.decode_chunk_size)
        return self.decode_latents(latents, chunk).cpu()

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

    # -------------------------------------------------------------------------------------------------------------
    # Helpers of the steps
    # -------------------------------------------------------------------------------------------------------------

    def _pixels(self, images: list | None, batch: int, opts: SamplingOptions) -> torch.Tensor | None:
        """Images -> (batch, 3, H, W) in [-1, 1] (one image serves the whole batch)."""
        if images is None:
            return None
        pixels = torch.stack([self.preprocess_image(im, int(opts.height), int(opts.width),  # type: ignore[arg-type]
                                                    opts.resize_mode) for im in images])
        return pixels.expand(batch, -1, -1, -1) if pixels.shape[0] == 1 else pixels

    def _text_embeds(self, inputs: GenerationInputs, pre: Precomputed, guided: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text tokens of the prompts and, with guidance, of the negative prompts (one encoder call for both)."""
        text, negative = pre.prompt_embeds, pre.negative_prompt_embeds if guided else None
        wanted = (inputs.prompts if text is None else []) + (inputs.negative_prompts if guided and negative is None
                                                             else [])
        if wanted:
            encoded = self.encode_prompt(wanted)  # (k, 77, d)
            if text is None:
                text, encoded = encoded[: inputs.batch], encoded[inputs.batch :]
            if guided and negative is None:
                negative = encoded
        assert text is not None
        return text.to(self.device, self.dtype), None if negative is None else negative.to(self.device, self.dtype)

    def _image_embeds(self, inputs: GenerationInputs, opts: SamplingOptions, pre: Precomputed, guided: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """P's tokens of the image and, with guidance, of an all-zeros image (the unconditional branch)."""
        tokens = pre.image_embeds
        if tokens is None:
            if inputs.pixels is None:
                raise UserError("give an image (or precomputed image_embeds)")
            tokens = self.encode_image(inputs.pixels)
        null = None
        if guided:
            zeros = torch.zeros(1, 3, int(opts.height), int(opts.width))  # type: ignore[arg-type]
            null = self.encode_image(zeros).expand(inputs.batch, -1, -1)  # (b, n_img, d)
        return tokens.to(self.device, self.dtype), null

    def _vdg_input(self, inputs: GenerationInputs, opts: SamplingOptions, pre: Precomputed,
                   generator: torch.Generator | None, sample_posterior: bool) -> torch.Tensor | None:
        """The VDG latents (b, 4, t, h, w): the image's posterior sample repeated over t, or first and last frame
        with zeros between (interpolation, closed and open loops); zeros with ``vdg=False``; None for a U-Net
        without VDG input."""
        frames = int(opts.num_frames)  # type: ignore[arg-type]
        latents = pre.image_latents
        if latents is None:
            if inputs.pixels is None:
                raise UserError("give an image (or precomputed image_latents)")
            interp = inputs.end_pixels is not None
            pixels = torch.stack([inputs.pixels, inputs.end_pixels], dim=2) if interp else inputs.pixels[:, :, None]
            latents = vdg_latents(self.encode_video(pixels, generator, sample_posterior), frames, interp)
        latents = latents.to(self.device, torch.float32)
        if latents.shape[2] == 1:
            latents = vdg_latents(latents, frames)
        down = self.model.vae.downscale
        expected = (inputs.batch, self.config.vae.latent_channels, frames, int(opts.height) // down,  # type: ignore
                    int(opts.width) // down)  # type: ignore[arg-type]
        if tuple(latents.shape) != expected:
            raise UserError(f"image_latents has shape {tuple(latents.shape)}, expected {expected}")
        if self.config.unet.in_channels == self.config.unet.out_channels:
            return None
        return latents if opts.vdg else torch.zeros_like(latents)


def _controls(opts: SamplingOptions, circular: bool = False) -> UNetControls:
    """The U-Net controls of the options: lambda's factor (0 with the context stream off) and the time axis."""
    return UNetControls(opts.image_attention_scale if opts.context_stream else 0.0, circular)


def _guidance(opts: SamplingOptions) -> Guidance:
    return Guidance(float(opts.guidance_scale), opts.image_guidance_scale, float(opts.guidance_rescale))  # type: ignore


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds spent in the block to ``timings[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def _text_list(value: Any, name: str) -> list[str]:
    """A prompt (or None = "") or a non-empty list of prompts -> list of str; anything else refused in one line."""
    if value is None:
        return [""]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise UserError(f"{name} is an empty list")
    for item in items:
        if not isinstance(item, str):
            raise UserError(f"{name} must be a string or a list of strings, got {type(item).__name__} {item!r}")
    return items


def _batch_size(prompts: list, images: list | None, *precomputed: torch.Tensor | None) -> int:
    sizes = {len(prompts)} - {1}
    if images is not None:
        sizes |= {len(images)} - {1}
    sizes |= {t.shape[0] for t in precomputed if t is not None} - {1}
    if len(sizes) > 1:
        raise UserError(f"inconsistent batch sizes between prompts, images and precomputed inputs: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


__all__ = ["ConfigError", "DynamiCrafterPipeline", "GenerationInputs", "PipelineOutput", "Precomputed"]
