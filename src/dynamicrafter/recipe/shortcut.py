"""How much does the first frame alone give the motion away? The data's first-frame shortcut, measured.

``python -m dynamicrafter.recipe.shortcut [--layout released|centred|both] [--train 4000] [--test 2000]``
fits simple classifiers on what the first frame of a training clip shows about its main object -- its centre and
size, and in a second row also its look (shape, texture) -- and predicts the motion of held-out test clips. The layout
is the data preset's (:data:`.tiny.DATA_PRESETS`: the recipe's released data, or the same data in the centred layout
without the shortcut); ``both`` measures the two on the same number of clips and prints them side by side. An
image-to-video model trained on such data can get the motion right without reading the prompt; the swapped-caption
test exposes it. Two classifiers, both simple: k nearest neighbours on standardised features and a
Gaussian (quadratic discriminant) model; the table gives the better one per row. A second table gives the share of
rotating clips by the main object's look (round shapes only rotate with a pattern).

Reported per frame stride (1, 2, 3) on the test split: 9-way accuracy and accuracy within motion groups, each with its
chance level: translation direction (4-way, translation clips only), zoom in / zoom out / other (3-way, all clips),
rotation direction (2-way, rotating clips only) and the motion group (translation / zoom / rotation / still).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from dynamicrafter.data import synthetic as syn
from dynamicrafter.recipe.tiny import DATA_PRESETS, RECIPE_DATA

NEIGHBOURS = 25
GROUPS = {"left": "translation", "right": "translation", "up": "translation", "down": "translation",
          "zoom_in": "zoom", "zoom_out": "zoom", "rotate_cw": "rotation", "rotate_ccw": "rotation", "still": "still"}


def first_frame_features(scene: syn.Scene, config: syn.SyntheticConfig) -> np.ndarray:
    """What frame 0 shows of the main object: centre (fractions of width / height), radius (fraction of the shorter
    side)."""
    main = scene.main
    return np.asarray([main.x / config.width, main.y / config.height, main.radius / config.short_side])


def look_features(scene: syn.Scene, config: syn.SyntheticConfig) -> np.ndarray:
    """:func:`first_frame_features` and the main object's look: its shape and texture, one-hot."""
    shape = [float(scene.main.shape == s) for s in syn.SHAPES]
    texture = [float(scene.main.texture == t) for t in syn.TEXTURES]
    return np.concatenate([first_frame_features(scene, config), shape, texture])


FEATURES: dict[str, Callable[[syn.Scene, syn.SyntheticConfig], np.ndarray]] = {
    "position + size": first_frame_features, "position + size + look": look_features}


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-9
    a, b = (train_x - mean) / std, (test_x - mean) / std
    distance = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None]
    nearest = np.argsort(distance, axis=1)[:, :k]
    classes = np.unique(train_y)
    votes = np.stack([(train_y[nearest] == c).sum(1) for c in classes], axis=1)
    return classes[votes.argmax(1)]


def gaussian_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Quadratic discriminant: one Gaussian per class (covariance shrunk a little toward its diagonal)."""
    classes = np.unique(train_y)
    scores = []
    for c in classes:
        x = train_x[train_y == c]
        cov = np.cov(x, rowvar=False) + 1e-4 * np.eye(x.shape[1])
        cov = 0.9 * cov + 0.1 * np.diag(np.diag(cov))
        diff = test_x - x.mean(0)
        _, logdet = np.linalg.slogdet(cov)
        scores.append(-0.5 * (diff @ np.linalg.inv(cov) * diff).sum(1) - 0.5 * logdet + np.log(len(x)))
    return classes[np.argmax(np.stack(scores, 1), 1)]


CLASSIFIERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "nearest neighbours": knn_predict, "gaussian": gaussian_predict}

# task name -> (label of a motion or None to leave the clip out, chance level)
TASKS: dict[str, tuple[Callable[[str], str | None], float]] = {
    "9 motions": (lambda m: m, 1 / 9),
    "translation direction (4)": (lambda m: m if GROUPS[m] == "translation" else None, 1 / 4),
    "zoom in / out / other (3)": (lambda m: m if GROUPS[m] == "zoom" else "other", 7 / 9),
    "rotation direction (2)": (lambda m: m if GROUPS[m] == "rotation" else None, 1 / 2),
    "motion group (4)": (lambda m: GROUPS[m], 4 / 9),
}


def _scenes(config: syn.SyntheticConfig, split: str, count: int) -> list[syn.Scene]:
    dataset = syn.SyntheticVideoDataset(syn.SyntheticConfig(**{**asdict(config), "num_clips": count}), split)
    return [dataset.scene(i) for i in range(len(dataset))]


def measure(config: syn.SyntheticConfig = RECIPE_DATA, train: int | None = None, test: int = 2000
            ) -> list[dict[str, object]]:
    """Rows: features, stride, task, chance, accuracy, classifier, test clips, per-class recall."""
    train_scenes = _scenes(config, "train", train or config.num_clips)
    test_scenes = _scenes(config, "test", test)
    rows = []
    for features, describe in FEATURES.items():
        x_train = np.stack([describe(s, config) for s in train_scenes])
        x_test = np.stack([describe(s, config) for s in test_scenes])
        for stride in sorted(set(config.frame_strides)):
            train_idx = [i for i, s in enumerate(train_scenes) if s.frame_stride == stride]
            test_idx = [i for i, s in enumerate(test_scenes) if s.frame_stride == stride]
            for task, (relabel, chance) in TASKS.items():
                rows.append(_task_row(features, stride, task, chance, relabel, x_train[train_idx],
                                      x_test[test_idx], [train_scenes[i].motion for i in train_idx],
                                      [test_scenes[i].motion for i in test_idx]))
    return rows


def rotation_by_look(config: syn.SyntheticConfig = RECIPE_DATA, train: int | None = None) -> list[dict[str, object]]:
    """Share of rotating clips among training clips by the main object's look (round / other, plain / patterned)."""
    scenes = _scenes(config, "train", train or config.num_clips)
    rows = []
    for round_shape in (True, False):
        for plain in (True, False):
            picked = [s for s in scenes if (s.main.shape in syn.ROUND_SHAPES) == round_shape
                      and (s.main.texture == "solid") == plain]
            rows.append({"shape": "round (circle, ring)" if round_shape else "other shapes",
                         "texture": "plain" if plain else "patterned", "clips": len(picked),
                         "rotating": float(np.mean([s.motion.startswith("rotate") for s in picked]))
                         if picked else math.nan})
    return rows


def _task_row(features: str, stride: int, task: str, chance: float, relabel: Callable[[str], str | None],
              x_train: np.ndarray, x_test: np.ndarray, train_motions: list[str], test_motions: list[str]
              ) -> dict[str, object]:
    keep_train = [i for i, m in enumerate(train_motions) if relabel(m) is not None]
    keep_test = [i for i, m in enumerate(test_motions) if relabel(m) is not None]
    y_train = np.array([relabel(train_motions[i]) for i in keep_train])
    y_test = np.array([relabel(test_motions[i]) for i in keep_test])
    best = None
    for name, predict in CLASSIFIERS.items():
        predicted = predict(x_train[keep_train], y_train, x_test[keep_test])
        accuracy = float(np.mean(predicted == y_test))
        if best is None or accuracy > best["accuracy"]:
            per_motion = {m: float(np.mean(predicted[y_test == m] == m)) for m in sorted(set(y_test))}
            best = {"features": features, "stride": stride, "task": task, "chance": chance, "accuracy": accuracy,
                    "classifier": name, "test_clips": len(y_test), "per_class": per_motion}
    return best


def _accuracy_rows(rows: list[dict[str, object]], strides: list[int]) -> list[str]:
    """One table row per (features, task): accuracy (test clips) at each stride, '-' where there is none."""
    lines = []
    for features in dict.fromkeys(r["features"] for r in rows):
        for task in TASKS:
            cells = {r["stride"]: r for r in rows if r["features"] == features and r["task"] == task}
            values = " | ".join(f"{cells[k]['accuracy']:.2f} (n {cells[k]['test_clips']})" if k in cells else "-"
                                for k in strides)
            chance = next(iter(cells.values()))["chance"]
            lines.append(f"| {features} | {task} | {chance:.2f} | {values} |")
    return lines


def markdown(rows: list[dict[str, object]], look: list[dict[str, object]], title: str = "training data") -> str:
    strides = sorted({r["stride"] for r in rows})
    lines = [f"# The first-frame shortcut of the {title}", "",
             "Accuracy of predicting a held-out clip's motion from its first frame alone (classifiers fitted on the "
             "training split; the better of nearest neighbours and a Gaussian model per row):", "",
             "| first-frame features | task | chance | " + " | ".join(f"stride {s}" for s in strides) + " |",
             "|---|---|---|" + "---|" * len(strides), *_accuracy_rows(rows, strides)]
    lines += ["", "Per-motion recall of the 9-way prediction (position + size):", "",
              "| stride | " + " | ".join(syn.MOTIONS) + " |", "|---|" + "---|" * len(syn.MOTIONS)]
    for r in rows:
        if r["task"] == "9 motions" and r["features"] == "position + size":
            lines.append(f"| {r['stride']} | " + " | ".join(f"{r['per_class'].get(m, float('nan')):.2f}"
                                                            for m in syn.MOTIONS) + " |")
    lines += ["", "Share of rotating clips by the main object's look (training split; 2/9 = 0.22 overall):", "",
              "| shape | texture | clips | rotating |", "|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['texture']} | {r['clips']} | {r['rotating']:.2f} |" for r in look]
    return "\n".join(lines) + "\n"


def comparison(before: list[dict[str, object]], after: list[dict[str, object]]) -> str:
    """The released and the centred layout side by side (accuracy per stride), as a markdown table."""
    strides_before = sorted({r["stride"] for r in before})
    strides_after = sorted({r["stride"] for r in after})
    head = [f"released, stride {k}" for k in strides_before] + [f"centred, stride {k}" for k in strides_after]
    lines = ["| first-frame features | task | chance | " + " | ".join(head) + " |",
             "|---|---|---|" + "---|" * len(head)]
    left, right = _accuracy_rows(before, strides_before), _accuracy_rows(after, strides_after)
    for a, b in zip(left, right):
        lines.append(a + " " + b.split(" | ", 3)[3])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.shortcut",
                                     description="Measure how well the first frame alone predicts the motion.")
    parser.add_argument("--layout", choices=(*DATA_PRESETS, "both"), default="released",
                        help="data preset: the recipe's released layout, the centred one, or both side by side")
    parser.add_argument("--train", type=int, default=None, help="training clips (default: the recipe's)")
    parser.add_argument("--test", type=int, default=2000, help="held-out test clips")
    args = parser.parse_args(argv)
    layouts = tuple(DATA_PRESETS) if args.layout == "both" else (args.layout,)
    results = {}
    for layout in layouts:
        config = DATA_PRESETS[layout]
        results[layout] = measure(config, args.train, args.test)
        print(markdown(results[layout], rotation_by_look(config, args.train), f"{layout} layout"))
    if args.layout == "both":
        print(comparison(results["released"], results["centred"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
