"""Parity with the released DynamiCrafter code, through golden fixtures made by the ORIGINAL modules.

``tests/data/golden`` (written by ``tools/compare_reference.py --write-golden``, which documents the reference
environment) holds small random-weight models with the released architecture: the original model's weights under
the released tensor names (``weights.safetensors``, fp16-exact values), the inputs, and the original's float32
outputs (``cases.safetensors``; ``manifest.json`` describes each case and stores the two ModelConfigs). Each test
loads the weights through the public loading path (``dynamicrafter.checkpoint.load_model``) and checks that this
project computes the same function.

Errors are relative to the largest reference magnitude, ``max|ours - original| / max|original|``. Observed when
the fixtures were written (CPU, float32): U-Net forwards <= 1.1e-6, VAE <= 1.1e-6, text tower, image tower, P and
the tokenizer bit-identical, 5-step DDIM runs <= 5e-6 (the sampler amplifies the ~1e-6 U-Net differences of
einsum vs. SDPA attention; eps-prediction at t ~ 1000 divides by sqrt(alpha_bar) ~ 0.07). The tolerances below
leave about 10x margin for other CPUs / BLAS builds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dynamicrafter.checkpoint import load_model
from dynamicrafter.config import ModelConfig
from dynamicrafter.models.tokenizer import get_tokenizer
from dynamicrafter.pipeline import DynamiCrafterPipeline

GOLDEN = Path(__file__).parent / "data" / "golden"
RELEASED_KEYS = Path(__file__).parent / "data" / "official-checkpoint-keys" / "dynamicrafter_256.tsv"

FORWARD_RTOL = 1e-5  # single forwards: observed <= 1.1e-6 (0 for the CLIP towers and P)
SAMPLING_RTOL = 1e-4  # 5-step DDIM with CFG: observed <= 5e-6


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


@pytest.fixture(scope="module")
def cases(manifest: dict) -> dict[str, torch.Tensor]:
    tensors = load_file(str(GOLDEN / manifest["cases_file"]))
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


@pytest.fixture(scope="module")
def models(manifest: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 256-style model (learnable alpha gates, eps) and the 512-style model (no gates, v-prediction, zero
    terminal SNR, dynamic rescale): the latter is the same tensors without the ``attn2.alpha`` gates, as the
    original 512 model loaded them."""
    weights = GOLDEN / manifest["weights"]
    stripped = {k: v for k, v in load_file(str(weights)).items() if not k.endswith(".attn2.alpha")}
    path_512 = tmp_path_factory.mktemp("golden") / "weights_512.safetensors"
    save_file(stripped, str(path_512))
    return {
        "256": load_model(weights, ModelConfig.from_dict(manifest["configs"]["256"])),
        "512": load_model(path_512, ModelConfig.from_dict(manifest["configs"]["512"])),
    }


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, rtol: float, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != original {tuple(ref.shape)}"
    err = (ours.double() - ref.double()).abs().max().item()
    rel = err / ref.double().abs().max().item()
    assert rel <= rtol, f"{what}: max abs error {err:.3e}, relative {rel:.3e} > {rtol:.0e} vs the original code"


def image_from_blocks(blocks: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, int]:
    """The fixtures' integer image recipe (see manifest["images"]): (image in [-1, 1], checksum of the pixels)."""
    coarse = blocks.long().repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)[:, :, :height, :width]
    yy = torch.arange(height).view(1, 1, -1, 1)
    xx = torch.arange(width).view(1, 1, 1, -1)
    cc = torch.arange(3).view(1, -1, 1, 1)
    fine = (yy * 37 + xx * 91 + cc * 53 + (yy * xx) % 17 * 11) % 64
    pixels = ((coarse * 3 + fine * 4) // 4 % 256).to(torch.uint8)
    return pixels.float() / 127.5 - 1.0, int(pixels.long().sum())


def case_image(manifest: dict, cases: dict, name: str) -> torch.Tensor:
    info = manifest["cases"][name]
    image, checksum = image_from_blocks(cases[f"{name}/blocks"], info["height"], info["width"])
    assert checksum == info["pixel_checksum"], "the image recipe does not reproduce the fixture's pixels"
    return image


# ----------------------------------------------------------------------------------------------------------------


def test_fixture_uses_released_tensor_names(manifest: dict) -> None:
    """The original model's own state_dict names are the released names (up to block indices): the fixture
    exercises the real key maps. Left out of the fixture: the schedule buffers and the unused text half of the
    image tower's CLIP model."""

    def pattern(name: str) -> str:
        return re.sub(r"\.\d+\.", ".N.", re.sub(r"\.\d+\.", ".N.", name))

    released = {pattern(line.split("\t")[0]) for line in RELEASED_KEYS.read_text().splitlines() if line.strip()}
    with open(GOLDEN / manifest["weights"], "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    names = {pattern(k) for k in header if k != "__metadata__"}
    assert names <= released, sorted(names - released)[:10]
    omitted = {p for p in released - names
               if not (p.startswith("embedder.model.") and not p.startswith("embedder.model.visual."))
               and "." in p}  # schedule buffers have no dot
    assert not omitted, sorted(omitted)[:10]


def test_tokenizer_ids_match_open_clip(manifest: dict) -> None:
    data = manifest["tokenizer"]
    ids = get_tokenizer()(data["strings"])
    assert ids.shape == (len(data["strings"]), 77)
    for row, expected, text in zip(ids, data["ids"], data["strings"]):
        assert row[: len(expected)].tolist() == expected, f"token ids differ for {text[:60]!r}"
        assert not row[len(expected) :].any(), f"padding differs for {text[:60]!r}"


def test_text_encoder(models: dict, manifest: dict, cases: dict) -> None:
    prompts = manifest["cases"]["text"]["prompts"]  # includes "" and a prompt longer than 77 tokens
    with torch.no_grad():
        out = models["256"].text_encoder.encode(prompts)
    assert_matches(out, cases["text/out"], FORWARD_RTOL, "CLIP text tower")  # observed: identical


def test_image_encoder_320x512(models: dict, manifest: dict, cases: dict) -> None:
    image = case_image(manifest, cases, "image_320x512")  # downscaled to 224 with the antialiasing blur
    with torch.no_grad():
        out = models["256"].image_encoder(image)
    assert_matches(out, cases["image_320x512/out"], FORWARD_RTOL, "CLIP image tower")  # observed: identical


def test_resampler(models: dict, cases: dict) -> None:
    with torch.no_grad():
        out = models["256"].image_proj(cases["resampler/tokens"])
    assert_matches(out, cases["resampler/out"], FORWARD_RTOL, "query transformer P")  # observed: identical


@pytest.mark.parametrize("case", ["unet_256", "unet_256_repeat", "unet_512", "unet_512_repeat"])
def test_unet_forward(models: dict, manifest: dict, cases: dict, case: str) -> None:
    """256 style: learnable alpha gates; 512 style: fixed image scale. Context of 77 + 16 T tokens (image tokens
    split per frame) and of 93 tokens (repeated for every frame). Observed: <= 1.1e-6."""
    info = manifest["cases"][case]
    inputs = info.get("inputs_from", case)
    x, frame, t, fs = (cases[f"{inputs}/{k}"] for k in ("x", "vdg_frame", "t", "fs"))
    vdg = frame.expand(-1, -1, x.shape[2], -1, -1)
    with torch.no_grad():
        out = models[info["style"]].unet(torch.cat([x, vdg], dim=1), t, cases[f"{case}/context"], fs)
    assert_matches(out, cases[f"{case}/out"], FORWARD_RTOL, f"U-Net ({case})")


def test_vae_encode_mean(models: dict, manifest: dict, cases: dict) -> None:
    image = case_image(manifest, cases, "vae_encode")
    with torch.no_grad():
        out = models["512"].vae.encode_frames(image, sample=False)
    assert_matches(out, cases["vae_encode/mean"], FORWARD_RTOL, "VAE encode (posterior mean)")  # observed 1e-6


@pytest.mark.parametrize("chunk", [1, None])
def test_vae_decode(models: dict, cases: dict, chunk: int | None) -> None:
    with torch.no_grad():
        out = models["512"].vae.decode(cases["vae_decode/z"], chunk)
    assert_matches(out, cases["vae_decode/out"], FORWARD_RTOL, f"VAE decode (chunk {chunk})")  # observed 1e-6


@pytest.mark.parametrize("case", ["ddim_v", "ddim_eps_imgcfg"])
def test_sampling(models: dict, manifest: dict, cases: dict, case: str) -> None:
    """Released DDIMSampler (ddim_multiplecond for image guidance) vs our pipeline: same embeddings, VDG latents and
    initial noise; the unconditional branch's image tokens (P(CLIP(zeros))) are computed by the pipeline.
    ddim_v: v-prediction, zero terminal SNR, dynamic rescale, uniform_trailing, guidance rescale 0.7.
    ddim_eps_imgcfg: eps-prediction, learnable gates, uniform spacing, text CFG 7.5 + image CFG 2.0."""
    info = manifest["cases"][case]
    pipe = DynamiCrafterPipeline(models[info["style"]])
    pipe.set_progress_bar_config(disable=True)
    get = lambda name: cases[f"{case}/{name}"]  # noqa: E731
    out = pipe(
        prompt_embeds=get("prompt_embeds"), negative_prompt_embeds=get("negative_prompt_embeds"),
        image_embeds=get("image_embeds"), image_latents=get("image_latents"), latents=get("latents"),
        num_frames=info["num_frames"], height=info["height"], width=info["width"],
        num_inference_steps=info["steps"], guidance_scale=info["guidance_scale"],
        image_guidance_scale=info["image_guidance_scale"], guidance_rescale=info["guidance_rescale"],
        frame_stride=info["frame_stride"], eta=info["eta"], timestep_spacing=info["timestep_spacing"],
        output_type="latent",
    )
    assert_matches(out.frames, get("out"), SAMPLING_RTOL, f"DDIM sampling ({case})")
