import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from dynamicrafter.checkpoint import (
    build_empty,
    detect_preset,
    load_component,
    load_model,
    materialize_buffers,
    official_state_dict,
    read_state_dict,
    released_schedule_buffers,
)
from dynamicrafter.config import PRESETS, config_for_tests
from dynamicrafter.errors import CheckpointError
from dynamicrafter.testing import random_image, random_model, tiny_checkpoint

CFG = config_for_tests()


def test_official_layout_checkpoint_loads_strictly_and_matches(tmp_path):
    path = tiny_checkpoint(tmp_path)
    loaded = load_model(path)
    reference = random_model(CFG)
    assert loaded.config == CFG
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_safetensors_bf16_repack_without_towers_plus_tower_files(tmp_path):
    model = random_model(CFG)
    sd = official_state_dict(model)
    towers = {k: v for k, v in sd.items() if k.startswith(("cond_stage_model.", "embedder."))}
    pruned = {k: v.to(torch.bfloat16) for k, v in sd.items() if k not in towers}
    save_file(pruned, str(tmp_path / "pruned.safetensors"))
    with pytest.raises(CheckpointError, match="no CLIP text encoder .* --text-encoder"):
        load_model(tmp_path / "pruned.safetensors", CFG)
    # OpenCLIP's own names for the towers (one file holding both), as open_clip_pytorch_model.* files do
    openclip = {k.removeprefix("cond_stage_model.model."): v for k, v in towers.items()
                if k.startswith("cond_stage_model.model.")}
    openclip.update({k.removeprefix("embedder.model."): v for k, v in towers.items()
                     if k.startswith("embedder.model.visual.")})
    save_file(openclip, str(tmp_path / "open_clip_pytorch_model.safetensors"))
    loaded = load_model(tmp_path / "pruned.safetensors", CFG,
                        text_encoder_path=tmp_path / "open_clip_pytorch_model.safetensors",
                        image_encoder_path=tmp_path / "open_clip_pytorch_model.safetensors")
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        expected = ref[key] if key.startswith(("text_encoder", "image_encoder")) else ref[key].to(torch.bfloat16)
        assert torch.equal(value, expected.float()), key


def test_text_encoder_in_transformers_format(tmp_path):
    model = random_model(CFG)
    hf = {f"text_model.{k.removeprefix('transformer.')}": v for k, v in model.text_encoder.state_dict().items()}
    hf["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    save_file(hf, str(tmp_path / "text_encoder.safetensors"))
    sd = {k: v for k, v in official_state_dict(model).items() if not k.startswith("cond_stage_model.")}
    torch.save({"state_dict": sd}, tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt", CFG, text_encoder_path=tmp_path / "text_encoder.safetensors")
    assert torch.equal(loaded.text_encoder.encode(["a cat"]), model.text_encoder.encode(["a cat"]))


def test_deepspeed_and_legacy_names(tmp_path):
    sd = official_state_dict(random_model(CFG))
    sd = {k.replace("fps_embedding", "framestride_embed"): v for k, v in sd.items()}
    torch.save({"module": {f"_forward_module.{k}": v for k, v in sd.items()}}, tmp_path / "mp_rank_00_model_states.pt")
    loaded = load_model(tmp_path / "mp_rank_00_model_states.pt", CFG)
    assert torch.equal(loaded.unet.fs_embed.linear_1.weight, sd["model.diffusion_model.framestride_embed.0.weight"])


def test_partial_file_loads_one_network(tmp_path):
    other = random_model(CFG, seed=1)
    unet_only = {k: v for k, v in official_state_dict(other).items() if k.startswith("model.diffusion_model.")}
    save_file(unet_only, str(tmp_path / "unet.safetensors"))
    model = random_model(CFG)
    used = load_component(model, "unet", tmp_path / "unet.safetensors")
    assert len(used) == len(unet_only)
    assert torch.equal(model.unet.conv_in.weight, other.unet.conv_in.weight)
    assert not torch.equal(model.vae.autoencoder.encoder.conv_in.weight,
                           other.vae.autoencoder.encoder.conv_in.weight)
    with pytest.raises(CheckpointError, match="holds no VAE"):
        load_component(model, "vae", tmp_path / "unet.safetensors")


def test_truncated_and_wrong_files(tmp_path):
    path = tiny_checkpoint(tmp_path)
    data = path.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "truncated.ckpt")
    (tmp_path / "half.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        read_state_dict(tmp_path / "half.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "nope.ckpt")
    random_image().save(tmp_path / "image.ckpt", format="PNG")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "image.ckpt")


class Hyperparameters:  # a pickled custom class, as some Lightning checkpoints hold
    lr = 1e-5


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}, "hparams": Hyperparameters()}, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_state_dict(tmp_path / "pickled.ckpt")


def test_config_mismatch_names_first_tensor_and_preset(tmp_path):
    sd = official_state_dict(random_model(CFG))
    torch.save({"state_dict": sd}, tmp_path / "no_config.ckpt")  # no stored config: detected as "256"
    with pytest.raises(CheckpointError, match=r"has shape .* but config '256' expects") as e:
        load_model(tmp_path / "no_config.ckpt")
    assert "\n" not in str(e.value)
    wide = dataclasses.replace(CFG, unet=dataclasses.replace(CFG.unet, model_channels=64))
    with pytest.raises(CheckpointError,
                       match="time_embed.0.weight' has shape 128x32 but config 'test_size' expects 256x64"):
        load_model(tiny_checkpoint(tmp_path), wide)
    v_config = dataclasses.replace(CFG, schedule=PRESETS["512"].schedule)
    with pytest.raises(CheckpointError, match="noise schedule"):
        load_model(tiny_checkpoint(tmp_path), v_config)


def test_preset_detection_from_tensors():
    def released(name):
        sd = {k: torch.empty(0) for k in ("model.diffusion_model.conv", "betas")}
        if name == "256":
            sd["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.alpha"] = torch.zeros(())
        else:
            sd["scale_arr"] = released_schedule_buffers(PRESETS[name])["scale_arr"]
        return sd

    assert detect_preset(released("256")) == "256"
    assert detect_preset(released("512")) == "512"
    assert detect_preset(released("1024")) == "1024"
    assert detect_preset(released("512"), "checkpoints/dynamicrafter_512_interp_v1/model.ckpt") == "512_interp"
    assert detect_preset({"foo": torch.zeros(1)}) is None


def test_meta_build_materializes_buffers():
    model = build_empty(PRESETS["256"])
    assert next(model.parameters()).is_meta
    materialize_buffers(model)
    assert not model.image_encoder.mean.is_meta
