"""``dynamicrafter recipe report``: the held-out evaluation of the recipe's models, written as REPORT.md +
figure.png + results.json (see :mod:`.report` for the measures)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dynamicrafter.errors import UserError
from dynamicrafter.media import atomic_path
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe import report as R
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.tiny import recipe_data, variant_config
from dynamicrafter.utils import process_map

# report name -> the recipe's run folder; "full" and the two ablations had the same optimisation steps. The base
# text-to-video model sees no image (its PIC and first-frame figures only show that): its motion accuracy is the
# motion prior the image stages start from. The shipped model comes last.
BASE_VARIANT = "base text-to-video (text only)"
VARIANTS = {BASE_VARIANT: "t2v", "full": "stage_iii", "no context stream": "no_context",
            "no VDG": "no_vdg_iii", "shipped (full + interpolation steps)": "stage_iii_multi"}


def _pipe(path: Path) -> DynamiCrafterPipeline:
    pipe = DynamiCrafterPipeline.from_checkpoint(path, device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _evaluate_variants(models: dict[str, Path], clips: list, settings: R.EvalSettings, tracked, examples: list
                       ) -> tuple[list[R.VariantResult], list, list[str]]:
    """Every trained variant on the held-out clips; sample rows of the ablations for the figure."""
    results, sheets, variant_notes = [], [], []
    for name, path in models.items():
        if not path.is_file():
            continue
        pipe = _pipe(path)
        variant_notes.append(f"* {name}: `{path}` ({variant_config(pipe.config)})")
        results.append(R.evaluate_variant(name, pipe, clips, settings, data=tracked))
        for clip in examples[:3] if name in ("no context stream", "no VDG") else []:
            sheets.append((f"{name}: {clip.scene.caption}", R.generate(pipe, clip, settings)))
    return results, sheets, variant_notes


def swapped_tests(models: dict[str, Path], clips: list, settings: R.EvalSettings, data, per_motion: int,
                  cache: Path | None = None) -> dict:
    """The swapped-caption test of every variant (text-based motion control): the first ``per_motion`` held-out
    frames of each motion, each animated with all motion prompts and read by the tracker. With ``cache`` each
    variant's videos are kept in ``cache/<its run folder>`` (the layout of ``rescore --cache``: a rescore of the same
    model and settings is reused, an interrupted report resumes)."""
    from dynamicrafter.recipe.rescore import swapped_caption_test

    chosen = [c for i, c in enumerate(clips) if i % settings.clips_per_motion < per_motion]
    return {name: swapped_caption_test(_pipe(path), chosen, data, settings,
                                       cache / path.parent.name if cache is not None else None)
            for name, path in models.items() if path.is_file()}


def swapped_markdown(results: dict) -> str:
    """Accuracy per variant, then each variant's confusion table."""
    from dynamicrafter.recipe.rescore import confusion_markdown

    if not results:
        return ""
    lines = ["", "Text-based motion control, the swapped-caption test (each held-out first frame animated with every "
             "motion prompt; share of videos showing the motion the prompt names, chance 1/9):", "",
             "| variant | swapped-caption accuracy [95% bootstrap interval, first frames resampled] | first frames | "
             "videos |",
             "|---|---|---|---|"]
    lines += [f"| {name} | **{r.accuracy:.3f}** {r.interval().bracket(3)} | {r.first_frames} | "
              f"{int(r.table.sum() + r.other.sum())} |" for name, r in results.items()]
    for name, r in results.items():
        lines += ["", f"{name}:", "", *confusion_markdown(r)]
    return "\n".join(lines) + "\n"


def autoencoder_ceiling(pipe: DynamiCrafterPipeline, clips: list, data) -> list:
    """The tracker's conformity of the autoencoder's reconstructions of the real clips (what a perfect generator
    could reach through this autoencoder)."""
    from dynamicrafter.recipe.validate_tracker import autoencode

    videos = autoencode(pipe, [c.frames for c in clips])
    return process_map(T.conformity, [(v, c.scene, data) for c, v in zip(clips, videos)], desc="ceiling",
                       unit="video")


def write_report(run: Path, output: Path, clips_per_motion: int = 10, steps: int = 25, tracker: bool = True,
                 swapped_per_motion: int = 0, cache: Path | None = None) -> Path:
    """REPORT.md, figure.png and results.json of the run's variants on held-out clips of the run's data; with
    ``tracker`` each video's motion is also read by the scene tracker (slower, and the validated measure); with
    ``swapped_per_motion`` every variant also takes the swapped-caption test on that many frames per motion (its
    videos cached per variant in ``cache``, see :func:`swapped_tests`)."""
    torch.set_flush_denormal(True)
    models = {name: run / folder / "model.safetensors" for name, folder in VARIANTS.items()}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if not models["full"].is_file():
        raise UserError(f"no trained model in '{run}': run `dynamicrafter recipe tiny --out {run}` first")
    full = _pipe(models["full"])
    settings = R.EvalSettings(clips_per_motion=clips_per_motion, steps=steps,
                              guidance_scale=full.config.defaults.guidance_scale)  # the models' own CFG scale
    output.mkdir(parents=True, exist_ok=True)
    data = recipe_data(run)  # the data the run was trained on
    tracked = data if tracker else None
    clips = R.held_out_clips(data, clips_per_motion)
    gt = R.ground_truth_accuracy(clips)

    examples = [clips[i * clips_per_motion] for i in range(len(data.motions))]  # one clip per motion
    results, sheets, variant_notes = _evaluate_variants(models, clips, settings, tracked, examples)
    for clip in examples:
        sheets.insert(0, (f"input + real: {clip.scene.caption}", clip.frames))
        sheets.insert(1, (f"full model: {clip.scene.caption}", R.generate(full, clip, settings)))

    lambda_rows, stride_rows = _sweeps(full, clips, settings, tracked)
    lambdas = full.model.unet.image_attention_lambdas()
    lambda_line = ("Learned lambda = tanh(alpha) + 1 per layer (paper Fig. 2 left): " + ", ".join(
        f"{name.split('.transformer_blocks')[0]} {value:.2f}" for name, value in lambdas.items()))
    notes = "\n".join(["Variants:", *variant_notes, "", lambda_line,
                       *(["", f"Not evaluated (missing): {', '.join(missing)}"] if missing else [])])
    swapped = swapped_tests(models, clips, settings, data, swapped_per_motion, cache) if swapped_per_motion else {}
    markdown = R.markdown_report(results, gt, lambda_rows, stride_rows, settings, len(data.motions), notes)
    markdown += swapped_markdown(swapped)
    ceiling = autoencoder_ceiling(full, clips, data) if tracker else []
    if ceiling:
        markdown += "\n".join([*R.conformity_markdown(results, ceiling), *R.ablation_markdown(results, swapped)]) + "\n"
    markdown += "\n![sample frames](figure.png)\n\nFigure: frames 0, 5, 10, 15 of each video.\n"
    with atomic_path(output / "REPORT.md") as tmp:
        tmp.write_text(markdown)
    R.contact_sheet(sheets, output / "figure.png")
    R.save_json({"settings": asdict(settings), "ground_truth_classifier_accuracy": gt,
                 "variants": [_variant_json(r) for r in results], "lambda_sweep": lambda_rows,
                 "stride_sweep": stride_rows, "learned_lambdas": lambdas,
                 "swapped": {name: r.to_json() for name, r in swapped.items()},
                 "autoencoder_ceiling": [asdict(c) for c in ceiling]}, output / "results.json")
    print(markdown)
    return output / "REPORT.md"


def _sweeps(full: DynamiCrafterPipeline, clips: list, settings: R.EvalSettings, tracked
            ) -> tuple[list[dict], list[dict]]:
    """The lambda and frame-stride sweeps of the full model on the first clips of every motion."""
    chosen = [c for i, c in enumerate(clips) if i % settings.clips_per_motion < settings.sweep_clips_per_motion]
    strides = tuple(float(s) for s in settings.strides)
    return (R.sweep(full, chosen, settings, "lambda", settings.lambdas, tracked),
            R.sweep(full, chosen, settings, "frame_stride", strides, tracked))


def _variant_json(r: R.VariantResult) -> dict:
    return {"name": r.name, "accuracy": r.accuracy, "tracker_accuracy": r.tracker_accuracy,
            "tracker_interval": r.interval("tracker_correct").to_json() if r.tracked else None,
            "seconds_per_video": r.seconds_per_video, "per_motion": r.per_motion_accuracy(),
            "per_motion_tracker": r.per_motion_tracker_accuracy() if r.tracked else None,
            "means": {k: r.mean(k) for k in ("conformity", "first_psnr", "first_ssim", "flicker", "motion_magnitude")},
            "scores": [asdict(s) for s in r.scores]}


def summary(path: Path) -> dict[str, float]:
    """Accuracy per variant from a results.json (for the model card)."""
    data = json.loads(path.read_text())
    return {v["name"]: float(np.round(v["accuracy"], 3)) for v in data["variants"]}
