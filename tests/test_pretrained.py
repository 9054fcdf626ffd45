"""Diffusers-style folders: convert -> from_pretrained round trips for every preset built small, the parts read by
diffusers / transformers, Hugging Face cache folders, atomic writes, the convert command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dynamicrafter.checkpoint import save_checkpoint
from dynamicrafter.cli import main
from dynamicrafter.config import PRESETS, ModelConfig, config_for_tests
from dynamicrafter.errors import UserError
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.pretrained import MODEL_INDEX, load_pretrained, save_pretrained
from dynamicrafter.testing import random_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def small_preset(name: str) -> ModelConfig:
    """A released preset (its lambda gate, parameterization, schedule, fs meaning, interpolation mode and sampling
    settings) with the tiny widths: the same code paths at a test's size."""
    preset, tiny = PRESETS[name], config_for_tests(name)
    unet = replace(tiny.unet, image_cross_attention_scale_learnable=preset.unet.image_cross_attention_scale_learnable,
                   default_fs=preset.unet.default_fs)
    defaults = replace(preset.defaults, height=16, width=16, num_frames=tiny.unet.temporal_length)
    return replace(preset, unet=unet, resampler=tiny.resampler, vae=tiny.vae, text_encoder=tiny.text_encoder,
                   image_encoder=tiny.image_encoder, defaults=defaults)


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_round_trip_is_bit_identical(preset: str, tmp_path: Path) -> None:
    model = random_model(small_preset(preset), seed=3)
    folder = save_pretrained(model, tmp_path / preset)
    index = json.loads((folder / MODEL_INDEX).read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and index["text_encoder"] == ["transformers", "CLIPTextModel"]
    for part in ("unet", "image_proj", "vae", "text_encoder", "image_encoder"):
        assert (folder / part / "config.json").is_file()
    assert (folder / "tokenizer" / "vocab.json").is_file()
    assert (folder / "scheduler" / "scheduler_config.json").is_file()
    pipe = DynamiCrafterPipeline.from_pretrained(folder, device="cpu")
    assert pipe.config == model.config and pipe.config.interp_mode == (preset == "512_interp")
    assert _same_model(pipe.model, model)


def test_libraries_read_the_converted_parts(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModel

    from dynamicrafter.models.tokenizer import get_tokenizer

    model = random_model(small_preset("512"), seed=1)
    folder = save_pretrained(model, tmp_path / "m")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        assert torch.equal(z * vae.config.scaling_factor, model.vae.encode_frames(x, sample=False))
        ours = model.vae.autoencoder
        assert torch.equal(vae.decode(z).sample, ours.decoder(ours.post_quant_conv(z)))
        torch.testing.assert_close(vae.decode(z).sample, model.vae.decode_frames(z * vae.config.scaling_factor),
                                   rtol=1e-5, atol=1e-5)  # ((z s) / s, rounded)

    prompts = ["a red ball moves to the left", "A brown bear   walking in the zoo, 2 cats"]
    ids = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids, get_tokenizer()(prompts))  # OpenCLIP's ids, zero padding included
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    assert text.config.num_hidden_layers == model.config.text_encoder.layers_used  # penultimate + final LayerNorm
    with torch.no_grad():
        torch.testing.assert_close(text(input_ids=ids).last_hidden_state, model.text_encoder.encode(prompts),
                                   rtol=1e-5, atol=1e-5)
    vision = CLIPVisionModel.from_pretrained(folder, subfolder="image_encoder").eval()
    with torch.no_grad():
        pixels = model.image_encoder.preprocess(x)
        torch.testing.assert_close(vision(pixel_values=pixels).last_hidden_state, model.image_encoder(x),
                                   rtol=1e-5, atol=1e-5)
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr
    ours = model.schedule.alphas_cumprod.float()
    torch.testing.assert_close(scheduler.alphas_cumprod.float(), ours, rtol=1e-5, atol=1e-6)


def test_hugging_face_cache_folders(tmp_path: Path) -> None:
    """A snapshot folder of a released repository (model.ckpt) and the repository folder itself, offline."""
    model = random_model(small_preset("512_interp"))
    repo = tmp_path / "hub" / "models--Doubiiu--DynamiCrafter_512_Interp"
    snapshot = repo / "snapshots" / "0123abcd"
    blob = repo / "blobs" / "f00d"
    save_checkpoint(model, blob.with_suffix(".ckpt"))
    snapshot.mkdir(parents=True)
    (snapshot / "model.ckpt").symlink_to(blob.with_suffix(".ckpt"))  # the cache links snapshots to blobs
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for folder in (snapshot, repo):
        pipe = DynamiCrafterPipeline.from_pretrained(folder, device="cpu")
        assert pipe.config.name == "512_interp" and _same_model(pipe.model, model)
    with pytest.raises(UserError, match="model_index.json"):
        DynamiCrafterPipeline.from_pretrained(tmp_path / "hub")
    with pytest.raises(UserError, match="not one"):
        DynamiCrafterPipeline.from_pretrained(blob.with_suffix(".ckpt"))


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dynamicrafter.pretrained as P

    model = random_model(config_for_tests())
    out = save_pretrained(model, tmp_path / "m")
    with pytest.raises(UserError, match="already exists"):
        save_pretrained(model, out)

    def broken(folder: Path) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(P, "write_tokenizer", broken)
    other = random_model(config_for_tests(), seed=5)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(other, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left
    assert _same_model(load_pretrained(out), model)  # the previous folder is intact
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(other, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_convert_command_with_dtype(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = random_model(small_preset("256"))
    checkpoint = save_checkpoint(model, tmp_path / "model.safetensors")
    out = tmp_path / "converted"
    assert main(["convert", str(checkpoint), str(out), "--dtype", "fp16"]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    half = DynamiCrafterPipeline.from_checkpoint(out, device="cpu", dtype="fp16").model  # --checkpoint DIR works too
    assert _same_model(half, model.to(torch.float16))
    assert main(["convert", str(checkpoint), str(out)]) == 2  # not over an existing folder without --overwrite
    assert "--overwrite" in capsys.readouterr().err
