"""The small-model recipe: every stage runs (a few steps each) and a finished run is not redone."""

import json

import pytest

from dynamicrafter.cli import main
from dynamicrafter.errors import ConfigError
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe.config import DEFAULT_BUDGET
from dynamicrafter.recipe.tiny import variant_config


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "tiny"
    assert main(["recipe", "tiny", "--quick", "--no-ablations", "--out", str(out)]) == 0
    return out


def test_every_stage_runs_and_exports(quick_run):
    timings = json.loads((quick_run / "timings.json").read_text())
    assert list(timings) == ["autoencoder", "clip", "latents", "base_init", "t2v", "stage_i", "stage_ii",
                             "stage_iii", "stage_iii_multi"]
    pipe = DynamiCrafterPipeline.from_checkpoint(quick_run / "stage_iii_multi" / "model.safetensors", device="cpu")
    config = pipe.config
    assert config.unet.in_channels == 8 and config.unet.image_cross_attention
    assert config.vae.scale_factor != 1.0  # measured from the trained autoencoder


def test_a_finished_run_is_skipped(quick_run, capsys):
    before = (quick_run / "timings.json").read_text()
    assert main(["recipe", "tiny", "--quick", "--no-ablations", "--out", str(quick_run)]) == 0
    out = capsys.readouterr().out
    assert "stage_iii: done" in out and "t2v: done" in out
    assert (quick_run / "timings.json").read_text() == before


def test_report_runs_on_the_quick_models(quick_run, tmp_path):
    assert main(["recipe", "report", "--quick", "--out", str(quick_run), "-o", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| full |" in text and "motion accuracy" in text
    assert (tmp_path / "report" / "figure.png").stat().st_size > 0


def test_ablations_share_the_run_and_drop_one_stream_each(quick_run):
    assert main(["recipe", "tiny", "--quick", "--out", str(quick_run)]) == 0  # the same run, now with the ablations
    timings = json.loads((quick_run / "timings.json").read_text())
    assert list(timings)[-2:] == ["no_context", "no_vdg_iii"]
    streams = {name: variant_config(DynamiCrafterPipeline.from_checkpoint(
        quick_run / name / "model.safetensors", device="cpu").config) for name in ("stage_iii", "no_context",
                                                                                   "no_vdg_iii")}
    assert streams == {"stage_iii": "context stream + VDG", "no_context": "VDG", "no_vdg_iii": "context stream"}


def test_steps_scale_multiplies_the_diffusion_stages_only():
    scaled = DEFAULT_BUDGET.scaled(2.5)
    assert scaled.t2v_steps == round(2.5 * DEFAULT_BUDGET.t2v_steps)
    assert scaled.stage3_steps == round(2.5 * DEFAULT_BUDGET.stage3_steps)
    assert (scaled.vae_steps, scaled.clip_steps, scaled.lr) == (DEFAULT_BUDGET.vae_steps, DEFAULT_BUDGET.clip_steps,
                                                               DEFAULT_BUDGET.lr)
    with pytest.raises(ConfigError, match="steps scale must be positive, got -1"):
        DEFAULT_BUDGET.scaled(-1)
