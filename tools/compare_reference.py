#!/usr/bin/env python
"""Numerical parity of ``dynamicrafter`` with the released DynamiCrafter research code.

The tool builds small random-weight models with the released architecture (reduced widths, see
:func:`parity_config`) twice: once with the ORIGINAL modules (imported from ``--original PATH``, a checkout of
https://github.com/Doubiiu/DynamiCrafter; nothing of it is copied here) and once with this project, whose weights are
loaded from the original model's ``state_dict`` (written under the released tensor names and read back through
``dynamicrafter.checkpoint.load_model``). It then compares, per check, the maximum absolute error and the relative
error ``max|ours - original| / max|original|``:

  unet_*       U-Net forward (256 style with learnable alpha gates / 512 style), both context layouts
  resampler    the query transformer P
  vae_*        VAE encode (posterior mean, sample with fixed noise) and decode (per frame and batched)
  text         CLIP text tower from real prompts (penultimate layer + ln_final), tokenizer ids vs open_clip
  image_*      CLIP image tower incl. the kornia resize (224x224, 256x256, 320x512, 576x1024)
  ddim_*       DDIM + classifier-free guidance (original DDIMSampler / ddim_multiplecond vs our pipeline)
  e2e_*        the released ``image_guided_synthesis`` (scripts/evaluation/inference.py) vs our pipeline from a
               prompt and an image (text, CLIP image, P, VAE posterior, sampling, decoding)

With ``--write-golden DIR`` it also writes the golden fixtures used by ``tests/test_reference_parity.py`` (original
weights under the released names, inputs, and the original's outputs) so that CI checks parity without the
original code.

Reference environment (separate from the project's venv; the original code needs packages that the project does
not, and torchvision cannot be installed beside the local torch build)::

    python3 -m venv /tmp/refenv && . /tmp/refenv/bin/activate
    pip install torch==2.13.0                      # the local CPU wheel (same build as the project's venv)
    pip install einops omegaconf "pytorch_lightning>=2,<3" kornia ftfy regex huggingface_hub transformers \\
        numpy tqdm safetensors opencv-python-headless diffusers pillow scipy pyyaml
    pip install --no-deps open_clip_torch==2.22.0  # the version pinned by the original requirements.txt
    # a checkout of the original code OUTSIDE this repository, e.g. from a bare mirror:
    git -C MIRROR ls-tree -r --name-only HEAD | grep -E '\\.(py|yaml)$' | while read f; do
        mkdir -p /tmp/dc_orig/$(dirname $f); git -C MIRROR show HEAD:$f > /tmp/dc_orig/$f; done
    git -C MIRROR rev-parse HEAD > /tmp/dc_orig/.git_commit   # optional: recorded in the fixtures' manifest
    python tools/compare_reference.py --original /tmp/dc_orig [--write-golden tests/data/golden] [--quick]

open_clip must be older than 2.26: from 2.26 its transformer is batch-first and the original text/image code, which
permutes to sequence-first itself, would compute something else (2.22.0 is the pinned version, 2.24.0 is still
sequence-first). kornia 0.7.0 (the release's era) and 0.9.0 give
bit-identical resizes. torchvision is replaced by an import-only stub package that :func:`write_torchvision_stub`
writes to a temporary folder (``--stub-dir`` to choose it) and puts on ``sys.path``: the original modules and
open_clip import ``torchvision.utils.make_grid``, ``torchvision.transforms`` (classes, ``InterpolationMode``,
``functional``) and ``torchvision.ops.misc`` at import time, and torchmetrics (via pytorch_lightning) imports
``torchvision.models``; every stub name raises when used, so none of it can enter a compared code path.
Run-time patches (in this process only): ``DDIMSampler.register_buffer`` keeps tensors on the CPU (the original
moves them to CUDA), ``open_clip.create_model_and_transforms`` returns a small OpenCLIP ``CLIP`` with the ViT-H/14
layout instead of downloading ViT-H/14, and where noise must be shared the original's ``noise_like`` and the VAE
posterior's noise draw use pre-seeded ``torch.Generator`` objects. xformers is absent: the original uses its
einsum attention. This project itself is imported from ``--src`` (default: ``src/`` beside this tool).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

T = 4  # frames of the small models (the released models use 16)
LATENT = 16  # latent height = width of the U-Net checks
SAMPLE_LATENT = 8  # latent height = width of the sampling checks
WIDTH = 12  # CLIP text width = U-Net context_dim = P output width
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "scale_arr",
)
PROMPTS = ["a brown bear is walking in a zoo enclosure, some rocks around", "",
           "Time-lapse of a rocky coastline at sunset, waves crashing, clouds drifting, golden light, " * 3]

# ~50 strings for the tokenizer: unicode, punctuation, numbers, html entities, contractions, long text.
TOKENIZER_STRINGS = [
    "", " ", "a", "A cat.", "a brown bear is walking in a zoo enclosure, some rocks around",
    "Hello, World!!!", "it's, don't, we'll, they've, I'm, you're, he'd", "IT'S DON'T WE'LL",
    "3.14159 and 42 and 1,000,000", "2024-01-15T12:30:00Z", "phone: +1 (555) 012-3456", "e-mail: someone@example.com",
    "https://example.com/a?b=c&d=e#f", "&amp; &lt;tag&gt; &quot;quoted&quot; &#39;apos&#39; &amp;amp;",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u4e2d\u6587\u6d4b\u8bd5\u53e5\u5b50", "\ud55c\uad6d\uc5b4 \ubb38\uc7a5",
    "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "emoji \U0001f600\U0001f680\U0001f44d\U0001f3fd and \u2764\ufe0f", "tabs\tand\nnewlines\r\n  and   spaces   ",
    "   leading and trailing   ", "MiXeD CaSe WoRdS", "snake_case_words and camelCaseWords", "hyphen-ated words-here",
    "quotes \u201csmart\u201d \u2018single\u2019 and \"plain\"", "math: x^2 + y^2 = z^2; a/b*c",
    "$100 \u20ac50 \u00a330 \u00a5",
    "ellipsis... and \u2026 and --- dashes \u2014 \u2013", "<start_of_text> literal <end_of_text>", "####$$$$%%%%",
    "a" * 300, "word " * 100, "repeated repeated repeated", "mojibake: caf\u00c3\u00a9 \u00e2\u0080\u0099",
    "full\uff37\uff49\uff44\uff54\uff48 \uff11\uff12\uff13", "combining e\u0301 a\u0300", "zero\u200bwidth\u200djoiner",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000", "C++ and C# and .NET", "don\u2019t stop (smart apostrophe)",
    "A photo of a dog, 4k, ultra-detailed, trending on artstation",
    "man fishing in a boat at sunset", "a girl with long hair, wind blowing, cinematic lighting, slow motion",
    "Dragon flying over a medieval castle! Fire breathing, epic scene; 8K.",
    "html <b>bold</b> <i>italic</i> &nbsp;text",
    "\u00bfQu\u00e9 tal? \u00a1Muy bien!", "Stra\u00dfe GROSS \u00df \u1e9e", "\u0130stanbul \u0131 i\u0307",
    " ".join(f"token{i}" for i in range(120)),
]


# ----------------------------------------------------------------------------------------------------------------
# Reference environment
# ----------------------------------------------------------------------------------------------------------------


def write_torchvision_stub(dest: str | os.PathLike) -> str:
    """Write an import-only ``torchvision`` package under ``dest`` and return ``dest`` (to put on ``sys.path``).

    Provides what the original modules, open_clip 2.x and torchmetrics import at import time; everything raises
    NotImplementedError when used. Submodules that are not written (e.g. ``torchvision.models``) are created on
    import with placeholder attributes.
    """
    files = {
        "__init__.py": '''
            """Import-only stand-in for torchvision (the reference environment cannot install the real one)."""
            import importlib.abc
            import importlib.machinery
            import sys
            import types

            __version__ = "0.0.0+stub"


            class _Unavailable:
                def __init__(self, *args, **kwargs):
                    raise NotImplementedError(f"torchvision stub: {type(self).__name__} is not available")


            def _placeholders(module_name):
                def __getattr__(name):
                    if name.startswith("__"):
                        raise AttributeError(name)
                    return type(name, (_Unavailable,), {"__module__": module_name})
                return __getattr__


            class _AutoModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
                """torchvision.* submodules without a stub file are made on import, with placeholder attributes."""

                def find_spec(self, fullname, path=None, target=None):
                    if fullname.startswith(__name__ + "."):
                        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
                    return None

                def create_module(self, spec):
                    module = types.ModuleType(spec.name)
                    module.__path__ = []
                    module.__getattr__ = _placeholders(spec.name)
                    return module

                def exec_module(self, module):
                    pass


            sys.meta_path.append(_AutoModules())  # after the path finders: stub files below take precedence
            from . import io, ops, transforms, utils  # noqa: E402,F401
            ''',
        "utils.py": '''
            def make_grid(*args, **kwargs):
                raise NotImplementedError("torchvision stub: utils.make_grid is not available")


            def save_image(*args, **kwargs):
                raise NotImplementedError("torchvision stub: utils.save_image is not available")
            ''',
        "io.py": '''
            def write_video(*args, **kwargs):
                raise NotImplementedError("torchvision stub: io.write_video is not available")
            ''',
        "ops/__init__.py": "from . import misc  # noqa: F401\n",
        "ops/misc.py": '''
            import torch


            class FrozenBatchNorm2d(torch.nn.Module):
                def __init__(self, *args, **kwargs):
                    raise NotImplementedError("torchvision stub: ops.misc.FrozenBatchNorm2d is not available")
            ''',
        "transforms/__init__.py": '''
            import enum

            from . import functional  # noqa: F401


            class InterpolationMode(enum.Enum):
                NEAREST = "nearest"
                NEAREST_EXACT = "nearest-exact"
                BILINEAR = "bilinear"
                BICUBIC = "bicubic"
                BOX = "box"
                HAMMING = "hamming"
                LANCZOS = "lanczos"


            class _Transform:
                """Constructible (open_clip subclasses some of these); calling it raises."""

                def __init__(self, *args, **kwargs):
                    self.args, self.kwargs = args, kwargs

                def __call__(self, *args, **kwargs):
                    raise NotImplementedError(f"torchvision stub: transforms.{type(self).__name__} is not available")


            class Compose(_Transform): pass
            class Normalize(_Transform): pass
            class Resize(_Transform): pass
            class CenterCrop(_Transform): pass
            class RandomResizedCrop(_Transform): pass
            class RandomCrop(_Transform): pass
            class RandomHorizontalFlip(_Transform): pass
            class ToTensor(_Transform): pass
            class ToPILImage(_Transform): pass
            class ColorJitter(_Transform): pass
            class Grayscale(_Transform): pass
            class RandomGrayscale(_Transform): pass
            class Lambda(_Transform): pass
            ''',
        "transforms/functional.py": '''
            def __getattr__(name):
                if name.startswith("__"):
                    raise AttributeError(name)

                def unavailable(*args, **kwargs):
                    raise NotImplementedError(f"torchvision stub: transforms.functional.{name} is not available")

                return unavailable
            ''',
    }
    root = Path(dest) / "torchvision"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return str(dest)


class Reference:
    """The original modules, imported from a checkout, with the run-time patches described in the docstring."""

    def __init__(self, original: Path, stub_dir: str):
        for path in (str(original), stub_dir):
            if path not in sys.path:
                sys.path.insert(0, path)
        import logging

        logging.getLogger("mainlogger").setLevel(logging.WARNING)
        self.path = original
        self.open_clip = importlib.import_module("open_clip")
        self.utils = importlib.import_module("utils.utils")
        self.ddpm3d = importlib.import_module("lvdm.models.ddpm3d")
        self.distributions = importlib.import_module("lvdm.distributions")
        self.ddim = importlib.import_module("lvdm.models.samplers.ddim")
        self.ddim_multicond = importlib.import_module("lvdm.models.samplers.ddim_multiplecond")
        spec = importlib.util.spec_from_file_location("dc_reference_inference",
                                                      original / "scripts" / "evaluation" / "inference.py")
        self.inference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.inference)
        self.version = importlib.metadata.version("open_clip_torch")
        if tuple(map(int, self.version.split(".")[:2])) >= (2, 26):
            raise SystemExit(f"open_clip_torch {self.version} is batch-first; install open_clip_torch==2.22.0")

        def register_buffer(sampler, name, attr):  # the original moves every tensor to CUDA
            setattr(sampler, name, attr)

        self.ddim.DDIMSampler.register_buffer = register_buffer
        self.ddim_multicond.DDIMSampler.register_buffer = register_buffer
        self.open_clip.create_model_and_transforms = self._small_clip
        self._clip_config: dict | None = None
        # Generators used where noise must be shared with our side (None: the original's own global-RNG draws).
        self.posterior_generator: torch.Generator | None = None
        self.step_generator: torch.Generator | None = None
        self.posterior_mean = False  # VAE encoding returns the posterior mean (our sample_posterior=False)
        self._patch_noise()

    def _small_clip(self, arch, device=None, pretrained=None, **kwargs):
        """Stand-in for open_clip.create_model_and_transforms('ViT-H-14', pretrained=...): a small CLIP."""
        assert self._clip_config is not None
        model = self.open_clip.model.CLIP(**copy.deepcopy(self._clip_config))
        return model, None, None

    def _patch_noise(self) -> None:
        ref = self
        original_sample = self.distributions.DiagonalGaussianDistribution.sample

        def sample(dist, noise=None):
            if noise is None and ref.posterior_mean:
                noise = torch.zeros_like(dist.mean)
            elif noise is None and ref.posterior_generator is not None:
                noise = torch.randn(dist.mean.shape, generator=ref.posterior_generator)
            return original_sample(dist, noise)

        self.distributions.DiagonalGaussianDistribution.sample = sample
        original_noise_like = self.ddim.noise_like

        def noise_like(shape, device, repeat=False):
            if ref.step_generator is not None and not repeat:
                return torch.randn(shape, generator=ref.step_generator).to(device)
            return original_noise_like(shape, device, repeat)

        self.ddim.noise_like = noise_like
        self.ddim_multicond.noise_like = noise_like

    @contextlib.contextmanager
    def shared_noise(self, seed: int, skip: tuple[int, ...] | None = None, posterior_mean: bool = False):
        """Draw the VAE posterior noise and the DDIM step noise as our pipeline does with
        ``torch.Generator().manual_seed(seed)``: the posterior first (``skip`` = shape of our posterior draw, after
        which the step noise continues), then one draw per step. ``posterior_mean``: no posterior noise at all."""
        self.posterior_mean = posterior_mean
        self.posterior_generator = torch.Generator().manual_seed(seed)
        self.step_generator = torch.Generator().manual_seed(seed)
        if skip is not None:
            torch.randn(skip, generator=self.step_generator)
        try:
            yield
        finally:
            self.posterior_generator = self.step_generator = None
            self.posterior_mean = False

    # -- models ----------------------------------------------------------------------------------------------------

    def model_config(self, style: str):
        """The released inference YAML for the style, at the reduced widths of :func:`parity_config`."""
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(self.path / "configs" / f"inference_{style}_v1.0.yaml")
        p = cfg.model.params
        p.unet_config.params.update(model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                                    attention_resolutions=[1], num_head_channels=8, context_dim=WIDTH,
                                    temporal_length=T, use_checkpoint=False)
        p.first_stage_config.params.ddconfig.update(ch=32, ch_mult=[1, 2], num_res_blocks=1)
        p.cond_stage_config.params.device = "cpu"
        p.img_cond_stage_config.params.device = "cpu"
        p.image_proj_stage_config.params.update(dim=32, depth=2, dim_head=16, heads=2, num_queries=16,
                                                embedding_dim=48, output_dim=WIDTH, ff_mult=2, video_length=T)
        return cfg

    def build(self, style: str):
        """An original LatentVisualDiffusion of the style, small, in eval mode (weights as initialized)."""
        self._clip_config = dict(
            embed_dim=WIDTH,
            vision_cfg=dict(image_size=224, layers=2, width=48, head_width=24, patch_size=14),
            text_cfg=dict(context_length=77, vocab_size=49408, width=WIDTH, heads=2, layers=3),
        )
        cfg = self.model_config(style)
        torch.manual_seed(0)
        model = self.utils.instantiate_from_config(cfg.model)
        model.perframe_ae = bool(cfg.model.params.get("perframe_ae", False))
        return model.eval().requires_grad_(False)


@torch.no_grad()
def randomize_reference(model: torch.nn.Module, seed: int) -> None:
    """Random weights for every parameter of the original model (its init zeroes many output layers), rounded to
    fp16-representable values so that the fixtures can store them in fp16 without changing them.

    Norm weights near 1, biases small, matrices ~ 1/sqrt(fan_in), embeddings O(0.5), the learnable gates alpha
    spread over [-1.5, 1.5] (so that tanh(alpha) + 1 varies between layers).
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith(".alpha"):
            value = 3.0 * torch.rand(p.shape, generator=gen) - 1.5
        elif "embedding" in name or name.endswith("latents"):
            value = 0.5 * noise
        elif p.ndim == 1 and name.endswith("weight"):
            value = 1.0 + 0.1 * noise
        elif p.ndim <= 1:
            value = 0.05 * noise
        else:
            value = noise / p[0].numel() ** 0.5
        p.copy_(value.half().float())


def official_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The original model's tensors under their own names (= the released checkpoint names), without the schedule
    buffers (derived from the config; a released file carries them, a pruned repack may not)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k not in SCHEDULE_BUFFERS}


# ----------------------------------------------------------------------------------------------------------------
# Our side
# ----------------------------------------------------------------------------------------------------------------


def parity_config(style: str):
    """Our ModelConfig mirroring :meth:`Reference.model_config` (the original hard-codes 32 GroupNorm groups,
    8 heads in ``init_attn``, 77 text tokens and 16 image tokens per frame, and resizes to 224 for CLIP)."""
    from dynamicrafter.config import (
        CLIPTextConfig,
        CLIPVisionConfig,
        InferenceDefaults,
        ModelConfig,
        ResamplerConfig,
        ScheduleConfig,
        UNetConfig,
        VAEConfig,
    )

    v = style == "512"
    return ModelConfig(
        name=f"parity_{style}",
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1,),
                        num_head_channels=8, context_dim=WIDTH, dropout=0.1, temporal_length=T, init_attn_heads=8,
                        image_cross_attention_scale_learnable=not v, default_fs=24 if v else 3,
                        image_tokens_per_frame=16, norm_groups=32),
        resampler=ResamplerConfig(dim=32, depth=2, dim_head=16, heads=2, num_queries=16, embedding_dim=48,
                                  output_dim=WIDTH, ff_mult=2, video_length=T),
        vae=VAEConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, norm_groups=32),
        text_encoder=CLIPTextConfig(width=WIDTH, layers=3, layers_used=2, heads=2),
        image_encoder=CLIPVisionConfig(image_size=224, patch_size=14, width=48, layers=2, heads=2),
        schedule=ScheduleConfig(parameterization="v", rescale_betas_zero_snr=True, use_dynamic_rescale=True,
                                base_scale=0.7) if v else ScheduleConfig(),
        defaults=InferenceDefaults(
            height=2 * LATENT, width=2 * LATENT, num_frames=T, num_inference_steps=5, frame_stride=24 if v else 3,
            frame_stride_range=(15, 30) if v else (1, 6), timestep_spacing="uniform_trailing" if v else "uniform",
            guidance_rescale=0.7 if v else 0.0, perframe_ae=v),
        fs_condition_type="fps" if v else "fs",
    )


def load_ours(state: dict[str, torch.Tensor], style: str, folder: str):
    """Write the original state (fp16, as in the fixtures) and load it through the public loading path."""
    from safetensors.torch import save_file

    from dynamicrafter.checkpoint import load_model

    path = Path(folder) / f"reference_{style}.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
    return load_model(path, parity_config(style))


# ----------------------------------------------------------------------------------------------------------------
# Inputs (deterministic; images are made with integer arithmetic so that the fixtures can store them as uint8)
# ----------------------------------------------------------------------------------------------------------------


def synthetic_blocks(height: int, width: int, seed: int, batch: int = 1) -> torch.Tensor:
    """Random uint8 values of 8x8 pixel blocks, (batch, 3, ceil(height / 8), ceil(width / 8))."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, -(-height // 8), -(-width // 8)), generator=gen).to(torch.uint8)


def blocks_to_image(blocks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(batch, 3, height, width) in [-1, 1]: the 8x8 blocks plus a fine integer pattern (high frequencies for the
    antialiasing), quantized to 8 bits. Integer arithmetic only, so the fixtures store just the blocks;
    tests/test_reference_parity.py repeats this recipe (and checks a checksum)."""
    coarse = blocks.long().repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)[:, :, :height, :width]
    yy = torch.arange(height).view(1, 1, -1, 1)
    xx = torch.arange(width).view(1, 1, 1, -1)
    cc = torch.arange(3).view(1, -1, 1, 1)
    fine = (yy * 37 + xx * 91 + cc * 53 + (yy * xx) % 17 * 11) % 64
    return pixels_to_unit(((coarse * 3 + fine * 4) // 4 % 256).to(torch.uint8))


def synthetic_image(height: int, width: int, seed: int, batch: int = 1) -> torch.Tensor:
    return blocks_to_image(synthetic_blocks(height, width, seed, batch), height, width)


def randn16(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Standard normal values rounded to fp16 (so that the fixtures store inputs in fp16 losslessly)."""
    return torch.randn(shape, generator=generator).half().float()


def pixels_to_unit(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def image_to_pixels(image: torch.Tensor) -> torch.Tensor:
    return torch.round((image + 1.0) * 127.5).to(torch.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float, bool, str]] = []

    def add(self, name: str, ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4, note: str = "") -> None:
        ours, ref = ours.detach().double(), ref.detach().double()
        if ours.shape != ref.shape:
            self.rows.append((name, float("nan"), float("nan"), rtol, False,
                              f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"))
            print(f"{name:44s} SHAPE MISMATCH ours {tuple(ours.shape)} original {tuple(ref.shape)}")
            return
        err = (ours - ref).abs().max().item()
        scale = ref.abs().max().item()
        rel = err / scale if scale > 0 else err
        ok = rel <= rtol
        self.rows.append((name, err, rel, rtol, ok, note))
        print(f"{name:44s} max_abs {err:10.3e}  rel {rel:10.3e}  (|ref|max {scale:8.3g}, tol {rtol:.0e}) "
              f"{'ok' if ok else 'FAIL'} {note}")

    def control(self, name: str, ours: torch.Tensor, ref: torch.Tensor, min_rel: float = 1e-2) -> None:
        """A negative control: a deliberately different function must show a large error (the checks are
        sensitive)."""
        ours, ref = ours.detach().double(), ref.detach().double()
        rel = (ours - ref).abs().max().item() / ref.abs().max().item()
        ok = rel >= min_rel
        self.rows.append((name, float("nan"), rel, min_rel, ok, "control"))
        print(f"{name:44s} rel {rel:10.3e}  (control: must be >= {min_rel:.0e}) {'ok' if ok else 'FAIL'}")

    def exact(self, name: str, ok: bool, note: str) -> None:
        self.rows.append((name, 0.0 if ok else float("nan"), 0.0 if ok else float("nan"), 0.0, ok, note))
        print(f"{name:44s} {'identical' if ok else 'DIFFERENT'} {note}")

    @property
    def failed(self) -> list[str]:
        return [r[0] for r in self.rows if not r[4]]


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------


class Parity:
    def __init__(self, ref: Reference, folder: str, seed: int):
        self.ref = ref
        self.seed = seed
        self.report = Report()
        self.golden: dict[str, torch.Tensor] = {}
        self.cases: dict[str, dict] = {}
        self.tokenizer_golden: dict | None = None
        self.original = {}
        self.ours = {}
        self.state = {}
        # 256 style: the original model with random weights; 512 style: the same weights without the alpha gates.
        m256 = ref.build("256")
        randomize_reference(m256, seed)
        self.state["256"] = official_state(m256)
        m512 = ref.build("512")
        state512 = {k: v for k, v in self.state["256"].items() if not k.endswith(".attn2.alpha")}
        missing, unexpected = m512.load_state_dict(state512, strict=False)
        assert not unexpected and set(missing) <= set(SCHEDULE_BUFFERS), (missing, unexpected)
        self.state["512"] = official_state(m512)
        self.original = {"256": m256, "512": m512}
        self.ours = {style: load_ours(self.state[style], style, folder) for style in ("256", "512")}

    def gen(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def keep(self, case: str, description: str, tensors: dict[str, torch.Tensor], **params) -> None:
        self.cases[case] = {"description": description, **params}
        for name, t in tensors.items():
            t = t.detach().clone().contiguous()
            if t.is_floating_point() and not name.startswith(("out", "mean")) and torch.equal(t.half().float(), t):
                t = t.half()  # inputs made fp16-exact: stored in half the space; outputs always in fp32
            self.golden[f"{case}/{name}"] = t

    # -- a. U-Net ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def unet(self) -> None:
        for style in ("256", "512"):
            orig, ours = self.original[style], self.ours[style]
            g = self.gen(1)
            b = 2
            x = randn16(b, 4, T, LATENT, LATENT, generator=g)
            frame = randn16(b, 4, 1, LATENT, LATENT, generator=g)  # VDG: the conditioning frame's latent ...
            vdg = frame.expand(-1, -1, T, -1, -1).contiguous()  # ... repeated over the frames
            t = torch.tensor([999, 417])
            fs = torch.tensor([3, 5]) if style == "256" else torch.tensor([24, 10])
            for layout, n_ctx in (("split", 77 + 16 * T), ("repeat", 77 + 16)):
                ctx = randn16(b, n_ctx, WIDTH, generator=g)
                ref = orig.apply_model(x, t, {"c_concat": [vdg], "c_crossattn": [ctx]}, fs=fs)
                out = ours.unet(torch.cat([x, vdg], dim=1), t, ctx, fs)
                self.report.add(f"unet_{style}_{layout}_ctx{n_ctx}", out, ref, 1e-5)
                if layout == "split":
                    gates = "learnable alpha gates" if style == "256" else "fixed image scale"
                    self.keep(f"unet_{style}", f"U-Net forward, {style}-style ({gates}), context 77+16*T "
                              "(per-frame split), fs given",
                              {"x": x, "vdg_frame": frame, "t": t, "context": ctx, "fs": fs, "out": ref}, style=style)
                else:
                    self.keep(f"unet_{style}_repeat", f"U-Net forward, {style}-style, same x / vdg / t / fs as "
                              f"unet_{style}, context of {n_ctx} tokens (repeated per frame)",
                              {"context": ctx, "out": ref}, style=style, inputs_from=f"unet_{style}")
            # default fs (fs=None)
            ctx = torch.randn(b, 77 + 16 * T, WIDTH, generator=g)
            ref = orig.apply_model(x, t, {"c_concat": [vdg], "c_crossattn": [ctx]})
            out = ours.unet(torch.cat([x, vdg], dim=1), t, ctx, None)
            self.report.add(f"unet_{style}_default_fs", out, ref, 1e-5)
            if style == "256":  # controls: the gates and the context layout matter
                ctx = torch.randn(b, 77 + 16 * T, WIDTH, generator=g)
                ref = orig.apply_model(x, t, {"c_concat": [vdg], "c_crossattn": [ctx]}, fs=fs)
                without_gates = self.ours["512"].unet(torch.cat([x, vdg], dim=1), t, ctx, fs)
                self.report.control("control_unet_256_without_alpha_gates", without_gates, ref)
                unsplit = ours.unet(torch.cat([x, vdg], dim=1), t, torch.cat([ctx, ctx[:, :1]], 1), fs)
                self.report.control("control_unet_256_context_not_split", unsplit, ref)
        alphas = [float(v) for k, v in self.state["256"].items() if k.endswith("attn2.alpha")]
        print(f"  (256 gates: {len(alphas)} alpha values in [{min(alphas):.2f}, {max(alphas):.2f}])")

    def names(self, keys_file: Path) -> None:
        """Every tensor name of the original model (weights + schedule buffers) must be a released name, up to the
        block indices (the small models have fewer blocks)."""
        import re

        def pattern(name: str) -> str:
            return re.sub(r"\.\d+\.", ".N.", re.sub(r"\.\d+\.", ".N.", name))

        released = {pattern(line.split("\t")[0]) for line in keys_file.read_text().splitlines() if line.strip()}
        ours = {pattern(k) for k in self.original["256"].state_dict()}
        unknown = sorted(ours - released)
        self.report.exact("original_names_are_released_names", not unknown,
                          f"{len(ours)} name patterns vs {keys_file.name} ({len(released)}); released patterns absent "
                          f"from the small model: {len(released - ours)}"
                          + (f"; unknown: {unknown[:5]}" if unknown else ""))

    # -- b. P ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def resampler(self) -> None:
        g = self.gen(2)
        tokens = randn16(1, 257, 48, generator=g)
        ref = self.original["256"].image_proj_model(tokens)
        out = self.ours["256"].image_proj(tokens)
        self.report.add("resampler", out, ref, 1e-5)
        self.keep("resampler", "query transformer P on random CLIP image tokens", {"tokens": tokens, "out": ref},
                  style="256")

    # -- c. VAE ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def vae(self) -> None:
        orig, ours = self.original["512"], self.ours["512"]
        scale = orig.scale_factor
        blocks = synthetic_blocks(64, 96, self.seed + 3, batch=2)
        image = blocks_to_image(blocks, 64, 96)  # (2, 3, 64, 96)
        posterior = orig.first_stage_model.encode(image)
        ref_mean = scale * posterior.mean
        out_mean = ours.vae.encode_frames(image, sample=False)
        self.report.add("vae_encode_mean", out_mean, ref_mean, 1e-5)
        noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(77))
        ref_sample = scale * posterior.sample(noise=noise)
        out_sample = ours.vae.encode_frames(image, generator=torch.Generator().manual_seed(77), sample=True)
        self.report.add("vae_encode_sample", out_sample, ref_sample, 1e-5)
        self.keep("vae_encode", "VAE encode: scale_factor * posterior mean", {"blocks": blocks, "mean": ref_mean},
                  style="512", height=64, width=96, pixel_checksum=int(image_to_pixels(image).long().sum()))
        g = self.gen(4)
        z = randn16(1, 4, 2, 16, 24, generator=g)
        for perframe in (True, False):
            orig.perframe_ae = perframe
            ref = orig.decode_first_stage(z)
            out = ours.vae.decode(z, 1 if perframe else None)
            self.report.add(f"vae_decode_{'perframe' if perframe else 'batched'}", out, ref, 1e-5)
        orig.perframe_ae = True
        self.keep("vae_decode", "VAE decode of scaled latents (decode_first_stage, per frame)", {"z": z, "out": ref},
                  style="512")

    # -- d. CLIP text + tokenizer --------------------------------------------------------------------------------------

    @torch.no_grad()
    def text(self) -> None:
        from dynamicrafter.models.tokenizer import get_tokenizer

        ref_ids = self.ref.open_clip.tokenize(TOKENIZER_STRINGS)
        our_ids = get_tokenizer()(TOKENIZER_STRINGS)
        diff = [s for s, a, b in zip(TOKENIZER_STRINGS, our_ids, ref_ids) if not torch.equal(a, b)]
        self.report.exact("tokenizer_ids", not diff, f"{len(TOKENIZER_STRINGS)} strings"
                          + (f"; differ: {[d[:40] for d in diff]}" if diff else ""))
        lengths = [(int((row != 0).sum())) for row in ref_ids]
        self.tokenizer_golden = {"strings": TOKENIZER_STRINGS,
                                 "ids": [row[:n].tolist() for row, n in zip(ref_ids, lengths)]}
        print(f"  (token counts: min {min(lengths)}, max {max(lengths)}; truncated: "
              f"{sum(n == 77 for n in lengths)})")

        ref = self.original["256"].get_learned_conditioning(PROMPTS)
        out = self.ours["256"].text_encoder.encode(PROMPTS)
        self.report.add("text_encoder", out, ref, 1e-5, "3 prompts incl. '' and a >77-token prompt")
        self.keep("text", "CLIP text tower (penultimate block + ln_final) on 3 prompts", {"out": ref},
                  style="256", prompts=PROMPTS)

    # -- e. CLIP image -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def image(self) -> None:
        orig, ours = self.original["256"], self.ours["256"]
        for i, (h, w) in enumerate(((224, 224), (256, 256), (320, 512), (576, 1024), (100, 300))):
            blocks = synthetic_blocks(h, w, self.seed + 10 + i)
            image = blocks_to_image(blocks, h, w)
            ref_pre = orig.embedder.preprocess(image)
            out_pre = ours.image_encoder.preprocess(image)
            self.report.add(f"image_preprocess_{h}x{w}", out_pre, ref_pre, 1e-5)
            ref = orig.embedder(image)
            out = ours.image_encoder(image)
            self.report.add(f"image_encoder_{h}x{w}", out, ref, 1e-5)
            if (h, w) == (320, 512):
                self.keep("image_320x512", "CLIP image tower (kornia antialiased bicubic resize to 224, all 257 "
                          "tokens before ln_post) on a 320x512 image", {"blocks": blocks, "out": ref},
                          style="256", height=h, width=w, pixel_checksum=int(image_to_pixels(image).long().sum()))
            if (h, w) == (256, 256):
                p_ref = orig.image_proj_model(ref)
                p_out = ours.image_proj(out)
                self.report.add("image_tokens_P_256x256", p_out, p_ref, 1e-5)

    # -- f. DDIM sampling -------------------------------------------------------------------------------------------

    def _conditions(self, style: str, batch: int, height: int, width: int):
        """Prompt / image embeddings and VDG latents computed by the ORIGINAL encoders (as released)."""
        orig = self.original[style]
        image = synthetic_image(height, width, self.seed + 20, batch)
        prompts = (PROMPTS * batch)[:batch]
        text = orig.get_learned_conditioning(prompts)
        uc_text = orig.get_learned_conditioning([""] * batch)
        img_emb = orig.image_proj_model(orig.embedder(image))
        uc_img_emb = orig.image_proj_model(orig.embedder(torch.zeros_like(image)))
        z0 = orig.first_stage_model.encode(image).mean * orig.scale_factor  # VDG frame (b, 4, h, w)
        vdg = z0[:, :, None].expand(-1, -1, T, -1, -1).contiguous()
        return text, uc_text, img_emb, uc_img_emb, vdg

    @torch.no_grad()
    def ddim(self, style: str, eta: float, steps: int, image_scale: float | None = None,
             keep: str | None = None, batch: int = 1) -> None:
        from dynamicrafter.pipeline import DynamiCrafterPipeline

        orig, ours = self.original[style], self.ours[style]
        d = ours.config.defaults
        h = w = SAMPLE_LATENT
        text, uc_text, img_emb, uc_img_emb, vdg = self._conditions(style, batch, 2 * h, 2 * w)
        fs = torch.full((batch,), d.frame_stride, dtype=torch.long)
        x_T = randn16(batch, 4, T, h, w, generator=self.gen(5))
        cond = {"c_crossattn": [torch.cat([text, img_emb], 1)], "c_concat": [vdg]}
        uc = {"c_crossattn": [torch.cat([uc_text, uc_img_emb], 1)], "c_concat": [vdg]}
        kwargs = {}
        if image_scale is not None:
            sampler = self.ref.ddim_multicond.DDIMSampler(orig)
            kwargs = {"cfg_img": image_scale, "unconditional_conditioning_img_nonetext": {
                "c_crossattn": [torch.cat([uc_text, img_emb], 1)], "c_concat": [vdg]}}
        else:
            sampler = self.ref.ddim.DDIMSampler(orig)
        seed = 1234
        with self.ref.shared_noise(seed):
            ref, _ = sampler.sample(S=steps, batch_size=batch, shape=(4, T, h, w), conditioning=cond,
                                    unconditional_guidance_scale=7.5, unconditional_conditioning=uc, eta=eta,
                                    x_T=x_T.clone(), fs=fs, timestep_spacing=d.timestep_spacing,
                                    guidance_rescale=d.guidance_rescale, verbose=False, **kwargs)
        pipe = DynamiCrafterPipeline(ours)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(prompt_embeds=text, negative_prompt_embeds=uc_text, image_embeds=img_emb, image_latents=vdg,
                   latents=x_T.clone(), num_frames=T, height=2 * h, width=2 * w, num_inference_steps=steps,
                   guidance_scale=7.5, image_guidance_scale=image_scale, guidance_rescale=d.guidance_rescale,
                   frame_stride=d.frame_stride, eta=eta, timestep_spacing=d.timestep_spacing,
                   generator=torch.Generator().manual_seed(seed), output_type="latent").frames
        name = (f"ddim_{style}_{'v' if style == '512' else 'eps'}_{d.timestep_spacing}_eta{eta:g}_{steps}steps"
                f"{'_imgcfg' if image_scale is not None else ''}")
        self.report.add(name, out, ref, 1e-4 if eta == 0 else 1e-3,
                        f"cfg 7.5, rescale {d.guidance_rescale}" + (f", img cfg {image_scale}" if image_scale else ""))
        if d.guidance_rescale > 0 and eta == 0 and image_scale is None:  # control: the rescale matters
            unrescaled = pipe(prompt_embeds=text, negative_prompt_embeds=uc_text, image_embeds=img_emb,
                              image_latents=vdg, latents=x_T.clone(), num_frames=T, height=2 * h, width=2 * w,
                              num_inference_steps=steps, guidance_scale=7.5, guidance_rescale=0.0,
                              frame_stride=d.frame_stride, eta=0.0, timestep_spacing=d.timestep_spacing,
                              output_type="latent").frames
            self.report.control(f"control_{name}_without_rescale", unrescaled, ref)
        if keep:
            self.keep(keep, f"DDIM {steps} steps, eta {eta:g}, CFG 7.5, {d.timestep_spacing} spacing, guidance "
                      f"rescale {d.guidance_rescale}" + (f", image CFG {image_scale}" if image_scale else "")
                      + f", {style}-style schedule; unconditional = '' text + P(CLIP(zeros image)); pipeline with "
                      "precomputed embeddings", {"prompt_embeds": text, "negative_prompt_embeds": uc_text,
                      "image_embeds": img_emb, "image_latents": vdg[:, :, :1], "latents": x_T, "out": ref},
                      style=style,
                      steps=steps, eta=eta, guidance_scale=7.5, image_guidance_scale=image_scale,
                      guidance_rescale=d.guidance_rescale, timestep_spacing=d.timestep_spacing,
                      frame_stride=d.frame_stride, height=2 * h, width=2 * w, num_frames=T)

    # -- end to end: the released image_guided_synthesis vs our pipeline from a prompt and an image ----------------

    @torch.no_grad()
    def end_to_end(self, style: str, eta: float, steps: int, image_scale: float | None = None,
                   interp: bool = False) -> None:
        """``interp``: frame interpolation (first and last frame latents in the VDG input, the released ``--interp``
        path); the VAE posterior mean is used on both sides there, since the original encodes all T frames and
        the posterior noise of frame T-1 cannot be aligned with our two-frame draw."""
        from dynamicrafter.pipeline import DynamiCrafterPipeline

        orig, ours = self.original[style], self.ours[style]
        d = ours.config.defaults
        h = w = LATENT
        image = synthetic_image(2 * h, 2 * w, self.seed + 30)[0]
        end_image = synthetic_image(2 * h, 2 * w, self.seed + 31)[0] if interp else None
        prompt = PROMPTS[0]
        x_T = torch.randn(1, 4, T, h, w, generator=self.gen(6))
        captured = {}
        sampler_classes = (self.ref.ddim.DDIMSampler, self.ref.ddim_multicond.DDIMSampler)
        originals = [cls.sample for cls in sampler_classes]

        def capture(fn):
            def sample(*args, **kwargs):
                result = fn(*args, **kwargs)
                captured["latents"] = result[0]
                return result
            return sample

        seed = 4321
        try:
            for cls in sampler_classes:
                cls.sample = capture(cls.sample)
            with self.ref.shared_noise(seed, skip=None if interp else (1, 4, h, w), posterior_mean=interp):
                videos = image[None, :, None].expand(-1, -1, T, -1, -1).contiguous()
                if interp:  # as the released load_data_prompts(interp=True): T/2 copies of each image
                    videos[:, :, T // 2 :] = end_image[None, :, None]
                ref_video = self.ref.inference.image_guided_synthesis(
                    orig, [prompt], videos, [1, 4, T, h, w], 1, steps, eta, 7.5,
                    image_scale, d.frame_stride, True, image_scale is not None, False, interp, d.timestep_spacing,
                    d.guidance_rescale, x_T=x_T.clone())[:, 0]
        finally:
            for cls, fn in zip(sampler_classes, originals):
                cls.sample = fn
        pipe = DynamiCrafterPipeline(ours)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(image, prompt, num_frames=T, height=2 * h, width=2 * w, num_inference_steps=steps,
                   guidance_scale=7.5, image_guidance_scale=image_scale, guidance_rescale=d.guidance_rescale,
                   frame_stride=d.frame_stride, eta=eta, timestep_spacing=d.timestep_spacing,
                   generator=torch.Generator().manual_seed(seed), latents=x_T.clone(), output_type="pt",
                   end_image=end_image, sample_posterior=not interp)
        name = (f"e2e_{style}_eta{eta:g}_{steps}steps{'_imgcfg' if image_scale is not None else ''}"
                f"{'_interp' if interp else ''}")
        tol = 1e-4 if eta == 0 else 1e-3
        self.report.add(name + "_latents", out.latents, captured["latents"], tol)
        self.report.add(name + "_video", out.frames, ref_video.clamp(-1, 1), tol)


# ----------------------------------------------------------------------------------------------------------------
# Golden fixtures
# ----------------------------------------------------------------------------------------------------------------


def write_golden(parity: Parity, ref: Reference, folder: Path) -> None:
    from safetensors.torch import save_file

    from dynamicrafter.checkpoint import CONFIG_METADATA_KEY

    folder.mkdir(parents=True, exist_ok=True)
    # The text half of the image tower's CLIP model (embedder.model.token_embedding etc.) is in the released files
    # but used by nobody: left out of the fixture (49408 x width values).
    weights = {k: v.half() if v.is_floating_point() else v for k, v in parity.state["256"].items()
               if not k.startswith("embedder.model.") or k.startswith("embedder.model.visual.")}
    save_file(weights, str(folder / "weights.safetensors"),
              metadata={CONFIG_METADATA_KEY: json.dumps(parity_config("256").to_dict())})  # one key: stable bytes
    save_file(parity.golden, str(folder / "cases.safetensors"))
    commit = "unknown"
    with contextlib.suppress(Exception):
        commit = (ref.path / ".git_commit").read_text().strip()
    manifest = {
        "about": "Golden outputs of the ORIGINAL DynamiCrafter code on small random-weight models "
                 "(written by tools/compare_reference.py --write-golden; see its docstring for the environment).",
        "reference": {"original_commit": commit, "open_clip_torch": ref.version,
                      "kornia": importlib.metadata.version("kornia"), "torch": torch.__version__},
        "configs": {style: parity_config(style).to_dict() for style in ("256", "512")},
        "weights": "weights.safetensors",
        "weights_note": "the original modules' random weights (fp16-exact values, stored as fp16) under the released "
                        "tensor names, without the schedule buffers and the unused text half of the image tower's "
                        "CLIP model; the 512-style model is these tensors without the attn2.alpha gates",
        "cases_file": "cases.safetensors",
        "images": "images are stored as 'blocks' (uint8 values of 8x8 pixel blocks) and rebuilt with the integer "
                  "recipe of blocks_to_image() in tools/compare_reference.py: pixels = (3 * block + 4 * fine) // 4 % "
                  "256 with fine = (37 y + 91 x + 53 c + (y x) % 17 * 11) % 64; image = pixels / 127.5 - 1; "
                  "pixel_checksum = sum of the uint8 pixels",
        "storage": "inputs that are fp16-exact are stored as fp16 (load as float32); outputs are float32",
        "cases": parity.cases,
        "tokenizer": parity.tokenizer_golden,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=True) + "\n")
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"golden fixtures written to {folder} ({total / 2**20:.2f} MiB)")


# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", required=True, type=Path, help="checkout of the original DynamiCrafter code")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src",
                        help="this project's source folder (default: src/ beside tools/)")
    parser.add_argument("--stub-dir", default=None, help="where to write the torchvision stub (default: a temp dir)")
    parser.add_argument("--write-golden", type=Path, default=None, metavar="DIR",
                        help="also write the golden fixtures (tests/data/golden)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="skip the slower sampling variants")
    args = parser.parse_args(argv)

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    sys.path.insert(0, str(args.src))
    with tempfile.TemporaryDirectory() as tmp:
        stub_dir = args.stub_dir or os.path.join(tmp, "stub")
        write_torchvision_stub(stub_dir)
        ref = Reference(args.original.resolve(), stub_dir)
        print(f"original code: {ref.path}; open_clip_torch {ref.version}, kornia "
              f"{importlib.metadata.version('kornia')}, torch {torch.__version__}")
        parity = Parity(ref, tmp, args.seed)
        parity.names(args.src.parent / "tests" / "data" / "official-checkpoint-keys" / "dynamicrafter_256.tsv")
        parity.unet()
        parity.resampler()
        parity.vae()
        parity.text()
        parity.image()
        parity.ddim("512", 0.0, 5, keep="ddim_v")
        parity.ddim("256", 0.0, 5, image_scale=2.0, keep="ddim_eps_imgcfg")
        parity.ddim("256", 0.0, 6)  # 'uniform' spacing with 1000 % S != 0: 7 steps
        if not args.quick:
            parity.ddim("256", 1.0, 5)
            parity.ddim("512", 1.0, 5)
            parity.ddim("512", 0.0, 50)
            parity.end_to_end("256", 1.0, 5)
            parity.end_to_end("512", 1.0, 5)
            parity.end_to_end("512", 0.0, 4, image_scale=2.5)
            parity.end_to_end("512", 1.0, 4, interp=True)
        if args.write_golden is not None:
            write_golden(parity, ref, args.write_golden)
    failed = parity.report.failed
    print(f"\n{len(parity.report.rows) - len(failed)} passed, {len(failed)} failed" +
          (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
