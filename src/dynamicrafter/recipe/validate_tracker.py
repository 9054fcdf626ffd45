"""Is the motion tracker (:mod:`.tracker`) right? Its validation on the generated data set's held-out clips.

``python -m dynamicrafter.recipe.validate_tracker [--per-motion 10] [--layout released|centred] [--out DIR]`` prints
(and writes to ``DIR/VALIDATION.md`` + ``validation.json``, for the centred layout ``VALIDATION_CENTRED.md`` +
``validation_centred.json``) three tables:

(a) the real held-out clips (test split, frame strides from 2 up as the report animates them, and stride 1): accuracy
    per motion and the tracking error against the generator's true trajectory;
(b) the same clips degraded as generated clips are: Gaussian blur, colour drift over time, noise, a smooth shape
    distortion changing over time, all together, and the shipped model's own autoencoder reconstructions (with and
    without an extra blur) -- where the tracker must stay right;
(c) controls that must not pass: the first frame frozen, shuffled frames and the reversed clip, each labelled with the
    clip's motion (moving clips only), on clean clips and on the autoencoder's reconstructions.

It also tells per shape (and texture, for round shapes) whether a turn is still visible after the autoencoder, and
the conformity figures of the autoencoder's reconstructions: the ceiling a generated video can reach.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from dynamicrafter.data import synthetic as syn
from dynamicrafter.data.video import frames_to_video
from dynamicrafter.media import atomic_path
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.motion_eval import classify_motion
from dynamicrafter.recipe.tiny import DATA_PRESETS, RECIPE_DATA

VALIDATION_SEED = 17
DRIFT_GAIN = 0.25  # colour drift: per-channel gain reaches 1 +- this at the last frame
DRIFT_OFFSET = 20.0  # and an offset of +- this many grey levels
NOISE_STD = 10.0  # grey levels
WARP_PX = 1.2  # shape distortion: peak displacement of the smooth random warp, pixels
WARP_CELLS = 4  # the warp field is upsampled from a grid of this many cells per side

Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def blur(sigma: float) -> Degradation:
    def apply(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for f in frames])
    return apply


def colour_drift(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every channel's gain and offset drift linearly from none at frame 0 to a random end value."""
    ramp = np.linspace(0.0, 1.0, len(frames))[:, None, None, None]
    gain = 1.0 + ramp * rng.uniform(-DRIFT_GAIN, DRIFT_GAIN, 3)
    return _as_uint8(frames * gain + ramp * rng.uniform(-DRIFT_OFFSET, DRIFT_OFFSET, 3))


def noise(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _as_uint8(frames + rng.normal(0.0, NOISE_STD, frames.shape))


def _warp_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cells = rng.standard_normal((2, WARP_CELLS + 1, WARP_CELLS + 1)).astype(np.float32)
    field_ = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in cells])
    return field_ * (WARP_PX / max(float(np.abs(field_).max()), 1e-6))


def shape_distortion(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random warp (peak WARP_PX pixels) that changes over the clip: wobbly, non-rigid shapes."""
    t, h, w = frames.shape[:3]
    start, end = _warp_field(rng, h, w), _warp_field(rng, h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i, frame in enumerate(frames):
        a = i / max(t - 1, 1)
        dx, dy = (1 - a) * start + a * end
        out.append(cv2.remap(frame, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def generated_like(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All of them: blur 1.5 px, colour drift, shape distortion, noise."""
    return noise(shape_distortion(colour_drift(blur(1.5)(frames, rng), rng), rng), rng)


DEGRADATIONS: dict[str, Degradation] = {
    "blur 1 px": blur(1.0), "blur 1.5 px": blur(1.5), "blur 2 px": blur(2.0), "colour drift": colour_drift,
    f"noise (std {NOISE_STD:g})": noise, "shape distortion": shape_distortion,
    "blur 1.5 + drift + distortion + noise": generated_like,
}
CONTROLS: dict[str, Degradation] = {
    "frozen first frame": lambda f, rng: np.repeat(f[:1], len(f), axis=0),
    "shuffled frames": lambda f, rng: f[rng.permutation(len(f))],
    "reversed clip": lambda f, rng: f[::-1].copy(),
}


@torch.no_grad()
def autoencode(pipe, videos: list[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    """The model's autoencoder reconstructions (posterior mean) of uint8 videos (t, h, w, 3)."""
    out = []
    for i in range(0, len(videos), batch):
        video = torch.stack([frames_to_video(v) for v in videos[i: i + batch]])
        frames = pipe.decode_latents(pipe.encode_video(video, sample=False))
        out += list(_as_uint8((frames.permute(0, 2, 3, 4, 1).cpu().numpy() + 1.0) * 127.5))
    return out


def test_clips(config: syn.SyntheticConfig, per_motion: int, strides: tuple[int, ...]) -> list[syn.SyntheticClip]:
    """The first ``per_motion`` test-split clips of every motion whose frame stride is in ``strides``."""
    dataset = syn.SyntheticVideoDataset(syn.SyntheticConfig(**{**asdict(config), "num_clips": 60 * per_motion * 9}),
                                        "test")
    chosen: dict[str, list[int]] = {m: [] for m in config.motions}
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        if scene.frame_stride in strides and len(chosen[scene.motion]) < per_motion:
            chosen[scene.motion].append(index)
        if all(len(v) == per_motion for v in chosen.values()):
            break
    return [dataset.clip(i) for m in config.motions for i in chosen[m]]


@dataclass
class ConditionResult:
    """Verdicts of the tracker (and the flow classifier) on one condition of the validation clips."""

    name: str
    motions: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    flow_labels: list[str] = field(default_factory=list)
    position_error: list[float] = field(default_factory=list)  # median over frames, pixels
    shapes: list[str] = field(default_factory=list)
    textures: list[str] = field(default_factory=list)
    rotation_observable: list[bool] = field(default_factory=list)

    def rate(self, verdict: str = "correct", motion: str | None = None) -> float:
        picked = [v for v, m in zip(self.verdicts, self.motions) if motion is None or m == motion]
        return float(np.mean([v == verdict for v in picked])) if picked else math.nan

    def flow_accuracy(self) -> float:
        return float(np.mean([f == m for f, m in zip(self.flow_labels, self.motions)]))


def score_condition(name: str, clips: list[syn.SyntheticClip], videos: list[np.ndarray],
                    data: syn.SyntheticConfig, flow: bool = True) -> ConditionResult:
    result = ConditionResult(name)
    for clip, video in tqdm(list(zip(clips, videos)), desc=name, unit="clip", leave=False):
        scene = clip.scene
        track = T.track_object(video, T.Appearance.from_scene(scene, data))
        reading = T.read_motion(track)
        truth = syn.object_trajectory(scene.main, scene.motion, scene.rate, len(video))
        result.motions.append(scene.motion)
        result.labels.append(reading.label)
        result.verdicts.append(reading.verdict(scene.motion))
        result.flow_labels.append(classify_motion(video) if flow else "")
        result.position_error.append(float(np.median(np.hypot(track.x - truth[0], track.y - truth[1]))))
        result.shapes.append(scene.main.shape)
        result.textures.append(scene.main.texture)
        result.rotation_observable.append(reading.rotation_observable)
    return result


def degrade(clips: list[syn.SyntheticClip], fn: Degradation, key: int) -> list[np.ndarray]:
    return [fn(c.frames, np.random.default_rng([VALIDATION_SEED, key, c.scene.clip_id])) for c in clips]


def _conformity_row(name: str, clips: list[syn.SyntheticClip], videos: list[np.ndarray],
                    data: syn.SyntheticConfig) -> dict[str, float | str]:
    scores = [T.conformity(v, c.scene, data) for c, v in zip(clips, videos)]
    return {"video": name, **{k: float(np.mean([getattr(s, k) for s in scores])) for k in asdict(scores[0])}}


@dataclass
class Validation:
    conditions: list[ConditionResult]
    controls: list[ConditionResult]
    rotation: list[ConditionResult]
    conformity: list[dict[str, float | str]]
    motions: tuple[str, ...]


def run_validation(per_motion: int = 10, rotation_clips: int = 64, pipe=None, data: syn.SyntheticConfig = RECIPE_DATA,
                   flow: bool = True) -> Validation:
    """All three tables on ``per_motion`` held-out clips per motion of ``data`` (its frame strides from 2 up, and
    stride 1 for the clean and autoencoder rows); ``pipe`` (the shipped model when None) provides the autoencoder."""
    if pipe is None:
        from dynamicrafter.pipeline import DynamiCrafterPipeline

        pipe = DynamiCrafterPipeline.from_checkpoint(device="cpu")
    fast = tuple(k for k in sorted(set(data.frame_strides)) if k >= 2) or (2, 3)
    clips, slow = test_clips(data, per_motion, fast), test_clips(data, per_motion, (1,))
    recon, slow_recon = autoencode(pipe, [c.frames for c in clips]), autoencode(pipe, [c.frames for c in slow])
    strides = f"strides {fast[0]}-{fast[-1]}" if len(fast) > 1 else f"stride {fast[0]}"
    conditions = [score_condition(f"clean ({strides})", clips, [c.frames for c in clips], data, flow),
                  score_condition("clean, stride 1", slow, [c.frames for c in slow], data, flow)]
    for key, (name, fn) in enumerate(DEGRADATIONS.items()):
        conditions.append(score_condition(name, clips, degrade(clips, fn, key), data, flow))
    ae_clips = [syn.SyntheticClip(v, c.scene) for v, c in zip(recon, clips)]
    conditions += [score_condition("autoencoder reconstruction", clips, recon, data, flow),
                   score_condition("autoencoder, stride 1", slow, slow_recon, data, flow),
                   score_condition("autoencoder + blur 1 px", clips, degrade(ae_clips, blur(1.0), 50), data, flow)]
    moving = [i for i, c in enumerate(clips) if c.scene.motion != "still"]
    controls = []
    for key, (name, fn) in enumerate(CONTROLS.items()):
        for source, prefix in ((clips, ""), (ae_clips, "autoencoder, ")):
            picked = [source[i] for i in moving]
            controls.append(score_condition(prefix + name, [clips[i] for i in moving],
                                            degrade(picked, fn, 100 + key), data, flow))
    rotating = rotation_study_clips(data, rotation_clips)
    rotation = [score_condition("rotations, clean", rotating, [c.frames for c in rotating], data, flow=False),
                score_condition("rotations, autoencoder", rotating, autoencode(pipe, [c.frames for c in rotating]),
                                data, flow=False)]
    conformity = [_conformity_row("input clips", clips, [c.frames for c in clips], data),
                  _conformity_row("autoencoder reconstruction (ceiling)", clips, recon, data)]
    return Validation(conditions, controls, rotation, conformity, data.motions)


def rotation_study_clips(data: syn.SyntheticConfig, count: int) -> list[syn.SyntheticClip]:
    """The first ``count`` rotating clips of the test split (all strides)."""
    dataset = syn.SyntheticVideoDataset(syn.SyntheticConfig(**{**asdict(data), "num_clips": 40 * count}), "test")
    picked = [i for i in range(len(dataset)) if dataset.scene(i).motion.startswith("rotate")][:count]
    return [dataset.clip(i) for i in picked]


def rotation_by_size(pipe, data: syn.SyntheticConfig, radii: tuple[float, ...], per_look: int = 4,
                     degrees_per_frame: float = 12.0) -> list[dict[str, object]]:
    """Would a larger object keep its turn through the autoencoder? Held-out rotating scenes with the main object
    moved to the centre and resized to each radius (fraction of the shorter side), every shape (round shapes with each
    pattern), turning ``degrees_per_frame``; the tracker's verdicts on the autoencoder's reconstructions."""
    scenes = [c.scene for c in rotation_study_clips(data, per_look * 4)]
    looks = [(shape, "solid") for shape in syn.SHAPES if shape not in syn.ROUND_SHAPES]
    looks += [(shape, texture) for shape in syn.ROUND_SHAPES for texture in syn.TEXTURES[1:]]
    rows = []
    for radius in radii:
        made = []
        for k, (shape, texture) in enumerate(looks):
            for j in range(per_look):
                base = scenes[(k * per_look + j) % len(scenes)]
                main = replace(base.main, shape=shape, texture=texture, x=data.width / 2, y=data.height / 2,
                               radius=radius * data.short_side)
                motion = "rotate_cw" if j % 2 == 0 else "rotate_ccw"
                made.append(syn.SyntheticClip(syn.render_scene(replace(base, main=main, motion=motion,
                                                                       rate=degrees_per_frame), data),
                                              replace(base, main=main, motion=motion, rate=degrees_per_frame)))
        result = score_condition(f"radius {radius:g}", made, autoencode(pipe, [c.frames for c in made]), data, False)
        for shape, texture in looks:
            idx = [i for i, c in enumerate(made) if (c.scene.main.shape, c.scene.main.texture) == (shape, texture)]
            rows.append({"radius": radius, "shape": shape, "texture": texture,
                         "readable": float(np.mean([result.rotation_observable[i] for i in idx])),
                         "correct": float(np.mean([result.verdicts[i] == "correct" for i in idx]))})
    return rows


def rotation_by_size_table(rows: list[dict[str, object]], data: syn.SyntheticConfig) -> list[str]:
    radii = sorted({r["radius"] for r in rows})
    lines = ["| shape | " + " | ".join(f"radius {r:g} ({r * data.short_side:.1f} px): readable / correct"
                                      for r in radii) + " |", "|---|" + "---|" * len(radii)]
    for look in dict.fromkeys((r["shape"], r["texture"]) for r in rows):
        cells = {r["radius"]: r for r in rows if (r["shape"], r["texture"]) == look}
        name = f"{look[0]} ({look[1]})" if look[0] in syn.ROUND_SHAPES else look[0]
        lines.append(f"| {name} | " + " | ".join(f"{cells[r]['readable']:.2f} / {cells[r]['correct']:.2f}"
                                                 for r in radii) + " |")
    return lines


def _motion_header(motions: tuple[str, ...]) -> str:
    return " | ".join(m.replace("rotate_", "rot ") for m in motions)


def condition_table(results: list[ConditionResult], motions: tuple[str, ...]) -> list[str]:
    lines = [f"| clips | n | tracker accuracy | undetermined | flow classifier (old) | median position error (px) "
             f"| {_motion_header(motions)} |", "|---|" + "---|" * (5 + len(motions))]
    for r in results:
        per = " | ".join(f"{r.rate('correct', m):.2f}" for m in motions)
        lines.append(f"| {r.name} | {len(r.verdicts)} | {r.rate():.3f} | {r.rate('undetermined'):.3f} | "
                     f"{r.flow_accuracy():.3f} | {np.median(r.position_error):.2f} | {per} |")
    return lines


def control_table(results: list[ConditionResult]) -> list[str]:
    lines = ["| control (labelled with the clip's motion) | n | tracker passes | flow classifier passes | "
             "tracker labels |", "|---|---|---|---|---|"]
    for r in results:
        counts = {label: r.labels.count(label) for label in sorted(set(r.labels))}
        labels = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r.name} | {len(r.verdicts)} | {r.rate():.3f} | {r.flow_accuracy():.3f} | {labels} |")
    return lines


def rotation_table(clean: ConditionResult, ae: ConditionResult) -> list[str]:
    """Per shape (round shapes per texture): clips, turn visible and read right, clean and after the autoencoder."""
    groups: dict[str, list[int]] = {}
    for i, (shape, texture) in enumerate(zip(clean.shapes, clean.textures)):
        groups.setdefault(f"{shape} ({texture})" if shape in syn.ROUND_SHAPES else shape, []).append(i)
    lines = ["| shape | clips | angle readable, clean | correct, clean | angle readable, autoencoder | "
             "correct, autoencoder | undetermined, autoencoder |", "|---|---|---|---|---|---|---|"]
    for name in sorted(groups):
        idx = groups[name]

        def share(r: ConditionResult, key: str, idx: list[int] = idx) -> float:
            if key == "observable":
                return float(np.mean([r.rotation_observable[i] for i in idx]))
            return float(np.mean([r.verdicts[i] == key for i in idx]))
        lines.append(f"| {name} | {len(idx)} | {share(clean, 'observable'):.2f} | {share(clean, 'correct'):.2f} | "
                     f"{share(ae, 'observable'):.2f} | {share(ae, 'correct'):.2f} | {share(ae, 'undetermined'):.2f} |")
    return lines


def conformity_table(rows: list[dict[str, float | str]]) -> list[str]:
    lines = ["| video | first-frame colour error (0-255) | first-frame shape IoU | colour error over the clip | "
             "background flicker (0-255) |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['video']} | {row['first_colour_error']:.1f} | {row['first_iou']:.3f} | "
                     f"{row['clip_colour_error']:.1f} | {row['background_flicker']:.2f} |")
    return lines


def markdown(v: Validation) -> str:
    lines = ["# The motion tracker's validation", "",
             "(a, b) Held-out test clips: real, degraded as generated clips are, and the shipped model's autoencoder "
             "reconstructions. Accuracy = the tracker's label equals the clip's motion; undetermined = a rotation "
             "whose angle the video does not show (not counted as correct).", "",
             *condition_table(v.conditions, v.motions), "",
             "(c) Controls that must not pass (moving clips only; pass = labelled as the clip's motion):", "",
             *control_table(v.controls), "",
             "Rotations per shape: is the turn visible (angle readable) and read right, on clean clips and after "
             "the autoencoder?", "", *rotation_table(*v.rotation), "",
             "Conformity of the clips themselves and of the autoencoder's reconstructions (the ceiling for generated "
             "videos):", "", *conformity_table(v.conformity)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.validate_tracker",
                                     description="Validate the motion tracker on held-out generated clips.")
    parser.add_argument("--per-motion", type=int, default=10, help="held-out clips per motion (default 10)")
    parser.add_argument("--rotation-clips", type=int, default=64, help="rotating clips for the per-shape table")
    parser.add_argument("--layout", choices=tuple(DATA_PRESETS), default="released",
                        help="data preset whose held-out clips are used: released (the recipe's) or centred; the "
                             "centred one writes VALIDATION_CENTRED.md / validation_centred.json")
    parser.add_argument("--out", type=Path, default=None, help="folder for VALIDATION.md and validation.json")
    parser.add_argument("--rotation-radii", default=None,
                        help="only the turn-by-size study: comma-separated radii (fractions of the shorter side) of "
                             "centred turning objects, read after the autoencoder (writes ROTATION_BY_SIZE.md)")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    if args.rotation_radii:
        return _size_study(tuple(float(r) for r in args.rotation_radii.split(",")), args.out)
    validation = run_validation(args.per_motion, args.rotation_clips, data=DATA_PRESETS[args.layout])
    text = markdown(validation)
    if args.layout != "released":
        text = text.replace("# The motion tracker's validation", f"# The motion tracker's validation, {args.layout} "
                            f"layout ({DATA_PRESETS[args.layout].height} px)", 1)
    print(text)
    if args.out is not None:
        suffix = "" if args.layout == "released" else f"_{args.layout}"
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / f"VALIDATION{suffix.upper()}.md") as tmp:
            tmp.write_text(text)
        with atomic_path(args.out / f"validation{suffix}.json") as tmp:
            tmp.write_text(json.dumps(asdict(validation), indent=1))
    return 0


def _size_study(radii: tuple[float, ...], out: Path | None) -> int:
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    rows = rotation_by_size(DynamiCrafterPipeline.from_checkpoint(device="cpu"), RECIPE_DATA, radii)
    text = "\n".join(["# Turns through the autoencoder, by object size", "",
                      "Held-out rotating scenes with the object centred and resized, 12 degrees per frame, after the "
                      "shipped model's autoencoder: share of clips whose angle the tracker can read, and read right.",
                      "", *rotation_by_size_table(rows, RECIPE_DATA)]) + "\n"
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "ROTATION_BY_SIZE.md") as tmp:
            tmp.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
