"""The full-size networks built on the meta device match the released tensor names and shapes one to one."""

import pytest
import torch

from dynamicrafter import keymap as K
from dynamicrafter.checkpoint import build_empty, components, convert_component, official_state_dict
from dynamicrafter.config import PRESETS
from helpers import read_tsv


@pytest.mark.parametrize("name", ["256", "512", "1024", "512_interp"])
def test_full_model_matches_released_names_and_shapes(name):
    model = build_empty(PRESETS[name])
    ours = {k: tuple(v.shape) for k, v in official_state_dict(model, include_unused=True).items()}
    released = read_tsv(name)
    assert set(ours) == set(released)
    assert {k: s for k, s in ours.items() if released[k] != s} == {}


@pytest.mark.parametrize("name", ["256", "512"])
def test_released_names_convert_to_every_parameter_once(name):
    config = PRESETS[name]
    model = build_empty(config)
    released = {k: torch.empty(s, device="meta") for k, s in read_tsv(name).items()}
    for comp in components(config):
        tensors, _ = convert_component(released, comp, config)
        expected = model.component(comp.name).state_dict()
        assert set(tensors) == set(expected), comp.name
        assert all(tuple(tensors[k].shape) == tuple(expected[k].shape) for k in expected), comp.name


def test_name_maps_are_bijective_on_released_names():
    released = read_tsv("256")
    for comp in components(PRESETS["256"]):
        for key in released:
            if key.startswith(comp.official_prefix) and "in_proj" not in key:
                rel = key[len(comp.official_prefix):]
                assert comp.keymap.to_official(comp.keymap.to_ours(rel)) == rel


def test_legacy_framestride_name_is_read():
    assert K.UNET_KEYMAP.to_ours("framestride_embed.0.weight") == "fs_embed.linear_1.weight"
    assert K.UNET_KEYMAP.to_official("fs_embed.linear_1.weight") == "fps_embedding.0.weight"
    assert K.UNET_KEYMAP.to_ours("input_blocks.1.0.temopral_conv.conv1.2.weight") == (
        "input_blocks.0.0.temporal_conv.layers.0.conv.weight")
    assert K.UNET_KEYMAP.to_ours("input_blocks.3.0.op.weight") == "input_blocks.2.0.conv.weight"
