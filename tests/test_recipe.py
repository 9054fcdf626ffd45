"""The small-model recipe: every stage runs (a few steps each) and a finished run is not redone."""

import json

import pytest

from dynamicrafter.cli import main
from dynamicrafter.errors import ConfigError
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe.config import DEFAULT_BUDGET, TINY
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
    assert config.defaults == TINY.defaults  # the released layout's model: 32 x 32, strides 1-3, CFG 7.5


def test_a_finished_run_is_skipped(quick_run, capsys):
    before = (quick_run / "timings.json").read_text()
    assert main(["recipe", "tiny", "--quick", "--no-ablations", "--out", str(quick_run)]) == 0
    out = capsys.readouterr().out
    assert "stage_iii: done" in out and "t2v: done" in out
    assert (quick_run / "timings.json").read_text() == before


def test_report_runs_on_the_quick_models(quick_run, tmp_path):
    # --no-tracker: the quick models' noise videos are the tracker's slowest case (its path is tested below)
    assert main(["recipe", "report", "--quick", "--no-tracker", "--out", str(quick_run), "-o",
                 str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| full |" in text and "motion accuracy (flow)" in text and "(tracker) |" not in text.split("Lambda")[0]
    assert (tmp_path / "report" / "figure.png").stat().st_size > 0


def test_report_reads_motion_with_the_tracker(monkeypatch):
    """evaluate_variant with the data set: the tracker reads the real held-out clips as their motion and rejects the
    same clips played backwards; the report prints its column and per-motion table."""
    from dynamicrafter.recipe import report as R
    from dynamicrafter.recipe.tiny import RECIPE_DATA

    pipe = DynamiCrafterPipeline.from_checkpoint(device="cpu")  # the shipped model embeds the frames for PIC*
    clips = R.held_out_clips(RECIPE_DATA, 1)
    settings = R.EvalSettings(clips_per_motion=1)
    monkeypatch.setattr(R, "generate", lambda pipe, clip, settings, **kw: clip.frames)  # "generated" = the real clip
    real = R.evaluate_variant("real clips", pipe, clips, settings, data=RECIPE_DATA)
    monkeypatch.setattr(R, "generate", lambda pipe, clip, settings, **kw: clip.frames[::-1].copy())
    backwards = R.evaluate_variant("backwards", pipe, clips, settings, data=RECIPE_DATA)
    assert real.tracked and real.tracker_accuracy >= 8 / 9, [(s.motion, s.tracked) for s in real.scores]
    assert backwards.tracker_accuracy <= 1 / 9, [(s.motion, s.tracked) for s in backwards.scores]  # only "still"
    assert not R.evaluate_variant("flow only", pipe, clips[:1], settings).tracked
    text = R.markdown_report([real, backwards], 1.0, [], [], settings, len(RECIPE_DATA.motions))
    assert f"| real clips | {real.accuracy:.3f} | {real.interval('tracker_correct').format(3)} |" in text
    assert "Per-motion accuracy (tracker):" in text
    # conformity: the real clip starts on the input (IoU near 1, colour error of a few levels); played backwards it
    # starts on the last frame, where the object has moved, turned or changed size
    assert real.mean("first_iou") > 0.9 and real.mean("first_colour_error") < 10
    assert backwards.mean("first_iou") < real.mean("first_iou") - 0.2
    table = "\n".join(R.conformity_markdown([real, backwards], []))
    assert f"| real clips | {real.interval('first_colour_error').format(1)} |" in table
    # the ablation table: backwards - real, paired by clip; the motion difference is resolved (bold), and the
    # swapped column is empty without a swapped-caption test
    rows = R.ablation_markdown([real, backwards], {}, reference="real clips")
    row = next(line for line in rows if line.startswith("| backwards |"))
    motion, swapped = row.split(" | ")[1:3]
    assert motion.startswith("**-0.") and swapped == "-"


def test_ablations_share_the_run_and_drop_one_stream_each(quick_run):
    assert main(["recipe", "tiny", "--quick", "--out", str(quick_run)]) == 0  # the same run, now with the ablations
    timings = json.loads((quick_run / "timings.json").read_text())
    assert list(timings)[-2:] == ["no_context", "no_vdg_iii"]
    streams = {name: variant_config(DynamiCrafterPipeline.from_checkpoint(
        quick_run / name / "model.safetensors", device="cpu").config) for name in ("stage_iii", "no_context",
                                                                                   "no_vdg_iii")}
    assert streams == {"stage_iii": "context stream + VDG", "no_context": "VDG", "no_vdg_iii": "context stream"}


def _temporal_weights(path) -> dict:
    from dynamicrafter.checkpoint import load_model
    from dynamicrafter.training.model_setup import parameter_groups

    model = load_model(path)
    groups = parameter_groups(model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if groups.get(n) == "temporal"}


def _temporal_changed(run, before: str, after: str) -> bool:
    import torch

    old, new = (_temporal_weights(run / stage / "model.safetensors") for stage in (before, after))
    assert old and old.keys() == new.keys()
    return any(not torch.equal(old[n], new[n]) for n in old)


def test_centred_data_and_trained_temporal_layers(quick_run, tmp_path):
    """--data centred trains on the 64 x 64 layout without the first-frame shortcut (and the model's defaults say
    so); --train-temporal lets stages ii and iii change the temporal layers that the paper's recipe keeps frozen."""
    from dynamicrafter.recipe.tiny import CENTRED_DATA, recipe_data

    out = tmp_path / "centred"
    assert main(["recipe", "tiny", "--quick", "--no-ablations", "--data", "centred", "--train-temporal",
                 "--out", str(out)]) == 0
    assert recipe_data(out).layout == "centred" and recipe_data(out).height == CENTRED_DATA.height == 64
    assert json.loads((out / "recipe.json").read_text())["train_temporal"] is True
    config = DynamiCrafterPipeline.from_checkpoint(out / "stage_iii" / "model.safetensors", device="cpu").config
    assert (config.defaults.height, config.defaults.width, config.defaults.frame_stride_range) == (64, 64, (1, 2))
    assert config.defaults.guidance_scale == 3.0  # measured on the centred data (OVERFIT.md)
    assert _temporal_changed(out, "stage_i", "stage_ii") and _temporal_changed(out, "stage_ii", "stage_iii")
    # the paper's recipe (the default): stages ii and iii leave the temporal layers as the base learned them
    assert not _temporal_changed(quick_run, "stage_i", "stage_ii")
    assert not _temporal_changed(quick_run, "stage_ii", "stage_iii")
    assert recipe_data(quick_run).layout == "released"


def test_a_run_folder_is_not_resumed_with_other_data_or_layers(quick_run, capsys):
    before = (quick_run / "recipe.json").read_text()
    for flags in (["--data", "centred"], ["--train-temporal"]):
        assert main(["recipe", "tiny", "--quick", "--no-ablations", "--out", str(quick_run), *flags]) == 2
        err = capsys.readouterr().err
        assert "holds a recipe run on other settings" in err and "choose another --out" in err
    assert (quick_run / "recipe.json").read_text() == before  # nothing written


def test_swapped_caption_section_lists_each_variant():
    import numpy as np

    from dynamicrafter.recipe.evaluation import swapped_markdown
    from dynamicrafter.recipe.rescore import SwappedCaptionResult

    motions = ("left", "right", "still")
    table = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 2]])
    result = SwappedCaptionResult(motions, table, np.array([0, 0, 0]), 0, 5 / 6, 2, {7: 1.0, 9: 2 / 3})
    text = swapped_markdown({"full": result, "no VDG": result})
    assert "| full | **0.833** [0.667, 1.000] | 2 | 6 |" in text and "| no VDG | **0.833** [0.667, 1.000] |" in text
    assert text.count("| prompt names \\ video shows |") == 2
    assert swapped_markdown({}) == ""


def test_steps_scale_multiplies_the_diffusion_stages_only():
    scaled = DEFAULT_BUDGET.scaled(2.5)
    assert scaled.t2v_steps == round(2.5 * DEFAULT_BUDGET.t2v_steps)
    assert scaled.stage3_steps == round(2.5 * DEFAULT_BUDGET.stage3_steps)
    assert (scaled.vae_steps, scaled.clip_steps, scaled.lr) == (DEFAULT_BUDGET.vae_steps, DEFAULT_BUDGET.clip_steps,
                                                               DEFAULT_BUDGET.lr)
    with pytest.raises(ConfigError, match="steps scale must be positive, got -1"):
        DEFAULT_BUDGET.scaled(-1)


def test_clip_loss_hard_negatives_must_be_beaten():
    """A caption that matches its clip and the clip's reverse equally well scores worse with hard negatives."""
    import torch

    from dynamicrafter.recipe.pretrain import clip_loss

    torch.manual_seed(0)
    video, text = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(0.0)
    plain, _ = clip_loss(video, text, scale)
    reversed_equal, _ = clip_loss(video, text, scale, a_negatives=video.clone())  # reverse = clip: a tie
    reversed_far, _ = clip_loss(video, text, scale, a_negatives=-text)  # reverse points away from the caption
    assert reversed_equal > plain  # a reverse as close as the clip itself costs the caption half its probability
    assert reversed_equal > reversed_far
    # perfectly separated pairs with the hard negatives far away: the loss goes to zero only if they are beaten
    eye = torch.eye(4, 8)
    assert clip_loss(eye, eye, torch.tensor(4.0), a_negatives=-eye, b_negatives=-eye)[0] < 1e-3
    assert clip_loss(eye, eye, torch.tensor(4.0), a_negatives=eye, b_negatives=eye)[0] > 0.69  # log 2: a tie


def test_trimmed_padding_keeps_the_text_towers_pooled_features():
    import torch

    from dynamicrafter.models.tokenizer import get_tokenizer
    from dynamicrafter.recipe import pretrain
    from dynamicrafter.recipe.config import TINY

    torch.manual_seed(0)
    tower = pretrain.full_text_tower(TINY.text_encoder).eval()
    tokens = get_tokenizer()(["a red square on a grey background moves to the left", "a star spins"])
    trimmed = pretrain.trim_padding(tokens)
    assert trimmed.shape[1] < tokens.shape[1] and (trimmed != 0).sum() == (tokens != 0).sum()
    with torch.no_grad():
        full, short = tower(input_ids=tokens).pooler_output, tower(input_ids=trimmed).pooler_output
    assert torch.allclose(full, short, atol=1e-5)


def test_motion_captions_name_every_other_motion_in_the_same_words():
    import numpy as np

    from dynamicrafter.data.synthetic import MOTIONS, SyntheticVideoDataset
    from dynamicrafter.recipe.pretrain import motion_captions
    from dynamicrafter.recipe.tiny import DATA_PRESETS

    data = SyntheticVideoDataset(DATA_PRESETS["centred"], "train")
    rng = np.random.default_rng(0)
    for i in range(10):
        scene = data.clip(i).scene
        caption, others = motion_captions(scene, rng)
        assert len(others) == len(MOTIONS) - 1 and len({caption, *others}) == len(MOTIONS)
        if not scene.motion_only_caption:  # the object's words are the same in all nine
            assert len({text.split()[1] for text in [caption, *others]}) == 1


def test_the_text_motion_labels_name_the_motion_of_each_encoded_caption():
    import numpy as np

    from dynamicrafter.data import synthetic as syn
    from dynamicrafter.recipe.pretrain import caption_motions, motion_captions
    from dynamicrafter.recipe.tiny import DATA_PRESETS

    data = syn.SyntheticVideoDataset(DATA_PRESETS["centred"], "train")
    clips = [data.clip(i) for i in range(5)]
    labels = caption_motions(clips).view(len(syn.MOTIONS), len(clips))  # (9, b): own motion, then the 8 others
    for i, clip in enumerate(clips):
        assert sorted(labels[:, i].tolist()) == list(range(len(syn.MOTIONS)))
        caption, others = motion_captions(clip.scene, np.random.default_rng(i))
        seed = int(np.random.default_rng(i).integers(2**31))  # the wording seed motion_captions drew
        for text, label in zip([caption, *others], labels[:, i].tolist()):
            assert text == syn.compose_caption(np.random.default_rng(seed), syn.MOTIONS[label], clip.scene.main,
                                               clip.scene.background, clip.scene.motion_only_caption)


def test_the_towers_motion_reading_names_one_of_the_motions_per_clip(tmp_path):
    import torch

    from dynamicrafter.data import synthetic as syn
    from dynamicrafter.recipe import pretrain
    from dynamicrafter.recipe.config import TINY
    from dynamicrafter.recipe.report import held_out_clips
    from dynamicrafter.recipe.tiny import DATA_PRESETS

    torch.manual_seed(0)
    text, image = pretrain.full_text_tower(TINY.text_encoder), pretrain.CLIPImageEncoder(TINY.image_encoder)
    heads = pretrain.ContrastiveHeads.for_towers(TINY.text_encoder, TINY.image_encoder)
    state = {"modules": {"text": text.state_dict(), "image": image.state_dict(), "heads": heads.state_dict()}}
    torch.save(state, tmp_path / "state.pt")
    towers = pretrain.load_towers(tmp_path / "state.pt", TINY.text_encoder, TINY.image_encoder)
    clips = held_out_clips(DATA_PRESETS["centred"], 1, min_stride=1)
    choices = pretrain.tower_motion_choices(*towers, clips)
    assert [true for true, _ in choices] == list(syn.MOTIONS)
    assert all(chosen in syn.MOTIONS for _, chosen in choices)
    assert choices == pretrain.tower_motion_choices(*towers, clips)  # the caption wordings are seeded


def test_the_patch_readout_separates_mirrored_patterns_a_shared_average_cannot():
    """Left edge moving up and right edge down, against the mirror image: the same patch pairs in other places."""
    import torch

    from dynamicrafter.recipe.pretrain import PatchReadout

    torch.manual_seed(0)
    readout = PatchReadout(token_width=8, num_patches=2, embed_dim=6)
    up, down = torch.randn(8), torch.randn(8)
    first = torch.zeros(2, 2, 8)  # (b, n, w): two patterns, two patches each, from the same still frame
    second = torch.stack([torch.stack([up, down]), torch.stack([down, up])])  # pattern 1 and its mirror
    shared = readout.local(torch.cat([first, second], -1)).mean(1)  # (2, hidden): one map averaged over patches
    assert torch.allclose(shared[0], shared[1], atol=1e-6)  # the average cannot tell them apart
    per_position = readout(first, second)  # (2, 6)
    assert per_position.shape == (2, 6)
    assert (per_position[0] - per_position[1]).norm() > 0.1 * per_position.norm(dim=1).min()


def test_rotation_pairs_show_an_unambiguous_turn():
    from dynamicrafter.data import synthetic as syn
    from dynamicrafter.recipe.pretrain import first_last, rotation_gap_pair
    from dynamicrafter.recipe.report import held_out_clips
    from dynamicrafter.recipe.tiny import DATA_PRESETS

    half_symmetry = syn.MAX_ROTATION_FRACTION * min(syn.SYMMETRY_DEGREES.values())
    for clip in held_out_clips(DATA_PRESETS["centred"], 2, min_stride=1):
        first, second = rotation_gap_pair(clip)
        if clip.scene.motion.startswith("rotate"):
            assert first == 0 and second >= 1
            assert abs(clip.scene.rate) * second <= half_symmetry  # turned by less than half the symmetry angle
            assert abs(clip.scene.rate) * (len(clip.frames) - 1) > half_symmetry  # the last frame could hide it
        else:
            assert (first, second) == first_last(clip)


def test_every_data_preset_has_a_budget_and_a_cfg_scale():
    from dynamicrafter.recipe.config import BUDGET_PRESETS
    from dynamicrafter.recipe.tiny import DATA_PRESETS, GUIDANCE_BY_LAYOUT

    assert set(BUDGET_PRESETS) == set(DATA_PRESETS) == set(GUIDANCE_BY_LAYOUT)
    assert BUDGET_PRESETS["centred"].video_batch == 8 and BUDGET_PRESETS["released"] == DEFAULT_BUDGET


def test_evaluation_passes_the_sampling_settings_to_the_pipeline():
    """Text-only guidance (image_guidance_scale 1) reaches the pipeline; unset settings keep the model's defaults."""
    from types import SimpleNamespace

    import numpy as np

    from dynamicrafter.data import synthetic as syn
    from dynamicrafter.recipe.report import EvalSettings, generate

    calls = []

    def pipe(image, prompt, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(frames=np.zeros((1, 2, 4, 4, 3), np.float32))

    clip = syn.SyntheticVideoDataset(syn.SyntheticConfig(num_clips=4, frames=2, height=8, width=8), "train").clip(0)
    generate(pipe, clip, EvalSettings(guidance_scale=3.0, image_guidance_scale=1.0))
    generate(pipe, clip, EvalSettings(guidance_scale=3.0))
    assert calls[0]["image_guidance_scale"] == 1.0 and calls[0]["guidance_scale"] == 3.0
    assert "image_guidance_scale" not in calls[1] and "eta" not in calls[1]


def test_the_reports_swapped_test_caches_each_variant_in_its_run_folders_name(tmp_path, monkeypatch):
    """recipe report --cache: the swapped-caption videos of each variant go to CACHE/<run folder>, where a rescore
    --cache of the same model is read back instead of animated again."""
    from dataclasses import replace

    import torch

    from dynamicrafter.config import config_for_tests
    from dynamicrafter.recipe import evaluation, rescore
    from dynamicrafter.recipe.report import EvalSettings, held_out_clips
    from dynamicrafter.recipe.tiny import RECIPE_DATA
    from dynamicrafter.testing import write_random_checkpoint

    torch.set_flush_denormal(True)
    data = replace(RECIPE_DATA, frames=4, height=16, width=16)
    path = write_random_checkpoint(config_for_tests(height=16, width=16, num_frames=4),
                                   tmp_path / "run" / "stage_iii" / "model.safetensors")
    clips = held_out_clips(data, 1)[:1]
    settings = EvalSettings(clips_per_motion=1, steps=2)
    first = evaluation.swapped_tests({"full": path}, clips, settings, data, 1, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "stage_iii").iterdir()] == [f"{clips[0].scene.clip_id:08d}.npy"]

    def fail(*args, **kwargs):
        raise AssertionError("a cached video was animated again")

    monkeypatch.setattr(rescore, "generate", fail)
    again = evaluation.swapped_tests({"full": path}, clips, settings, data, 1, tmp_path / "cache")
    assert (again["full"].table == first["full"].table).all() and again["full"].accuracy == first["full"].accuracy


def _card_inputs(tmp_path, layout: str, swapped: bool):
    """A recipe run folder and report results as the recipe writes them (figures invented), for the model card."""
    from dynamicrafter.config import config_for_tests
    from dynamicrafter.recipe.evaluation import BASE_VARIANT
    from dynamicrafter.recipe.tiny import DATA_PRESETS
    from dynamicrafter.testing import write_random_checkpoint

    run, report = tmp_path / "run", tmp_path / "report"
    for folder in (run / "autoencoder", run / "clip", report):
        folder.mkdir(parents=True)
    data = DATA_PRESETS[layout]
    budget = DEFAULT_BUDGET
    (run / "recipe.json").write_text(json.dumps({"data": {**data.__dict__}, "budget": budget.__dict__,
                                                 "train_temporal": layout == "centred"}, default=list))
    (run / "timings.json").write_text(json.dumps({"t2v": 60.0, "stage_ii": 60.0, "stage_iii": 120.0}))
    (run / "autoencoder" / "result.json").write_text(json.dumps({"scale_factor": 0.4, "psnr_db": 25.0}))
    (run / "clip" / "result.json").write_text(json.dumps({"accuracy": 0.9}))
    motions = ("left", "right", "still")

    def variant(name, accuracy):
        return {"name": name, "accuracy": accuracy, "tracker_accuracy": accuracy + 0.1, "seconds_per_video": 3.0,
                "per_motion": dict.fromkeys(motions, accuracy), "per_motion_tracker": dict.fromkeys(motions, 0.5),
                "means": {"conformity": 0.7, "first_psnr": 20.0, "flicker": 4.0}}

    results = {"variants": [variant(BASE_VARIANT, 0.1), variant("full", 0.3)], "ground_truth_classifier_accuracy": 0.98,
               "lambda_sweep": [{"lambda": 0.0, "motion_magnitude": 0.3}, {"lambda": 1.0, "motion_magnitude": 0.5}],
               "stride_sweep": [{"frame_stride": 1.0, "motion_magnitude": 0.4}]}
    if swapped:
        results["swapped"] = {"full": {"accuracy": 0.475, "motions": list(motions), "other": [0, 1, 0],
                                       "table": [[2, 0, 0], [0, 1, 0], [0, 0, 1]], "frame_accuracy": {"3": 0.5}},
                              BASE_VARIANT: {"accuracy": 0.049, "motions": list(motions), "other": [2, 2, 2],
                                             "table": [[0, 0, 0]] * 3}}
    (report / "results.json").write_text(json.dumps(results))
    weights = write_random_checkpoint(config_for_tests(), tmp_path / "weights.safetensors")
    return run, report, weights


def test_the_model_card_states_the_layout_and_the_swapped_caption_test(tmp_path):
    from dynamicrafter.recipe.card import write_card

    run, report, weights = _card_inputs(tmp_path, "centred", swapped=True)
    text = write_card(run, report, weights, tmp_path / "MODEL_CARD.md").read_text()
    assert "Animates 64 x 64 images" in text and "`--frame-stride` 1-2" in text and "CENTRED_DATA" in text
    assert "by `dynamicrafter recipe tiny --data centred --train-temporal`" in text
    assert "does not follow the prompt's motion reliably** (48%, swapped-caption accuracy" in text
    assert "Per named motion: left 100%, right 50%, still 100%." in text
    assert "reaches 5%" in text and "train the temporal layers too" in text
    assert "| stage_ii | (ii) P + spatial + temporal layers, video |" in text
    assert "| full | 0.300 | 0.400 | 0.475 |" in text and "swapped-caption accuracy | input conformity" in text


def test_the_model_card_of_the_released_layout_keeps_its_measures(tmp_path):
    from dynamicrafter.recipe.card import write_card

    run, report, weights = _card_inputs(tmp_path / "r", "released", swapped=False)
    text = write_card(run, report, weights, tmp_path / "MODEL_CARD.md").read_text()
    assert "Animates 32 x 32 images" in text and "`--frame-stride` 1-3" in text and "RECIPE_DATA" in text
    assert "by `dynamicrafter recipe tiny`, at commit" in text
    assert "(40%, motion accuracy on held-out clips (tracker); chance 33%" in text
    assert "| stage_ii | (ii) P + spatial layers, video |" in text and "swapped-caption" not in text
