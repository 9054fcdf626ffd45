import dataclasses

import pytest

from dynamicrafter.config import PRESETS, ModelConfig, config_for_tests, config_from_yaml, resolve_config
from dynamicrafter.errors import ConfigError
from helpers import OFFICIAL_CONFIGS


@pytest.mark.parametrize(("yaml_name", "preset"), [
    ("inference_256_v1.0.yaml", "256"),
    ("inference_512_v1.0.yaml", "512"),
    ("inference_1024_v1.0.yaml", "1024"),
])
def test_released_inference_yaml_equals_preset(yaml_name, preset):
    config = config_from_yaml(OFFICIAL_CONFIGS / yaml_name)
    expected = PRESETS[preset]
    assert config.unet == expected.unet
    assert config.resampler == expected.resampler
    assert config.vae == expected.vae
    assert config.schedule == expected.schedule
    assert config.fs_condition_type == expected.fs_condition_type
    assert (config.defaults.height, config.defaults.width) == (expected.defaults.height, expected.defaults.width)


@pytest.mark.parametrize("yaml_name", ["training_512_v1.0.yaml", "training_1024_v1.0.yaml",
                                       "training_512_interp_v1.0.yaml"])
def test_released_training_yaml_reads(yaml_name):
    config = config_from_yaml(OFFICIAL_CONFIGS / yaml_name)
    assert config.schedule.parameterization == "v"
    assert config.interp_mode == ("interp" in yaml_name)
    assert config.uncond_prob == 0.05


def test_preset_differences_match_the_reference():
    assert PRESETS["256"].unet.image_cross_attention_scale_learnable
    for name in ("512", "1024", "512_interp"):
        assert not PRESETS[name].unet.image_cross_attention_scale_learnable
        assert PRESETS[name].schedule.use_dynamic_rescale and PRESETS[name].schedule.rescale_betas_zero_snr
    assert PRESETS["1024"].schedule.base_scale == 0.3
    assert PRESETS["512"].schedule.base_scale == 0.7
    d = {name: PRESETS[name].defaults for name in PRESETS}
    assert (d["256"].frame_stride, d["512"].frame_stride, d["1024"].frame_stride, d["512_interp"].frame_stride) == (
        3, 24, 10, 5)
    assert d["256"].timestep_spacing == "uniform" and d["512"].timestep_spacing == "uniform_trailing"
    assert d["256"].guidance_rescale == 0 and d["1024"].guidance_rescale == 0.7
    assert (d["1024"].height, d["1024"].width) == (576, 1024)


def test_config_dict_round_trip():
    for config in [*PRESETS.values(), config_for_tests()]:
        assert ModelConfig.from_dict(dataclasses.asdict(config)) == config


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown model preset|unknown config"):
        resolve_config("768")
    bad = tmp_path / "bad.yaml"
    bad.write_text((OFFICIAL_CONFIGS / "inference_256_v1.0.yaml").read_text().replace(
        "use_linear: true", "use_linear: true\n        use_scale_shift_norm: true"))
    with pytest.raises(ConfigError, match="use_scale_shift_norm"):
        config_from_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        config_from_yaml(tmp_path / "missing.yaml")
