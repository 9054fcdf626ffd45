"""The model card of the shipped small model, written from the recipe's run folder and the report's results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dynamicrafter.checkpoint import load_model
from dynamicrafter.config import CLIPVisionConfig
from dynamicrafter.media import atomic_path
from dynamicrafter.model import COMPONENTS
from dynamicrafter.recipe.evaluation import BASE_VARIANT
from dynamicrafter.recipe.rescore import SwappedCaptionResult

STAGE_ROWS = (
    ("autoencoder", "KL autoencoder (f = 4), L1 + L2 + KL on frames", "vae_steps", "vae_batch"),
    ("clip", "text + image towers, contrastive (CLIP InfoNCE, reversed clips / the caption with each other motion "
             "as hard negatives)", "clip_steps", "clip_batch"),
    ("latents", "VAE posteriors of the training clips cached", None, None),
    ("t2v", "base text-to-video model, whole U-Net, text only", "t2v_steps", "video_batch"),
    ("stage_i", "(i) P + image cross-attention, image model", "stage1_steps", "image_batch"),
    ("stage_ii", "(ii) P + spatial layers, video", "stage2_steps", "video_batch"),
    ("stage_iii", "(iii) P + spatial layers with VDG", "stage3_steps", "video_batch"),
    ("stage_iii_multi", "(iii) continued, whole U-Net, half interpolation samples (shipped)", "multi_steps",
     "video_batch"),
    ("no_context", "ablation: VDG only (same steps as i + ii + iii)", None, "video_batch"),
    ("no_vdg_iii", "ablation without VDG: stage iii-no-vdg (stages i, ii shared)", "stage3_steps", "video_batch"),
)
# the stages that train the temporal layers too with ``--train-temporal`` (recipe.tiny.RecipePlan.trainable)
TEMPORAL_STAGES = ("stage_ii", "stage_iii", "no_context", "no_vdg_iii")
# the stages of the shipped model (the others are the ablations)
SHIPPED_STAGES = ("autoencoder", "clip", "latents", "t2v", "stage_i", "stage_ii", "stage_iii", "stage_iii_multi")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _motion_status(results: dict, train_temporal: bool) -> str:
    """Honest sentences on whether the shipped model follows the prompt's motion, from the measured figures."""
    shipped = results["variants"][-1]
    chance = 1 / len(shipped["per_motion"])
    swapped_json = results.get("swapped", {}).get(shipped["name"])
    swapped = SwappedCaptionResult.from_json(swapped_json) if swapped_json else None
    tracked = shipped.get("tracker_accuracy") is not None
    accuracy = swapped.accuracy if swapped else shipped["tracker_accuracy"] if tracked else shipped["accuracy"]
    measure = (f"swapped-caption accuracy {swapped.interval().bracket(2)}: each held-out first frame animated with "
               "every motion prompt, read by the validated tracker" if swapped else "motion accuracy on held-out clips"
               + (" (tracker)" if tracked else " (flow classifier)"))
    if accuracy >= 0.8:
        text = f"It follows the prompt's motion in {accuracy:.0%} of held-out cases ({measure}; chance {chance:.0%})."
    else:
        text = (f"**Limitation: it does not follow the prompt's motion reliably** ({accuracy:.0%}, {measure}; "
                f"chance {chance:.0%}, target 80%).")
    if swapped:
        text += " Per named motion: " + ", ".join(f"{m} {a:.0%}" for m, a in swapped.per_motion().items()) + "."
    else:
        per = shipped["per_motion_tracker"] if tracked else shipped["per_motion"]
        text += " Per motion: " + ", ".join(f"{m} {a:.0%}" for m, a in per.items()) + "."
    base = next((v for v in results["variants"] if v["name"] == BASE_VARIANT), None)
    if base is not None:
        base_swapped = results.get("swapped", {}).get(BASE_VARIANT)
        base_accuracy = base_swapped["accuracy"] if base_swapped else base["accuracy"]
        text += (f" The text-to-video base model, the motion prior that the image stages start from, reaches "
                 f"{base_accuracy:.0%}: at this CPU budget it learns the scenes but hardly any motion; "
                 + ("stages ii and iii therefore train the temporal layers too (the paper freezes them)."
                    if train_temporal else "the paper's stages ii and iii train the spatial layers only."))
    lam = results["lambda_sweep"]
    strides = results["stride_sweep"]
    text += (f" The first frame keeps the input's scene (first-frame PSNR {shipped['means']['first_psnr']:.1f} dB). "
             "Motion magnitude (full model) at lambda " + " / ".join(f"{r['lambda']:g}" for r in lam) + ": "
             + " / ".join(f"{r['motion_magnitude']:.2f}" for r in lam) + " px per frame; at frame stride "
             + " / ".join(f"{r['frame_stride']:g}" for r in strides) + ": "
             + " / ".join(f"{r['motion_magnitude']:.2f}" for r in strides) + " px per frame.")
    return text


def write_card(run: Path, report: Path, weights: Path, destination: Path) -> Path:
    """Write the model card of ``weights`` (trained in the recipe folder ``run``, measured in ``report``)."""
    recipe = _read_json(run / "recipe.json")
    timings = _read_json(run / "timings.json")
    vae = _read_json(run / "autoencoder" / "result.json")
    clip = _read_json(run / "clip" / "result.json")
    results = _read_json(report / "results.json")
    model = load_model(weights)
    params = {name: sum(p.numel() for p in model.component(name).parameters()) for name in COMPONENTS}
    lines = [
        *_intro_lines(weights, results, recipe),
        *_architecture_lines(params, vae, model.config.image_encoder),
        *_data_lines(recipe),
        *_training_lines(recipe["budget"], timings, vae, clip, recipe.get("train_temporal", False)),
        *_measured_lines(results, report),
    ]
    with atomic_path(destination) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return destination


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _intro_lines(weights: Path, results: dict, recipe: dict) -> list[str]:
    """Title, provenance, what the model does and whether it follows the prompt's motion."""
    return [
        "# dynamicrafter_tiny: the project's small DynamiCrafter",
        "",
        f"`{weights.name}` ({weights.stat().st_size / 2**20:.1f} MiB, float16 safetensors with its config in the "
        f"metadata) is used whenever no checkpoint is given. It was trained on this project's generated data set "
        f"only (no downloaded data or weights), by `{_recipe_command(recipe)}`, at commit `{_commit()}` "
        f"(the commit of the card; the recipe code is in `src/dynamicrafter/recipe/`).",
        "",
        "## What it does",
        "",
        f"Animates {_size(recipe['data'])} images of simple scenes (an object of one of 8 shapes, 8 colours and 4 "
        f"textures on one of 5 backgrounds, up to 2 still distractors) into {recipe['data']['frames']}-frame videos, "
        "trained on prompts naming one motion: left, right, up, down, zoom in / out (the object grows / shrinks), "
        "rotate clockwise / counter-clockwise, still. "
        f"{_layout_sentence(recipe['data'])}`--frame-stride` {_strides(recipe['data'])} is the motion per frame it "
        "was trained with (clips sampled at those strides); two images give an interpolation, and `dynamicrafter "
        "loop` animates one image on a circular timeline into a seamless loop. Out of this domain (photos) it "
        "produces shape-like blobs: use the released checkpoints for real images.",
        "",
        _motion_status(results, recipe.get("train_temporal", False)),
        "",
    ]


def _recipe_command(recipe: dict) -> str:
    """The ``recipe tiny`` command line that trains this run's data and stages."""
    flags = " --data centred" if recipe["data"].get("layout") == "centred" else ""
    return "dynamicrafter recipe tiny" + flags + (" --train-temporal" if recipe.get("train_temporal") else "")


def _size(data: dict) -> str:
    return f"{data['height']} x {data['width']}"


def _strides(data: dict) -> str:
    strides = sorted(data["frame_strides"])
    return f"{strides[0]}-{strides[-1]}" if len(strides) > 1 else str(strides[0])


def _layout_sentence(data: dict) -> str:
    if data.get("layout", "released") != "centred":
        return ""
    return ("Its training objects start near the centre and zooms from a mid size, so the first frame does not give "
            "the motion away: the prompt names it. ")


def _architecture_lines(params: dict[str, int], vae: dict, image: CLIPVisionConfig) -> list[str]:
    return [
        "## Architecture (the released code at small widths)",
        "",
        "| network | parameters | configuration |",
        "|---|---|---|",
        f"| 3D U-Net | {params['unet'] / 1e6:.2f} M | model_channels 32, mult (1, 2, 2), 1 res block, attention at all "
        f"levels, temporal convs + temporal attention, dual cross-attention with learned lambda, fs embedding, "
        f"v-prediction, zero terminal SNR |",
        f"| P (query transformer) | {params['image_proj'] / 1e6:.2f} M | 4 queries per frame x 16 frames, depth 2 |",
        f"| VAE | {params['vae'] / 1e6:.2f} M | KL autoencoder, f = 4, 4 latent channels, scale "
        f"{vae['scale_factor']:.4f} |",
        f"| CLIP text | {params['text_encoder'] / 1e6:.2f} M | width 64, 3 blocks (2 read: penultimate + "
        f"final LayerNorm), the CLIP BPE vocabulary |",
        f"| CLIP image | {params['image_encoder'] / 1e6:.2f} M | {image.image_size} px, patch {image.patch_size}, "
        f"width {image.width}, {image.layers} blocks, all {(image.image_size // image.patch_size) ** 2 + 1} tokens |",
        "",
    ]


def _data_lines(recipe: dict) -> list[str]:
    data = recipe["data"]
    return [
        "## Data",
        "",
        f"`dynamicrafter.recipe.tiny.{'CENTRED_DATA' if data.get('layout') == 'centred' else 'RECIPE_DATA'}`: "
        f"{data['num_clips']} training clips (seed {data['seed']}, split `train`, {_size(data)}, {data['frames']} "
        f"frames, frame strides "
        f"{tuple(data['frame_strides'])}), captions in varied wording naming the scene and the motion, "
        f"{data['motion_only_fraction']:.0%} naming only the motion. Evaluation uses the disjoint "
        f"held-out split `test`.",
        "",
    ]


def _stage_rows(budget: dict, timings: dict, train_temporal: bool) -> list[str]:
    """One table row per recipe stage that ran: what it trains, steps, batch and wall time."""
    steps_total = budget["stage1_steps"] + budget["stage2_steps"] + budget["stage3_steps"]
    rows = []
    for name, what, steps_key, batch_key in STAGE_ROWS:
        if name not in timings:
            continue
        steps = budget[steps_key] if steps_key else (steps_total if name == "no_context" else "-")
        batch = budget[batch_key] if batch_key else "-"
        if train_temporal and name in TEMPORAL_STAGES:
            what = (what.replace("spatial layers", "spatial + temporal layers") if "spatial layers" in what
                    else f"{what}, temporal layers trained too")
        rows.append(f"| {name} | {what} | {steps} | {batch} | {timings[name] / 60:.1f} min |")
    return rows


def _training_lines(budget: dict, timings: dict, vae: dict, clip: dict, train_temporal: bool) -> list[str]:
    """The recipe table with wall times, the optimisation settings and the pretrained parts' own figures."""
    return [
        "## Recipe and training time (2-core CPU, fp32)",
        "",
        "| stage | what | steps | batch | wall time |",
        "|---|---|---|---|---|",
        *_stage_rows(budget, timings, train_temporal),
        "",
        "Wall times as recorded in the run's `timings.json` (an interrupted stage counts from its last resume; a "
        "stage that shared the CPU with other work shows a longer time).",
        "",
        f"Total for the shipped model: {sum(timings.get(k, 0) for k in SHIPPED_STAGES) / 60:.0f} min; with the two "
        f"ablations {sum(timings.values()) / 60:.0f} min. AdamW, lr {budget['t2v_lr']} (t2v) / {budget['lr']} "
        f"(stages), {budget['warmup_steps']} warm-up steps, an EMA of the trainable weights (decay "
        f"{budget['ema_decay']}) exported, gradient clipping 1.0, CFG dropout 5 / 5 / 5 % (text / both / image). The "
        f"conditioning frame is the first frame (the paper draws a random one; the small model is used and measured "
        f"as 'animate from this first frame'). Autoencoder reconstruction: {vae['psnr_db']:.1f} dB PSNR on held-out "
        f"frames; CLIP towers: final in-batch retrieval accuracy {clip.get('accuracy', float('nan')):.2f} "
        f"(frame-scene), {clip.get('video_accuracy', float('nan')):.2f} (frame pair-caption with motion), and "
        f"{clip.get('motion_accuracy', float('nan')):.2f} of the clips prefer their caption to the same caption "
        f"with each of the 8 other motions (chance 0.11).",
        "",
    ]


def _measured_lines(results: dict, report: Path) -> list[str]:
    """The held-out measurements of every variant (with the tracker's and the swapped-caption test's figures when
    the report has them), the classifier's own accuracy, and the licence."""
    swapped = results.get("swapped", {})
    tracked = all(v.get("tracker_accuracy") is not None for v in results["variants"])
    rows = []
    for v in results["variants"]:
        cells = [f"{v['accuracy']:.3f}"]
        if tracked:
            cells.append(f"{v['tracker_accuracy']:.3f}")
        if swapped:
            cells.append(f"{swapped[v['name']]['accuracy']:.3f}" if v["name"] in swapped else "-")
        means = v["means"]
        cells += [f"{means['conformity']:.3f}", f"{means['first_psnr']:.1f} dB", f"{means['flicker']:.2f}",
                  f"{v['seconds_per_video']:.2f}"]
        rows.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    heads = ["motion accuracy (flow)", *(["motion accuracy (tracker)"] if tracked else []),
             *(["swapped-caption accuracy"] if swapped else []), "input conformity (PIC*)", "first-frame PSNR",
             "flicker", "s / video"]
    return [
        "## Measured (held-out clips, `dynamicrafter recipe report`)",
        "",
        "| variant | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
        *rows,
        "",
        f"Chance = 1/9 = 0.11; the flow-based motion classifier recovers the true motion of real held-out clips in "
        f"{results['ground_truth_classifier_accuracy']:.1%} of the cases"
        + ("; the tracker is the validated reader (reports/tiny/evaluator/)" if tracked else "")
        + (". Swapped-caption accuracy: each first frame animated with every motion prompt; the share of videos that "
           "show the motion the prompt names (text-based motion control)" if swapped else "")
        + f". Full details, the lambda and frame-stride sweeps and sample frames: `{report / 'REPORT.md'}`.",
        "",
        "## Licence",
        "",
        "Apache-2.0, like the project. The BPE vocabulary is OpenAI CLIP's (MIT).",
    ]
