"""PIC with the DreamSim architecture (random-weight stand-in), the DreamSim converter, and the LPIPS stand-in."""

import json

import numpy as np
import pytest
import torch

from dynamicrafter.errors import CheckpointError
from dynamicrafter.metrics.dreamsim import (
    DREAMSIM_IMAGE_SIZE,
    DreamSim,
    DreamSimDistance,
    convert_dreamsim_checkpoint,
    dreamsim_config,
    load_dreamsim,
    pic_from_distances,
    save_dreamsim,
    standin_dreamsim_config,
)
from dynamicrafter.metrics.lpips import LPIPS, LPIPSDistance, load_lpips


def textured_image(seed=0, size=96):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy), np.sin(3 * xx * yy * 7)], -1)
    image = (base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)) * 255
    image[size // 4:size // 2, size // 3:2 * size // 3] = [240, 30, 30]  # a red square
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def standin():
    torch.manual_seed(0)
    return DreamSimDistance(DreamSim(standin_dreamsim_config("ensemble")))


def test_pic_is_one_for_frames_identical_to_the_input(standin):
    image = textured_image()
    frames = np.repeat(image[None], 4, axis=0)
    distances = standin(image, frames)
    assert distances.shape == (4,)
    assert np.allclose(distances, 0.0, atol=1e-5)
    assert pic_from_distances(distances) == pytest.approx(1.0, abs=1e-5)


def test_pic_drops_for_shifted_frames(standin):
    image = textured_image()
    shifted = np.stack([np.roll(image, shift, axis=1) for shift in (0, 12, 24, 36)])
    distances = standin(image, shifted)
    assert distances[0] == pytest.approx(0.0, abs=1e-5) and (distances[1:] > 1e-4).all()
    assert pic_from_distances(distances) < 1.0
    other = np.repeat(textured_image(seed=1, size=96)[::-1][None], 4, axis=0)
    assert pic_from_distances(standin(image, other)) < 1.0


def test_embedding_is_centred_and_normalised():
    torch.manual_seed(1)
    model = DreamSim(standin_dreamsim_config("dino_vitb16")).eval()
    x = torch.rand(3, 3, DREAMSIM_IMAGE_SIZE, DREAMSIM_IMAGE_SIZE)
    with torch.no_grad():
        e = model.embed(x)
        d = model(x, x.flip(-1))
    assert e.shape == (3, 64)
    assert torch.allclose(e.mean(-1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert d.shape == (3,) and (d >= 0).all() and (d <= 2).all()


def test_real_dreamsim_architecture_sizes():
    ensemble = dreamsim_config("ensemble")
    assert [b.name for b in ensemble.branches] == ["dino_vitb16", "clip_vitb16", "open_clip_vitb16"]
    assert [b.feature for b in ensemble.branches] == ["cls", "embedding", "embedding"]
    assert [b.vit.activation for b in ensemble.branches] == ["gelu", "quick_gelu", "gelu"]
    assert [b.vit.ln_eps for b in ensemble.branches] == [1e-6, 1e-5, 1e-5]
    clip = DreamSim(dreamsim_config("clip_vitb32")).branches[0]
    assert clip.proj.shape == (768, 512) and clip.ln_pre is not None
    assert clip.patch_embed.proj.kernel_size == (32, 32) and clip.pos_embed.shape == (1, 50, 768)
    params = sum(p.numel() for n, p in clip.named_parameters() if n not in ("proj", "ln_pre.weight", "ln_pre.bias"))
    assert 87_000_000 < params < 89_000_000  # ViT-B/32


def _vit_state(vit, clip_layout):
    state = {k: v.clone() + 0.01 * torch.randn_like(v) for k, v in vit.state_dict().items()}
    if clip_layout:  # DreamSim's converted CLIP checkpoints name ln_pre "pos_drop"
        state = {k.replace("ln_pre.", "pos_drop."): v for k, v in state.items()}
    else:
        state = {k: v for k, v in state.items() if k != "proj"}
    return state


def make_dreamsim_folder(tmp_path, config, rank=4, alpha=8.0):
    """A fake unzipped DreamSim checkpoint with the reference file names and tensor layouts (random values)."""
    model = DreamSim(config)
    folder = tmp_path / "dreamsim_models"
    (folder / "checkpoints").mkdir(parents=True)
    lora_dir = folder / ("ensemble_lora" if config.dreamsim_type == "ensemble" else
                         f"{config.dreamsim_type}_single_lora")
    lora_dir.mkdir()
    base = {}
    for i, (spec, vit) in enumerate(zip(config.branches, model.branches)):
        state = _vit_state(vit, spec.feature == "embedding")
        base[i] = state
        if spec.feature == "cls":
            torch.save(state, folder / "checkpoints" / "dino_vitbase16_pretrain.pth")
        else:
            torch.save({"state_dict": state}, folder / f"{spec.name}_pretrain.pth.tar")
    adapter = {}
    for i, vit in enumerate(model.branches):
        for j in range(len(vit.blocks)):
            for module in ("attn.qkv", "mlp.fc1"):
                weight = base[i][f"blocks.{j}.{module}.weight"]
                prefix = f"base_model.model.extractor_list.{i}.model.blocks.{j}.{module}"
                adapter[f"{prefix}.lora_A.weight"] = torch.randn(rank, weight.shape[1])
                adapter[f"{prefix}.lora_B.weight"] = torch.randn(weight.shape[0], rank)
    torch.save(adapter, lora_dir / "adapter_model.bin")
    (lora_dir / "adapter_config.json").write_text(json.dumps(
        {"r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none", "target_modules": ["qkv", "fc1"]}))
    return folder, base, adapter


def test_convert_dreamsim_folder_merges_lora(tmp_path):
    config = standin_dreamsim_config("ensemble")
    folder, base, adapter = make_dreamsim_folder(tmp_path, config)
    state, dreamsim_type = convert_dreamsim_checkpoint(folder, config=config)
    assert dreamsim_type == "ensemble"
    prefix = "base_model.model.extractor_list.1.model.blocks.0.attn.qkv"
    expected = base[1]["blocks.0.attn.qkv.weight"] + 2.0 * adapter[f"{prefix}.lora_B.weight"] @ \
        adapter[f"{prefix}.lora_A.weight"]  # scale = lora_alpha / r = 8 / 4
    assert torch.allclose(state["branches.1.blocks.0.attn.qkv.weight"], expected, atol=1e-5)
    assert torch.equal(state["branches.1.ln_pre.weight"], base[1]["pos_drop.weight"])
    assert torch.equal(state["branches.0.blocks.0.attn.proj.weight"], base[0]["blocks.0.attn.proj.weight"])

    # the single-file format round trip, and loading the folder directly, give the same model
    path = save_dreamsim(state, dreamsim_type, tmp_path / "dreamsim_ensemble.safetensors")
    from_file, from_folder = load_dreamsim(path, config=config), load_dreamsim(folder, config=config)
    x = torch.rand(2, 3, DREAMSIM_IMAGE_SIZE, DREAMSIM_IMAGE_SIZE)
    with torch.no_grad():
        assert torch.allclose(from_file.embed(x), from_folder.embed(x), atol=1e-6)


def test_dino_backbone_from_the_full_dino_checkpoint(tmp_path):
    config = standin_dreamsim_config("dino_vitb16")
    folder, _, _ = make_dreamsim_folder(tmp_path, config)
    from_hub, _ = convert_dreamsim_checkpoint(folder, config=config)
    hub_file = folder / "checkpoints" / "dino_vitbase16_pretrain.pth"
    backbone = torch.load(hub_file)
    head = {"backbone.head.mlp.0.weight": torch.zeros(2, 2)}
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in backbone.items()}, **head},
                "student": {f"module.backbone.{k}": v + 1 for k, v in backbone.items()}},
               folder / "dino_vitb16_pretrain.pth")
    hub_file.unlink()
    from_teacher, _ = convert_dreamsim_checkpoint(folder, config=config)
    assert from_teacher.keys() == from_hub.keys()
    assert all(torch.equal(from_teacher[k], from_hub[k]) for k in from_hub)
    (folder / "dino_vitb16_pretrain.pth").unlink()
    with pytest.raises(CheckpointError, match="dino_vitbase16_pretrain.pth"):
        convert_dreamsim_checkpoint(folder, config=config)


def test_dreamsim_file_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an unzipped DreamSim checkpoint"):
        convert_dreamsim_checkpoint(tmp_path / "empty")
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="convert-dreamsim"):
        load_dreamsim(tmp_path / "x.safetensors")
    config = standin_dreamsim_config("dino_vitb16")
    state, _ = convert_dreamsim_checkpoint(make_dreamsim_folder(tmp_path, config)[0], config=config)
    path = save_dreamsim(state, "dino_vitb16", tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="does not match DreamSim dino_vitb16"):
        load_dreamsim(path)  # a stand-in-sized file is not the real architecture


def test_full_size_dreamsim_forward():
    torch.manual_seed(0)
    distance = DreamSimDistance(DreamSim(dreamsim_config("dino_vitb16")))
    image = textured_image(size=256)
    d = distance(image, np.stack([image, np.roll(image, 40, axis=0)]))
    assert d[0] == pytest.approx(0.0, abs=1e-5) and d[1] > 0


def test_lpips_standin(tmp_path):
    torch.manual_seed(0)
    model = LPIPS()
    lins = {f"lin{k}.model.1.weight": torch.rand_like(p) for k, p in enumerate(model.lins)}
    alex = {f"features.{i}.{n}": torch.randn_like(getattr(conv, n)) * 0.05
            for i, conv in model.features.items() for n in ("weight", "bias")}
    alex["classifier.1.weight"] = torch.zeros(4096, 9216)[:2]  # ignored
    torch.save(lins, tmp_path / "alex.pth")
    torch.save(alex, tmp_path / "alexnet-owt-7be5be79.pth")
    loaded = load_lpips(tmp_path / "alex.pth", tmp_path / "alexnet-owt-7be5be79.pth")
    assert torch.equal(loaded.lins[2], lins["lin2.model.1.weight"])
    distance = LPIPSDistance(loaded)
    assert distance.standin and "stand-in" in distance.label
    image = textured_image()
    d = distance(image, np.stack([image, np.roll(image, 20, axis=1)]))
    assert d[0] == pytest.approx(0.0, abs=1e-7) and d[1] > 0
    with pytest.raises(CheckpointError, match="alex.pth"):
        load_lpips(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alexnet-owt-7be5be79.pth")
