"""The ``evaluate`` runner: score a folder of generated videos against real clips and input images.

Pairing is by file stem: ``generated/foo.mp4`` is compared with the real clip ``foo`` and the input image
``inputs/foo.png``; without ``--inputs`` the input image of a video is the first frame of its real clip (the
protocol animates that frame). FVD/KVD compare the whole generated set with the whole real set (pairing is not
needed). Outputs in ``out_dir``: ``metrics.json``, ``metrics.md`` (table), ``per_video.csv`` and ``cache/`` (the
per-video feature and metric files that make a re-run resume; see :mod:`dynamicrafter.metrics.features`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from dynamicrafter.errors import UserError
from dynamicrafter.fingerprint import cache_fingerprint
from dynamicrafter.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, atomic_path, load_image
from dynamicrafter.metrics.dreamsim import pic_from_distances
from dynamicrafter.metrics.features import (
    RecordCache,
    VideoItem,
    extract_features,
    feature_cache,
    load_features,
    read_clip,
    shard,
)
from dynamicrafter.metrics.frechet import frechet_distance_from_features
from dynamicrafter.metrics.i3d import FVDConfig, I3DFeatureExtractor
from dynamicrafter.metrics.kernel import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, kernel_distance, mmd2_unbiased
from dynamicrafter.metrics.model_free import match_input_image, model_free_metrics
from dynamicrafter.metrics.weights import (
    DREAMSIM_WEIGHTS,
    I3D_WEIGHTS,
    LPIPS_ALEXNET_WEIGHTS,
    LPIPS_WEIGHTS,
    missing_weights_notice,
    resolve_weights,
)

INDEX_SUFFIXES = (".txt", ".csv", ".jsonl")
PIC_DISTANCES = ("dreamsim", "lpips")
MODEL_FREE_COLUMNS = ("temporal_flicker", "motion_magnitude", "first_frame_psnr", "first_frame_ssim")
CSV_COLUMNS = ("video_id", "generated", "real", "input", "temporal_flicker", "motion_magnitude", "first_frame_psnr",
               "first_frame_ssim", "pic", "pic_distance")


class PerceptualDistance(Protocol):
    """``D(reference, frames) -> (t,)`` with a display ``label``, cache ``signature`` and ``standin`` flag."""

    label: str
    signature: str
    standin: bool

    def __call__(self, reference: np.ndarray, frames: np.ndarray) -> np.ndarray: ...


@dataclass
class EvaluateConfig:
    """Everything ``dynamicrafter evaluate`` takes (see ``--help``)."""

    generated: Path
    out_dir: Path
    real: Path | None = None
    inputs: Path | None = None
    i3d: str | None = None
    dreamsim: str | None = None
    dreamsim_type: str | None = None
    pic_distance: str = "dreamsim"
    lpips: str | None = None
    lpips_alexnet: str | None = None
    fvd: FVDConfig = field(default_factory=FVDConfig)
    real_frame_stride: int = 1
    kvd_subsets: int = DEFAULT_SUBSETS
    kvd_subset_size: int = DEFAULT_SUBSET_SIZE
    seed: int = 0
    progress: bool = True


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    notices: list[str]


# ----------------------------------------------------------------------------------------------------------------
# Collecting videos
# ----------------------------------------------------------------------------------------------------------------

def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def collect_videos(folder: str | Path, frame_stride: int = 1) -> list[VideoItem]:
    """Videos in ``folder`` (mp4/gif/webp files and folders of frames), id = stem, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"video folder not found: '{folder}' (pass a folder of .mp4/.gif/.webp videos or PNG-frame "
                        f"folders)")
    items: dict[str, VideoItem] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not ((path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS) or _is_frame_folder(path)):
            continue
        video_id = path.stem if path.is_file() else path.name
        if video_id in items:
            raise UserError(f"two videos with the id '{video_id}' in '{folder}' ({items[video_id].path.name} and "
                            f"{path.name}): keep one per stem")
        items[video_id] = VideoItem(video_id, path, 0, frame_stride)
    if not items:
        raise UserError(f"'{folder}' holds no videos (.mp4/.gif/.webp files or folders of PNG frames)")
    return list(items.values())


def read_index(path: str | Path, frame_stride: int = 1) -> list[VideoItem]:
    """Real clips from an index file.

    ``.csv``/``.jsonl``: the project's clip index (:mod:`dynamicrafter.data.index`, generic ``path`` layout or the
    WebVid layout), with optional columns ``id`` (default: ``videoid``, else the file stem), ``start_frame`` and
    ``frame_stride`` (default: ``frame_stride``); captions and other columns are ignored here. ``.txt``: one video
    path per line. Relative paths are relative to the index file's folder.
    """
    path = Path(path)
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        entries = [(Path(line).expanduser(), {}) for line in lines]
        entries = [(p if p.is_absolute() else path.parent / p, extra) for p, extra in entries]
    else:
        from dynamicrafter.data.index import load_records

        entries = [(Path(record.path), record.extra) for record in load_records(path)]
    items: dict[str, VideoItem] = {}
    for n, (video, extra) in enumerate(entries, start=1):
        video_id = str(extra.get("id") or extra.get("videoid") or (video.stem if video.suffix else video.name))
        try:
            start = int(extra.get("start_frame") or 0)
            stride = int(extra.get("frame_stride") or frame_stride)
        except ValueError as e:
            raise UserError(f"'{path}' entry {n}: start_frame/frame_stride must be integers ({e})") from e
        if video_id in items:
            raise UserError(f"'{path}' lists the id '{video_id}' twice; give each clip a unique 'id' column")
        items[video_id] = VideoItem(video_id, video, start, stride)
    if not items:
        raise UserError(f"index file '{path}' lists no videos")
    return list(items.values())


def collect_real(path: str | Path, frame_stride: int = 1) -> list[VideoItem]:
    path = Path(path)
    if path.is_file() and path.suffix.lower() in INDEX_SUFFIXES:
        return read_index(path, frame_stride)
    return collect_videos(path, frame_stride)


def collect_images(folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"input image folder not found: '{folder}' (pass a folder of PNG/JPEG images named like "
                        f"the generated videos)")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


# ----------------------------------------------------------------------------------------------------------------
# Per-video metrics (model-free + PIC)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSource:
    """Where a generated video's input image comes from: an image file, a real clip's first frame, or nowhere."""

    kind: str  # "image", "real_first_frame" or "none"
    image: Path | None = None
    real: VideoItem | None = None

    def stamp(self) -> str:
        if self.kind == "image" and self.image is not None:
            return f"image:{cache_fingerprint(self.image)}"
        if self.kind == "real_first_frame" and self.real is not None:
            return f"real:{self.real.stamp(1)}"
        return "none"

    def describe(self) -> str:
        if self.image is not None:
            return str(self.image)
        if self.real is not None:
            return f"first frame of {self.real.path.name}"
        return ""

    def load(self) -> np.ndarray | None:
        if self.kind == "image" and self.image is not None:
            return np.asarray(load_image(self.image))
        if self.kind == "real_first_frame" and self.real is not None:
            return read_clip(self.real, 1)[0]
        return None


def pair_inputs(generated: list[VideoItem], real: list[VideoItem], images: dict[str, Path]
                ) -> dict[str, InputSource]:
    """Each generated video's input image by stem: an image file, else its real clip's first frame, else none."""
    real_by_id = {item.video_id: item for item in real}
    sources = {}
    for item in generated:
        if item.video_id in images:
            sources[item.video_id] = InputSource("image", image=images[item.video_id])
        elif item.video_id in real_by_id:
            sources[item.video_id] = InputSource("real_first_frame", real=real_by_id[item.video_id])
        else:
            sources[item.video_id] = InputSource("none")
    return sources


def per_video_metrics(items: list[VideoItem], sources: dict[str, InputSource], cache_root: Path,
                      distance: PerceptualDistance | None, num_frames: int | None = None, rank: int = 0,
                      world_size: int = 1, progress: bool = True) -> int:
    """Compute and cache model-free metrics (always) and PIC (when ``distance`` is given) of this rank's videos.

    Frames used: the first ``num_frames`` of each generated video (all when ``None``). Returns the number of videos
    decoded in this call (cached ones are skipped).
    """
    model_free_cache = RecordCache(cache_root / "model_free")
    pic_cache = RecordCache(cache_root / distance.signature) if distance is not None else None
    computed = 0
    mine = shard(items, rank, world_size)
    for item in tqdm(mine, desc="per-video metrics", unit="video", disable=not progress):
        source = sources.get(item.video_id, InputSource("none"))
        stamp = f"{item.stamp(num_frames)}|{source.stamp()}"
        need_model_free = model_free_cache.load(item.video_id, stamp) is None
        need_pic = pic_cache is not None and source.kind != "none" and pic_cache.load(item.video_id, stamp) is None
        if not (need_model_free or need_pic):
            continue
        computed += 1
        frames = read_clip(item)[:num_frames]
        image = source.load()
        if need_model_free:
            model_free_cache.save(item.video_id, asdict(model_free_metrics(frames, image)), stamp)
        if need_pic and pic_cache is not None and distance is not None and image is not None:
            reference = match_input_image(image, frames.shape[1], frames.shape[2])
            distances = distance(reference, frames)
            pic_cache.save(item.video_id, {"pic": pic_from_distances(distances),
                                           "distances": [float(d) for d in distances]}, stamp)
    return computed


# ----------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------

def _load_distance(config: EvaluateConfig, device: str, notices: list[str]) -> PerceptualDistance | None:
    if config.pic_distance not in PIC_DISTANCES:
        raise UserError(f"unknown --pic-distance '{config.pic_distance}': use dreamsim or lpips (a stand-in)")
    if config.pic_distance == "lpips":
        lins = resolve_weights(config.lpips, LPIPS_WEIGHTS)
        alex = resolve_weights(config.lpips_alexnet, LPIPS_ALEXNET_WEIGHTS)
        if lins is None or alex is None:
            notices.append("PIC skipped: " + missing_weights_notice(LPIPS_WEIGHTS if lins is None
                                                                     else LPIPS_ALEXNET_WEIGHTS))
            return None
        from dynamicrafter.metrics.lpips import lpips_distance_from_files

        notices.append("PIC uses the LPIPS stand-in distance (explicitly chosen): values are not the paper's PIC")
        return lpips_distance_from_files(lins, alex, device)
    path = resolve_weights(config.dreamsim, DREAMSIM_WEIGHTS)
    if path is None:
        notices.append("PIC skipped: " + missing_weights_notice(DREAMSIM_WEIGHTS))
        return None
    from dynamicrafter.metrics.dreamsim import dreamsim_distance_from_file

    return dreamsim_distance_from_file(path, device, config.dreamsim_type)


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def evaluate(config: EvaluateConfig, i3d: Callable[[list[np.ndarray]], np.ndarray] | None = None,
             distance: PerceptualDistance | None = None, log: Callable[[str], None] = print) -> EvaluationResult:
    """Run every metric that its weights allow and write ``metrics.json``, ``metrics.md`` and ``per_video.csv``.

    ``i3d`` / ``distance`` inject preloaded models (an :class:`I3DFeatureExtractor` or any callable with a
    ``signature`` attribute, a :class:`PerceptualDistance`); otherwise they are loaded from the configured weight
    files, and a metric whose weights are absent is skipped with a one-line notice. All weights are resolved before
    any video is processed, so a wrong path fails at once.
    """
    out_dir = Path(config.out_dir)
    cache_root = out_dir / "cache"
    notices: list[str] = []
    generated = collect_videos(config.generated)
    real = collect_real(config.real, config.real_frame_stride) if config.real is not None else []
    images = collect_images(config.inputs) if config.inputs is not None else {}
    sources = pair_inputs(generated, real, images)
    unpaired = sum(s.kind == "none" for s in sources.values())
    if unpaired:
        notices.append(f"{unpaired} of {len(generated)} generated videos have no input image (no file of the same "
                       f"stem in --inputs or --real): their first-frame metrics and PIC are left empty")

    device = _auto_device() if config.fvd.device == "auto" else config.fvd.device
    if distance is None:
        distance = _load_distance(config, device, notices)
    if i3d is None:
        i3d = _load_i3d(config, bool(real), notices)
    for notice in notices:
        log(notice)

    per_video_metrics(generated, sources, cache_root, distance, num_frames=config.fvd.num_frames,
                      progress=config.progress)
    metrics: dict[str, Any] = {"num_generated": len(generated), "num_real": len(real),
                               "num_with_input_image": len(generated) - unpaired}
    metrics.update(_fvd_kvd(config, generated, real, cache_root, i3d, notices, log))

    rows = _rows(generated, sources, cache_root, distance, config.fvd.num_frames)
    metrics["model_free"] = {key: _mean([r[key] for r in rows]) for key in MODEL_FREE_COLUMNS}
    if distance is not None:
        metrics["pic"] = {"value": _mean([r["pic"] for r in rows]), "distance": distance.label,
                          "standin": bool(getattr(distance, "standin", False)),
                          "num_videos": sum(r["pic"] is not None for r in rows)}
    else:
        metrics["pic"] = None
    metrics["notices"] = notices
    _write_outputs(out_dir, metrics, rows)
    return EvaluationResult(metrics, rows, notices)


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_i3d(config: EvaluateConfig, have_real: bool, notices: list[str]) -> I3DFeatureExtractor | None:
    if not have_real:
        notices.append("FVD/KVD skipped: no real clips given (--real)")
        return None
    path = resolve_weights(config.i3d, I3D_WEIGHTS)
    if path is None:
        notices.append("FVD/KVD skipped: " + missing_weights_notice(I3D_WEIGHTS))
        return None
    return I3DFeatureExtractor.from_file(path, config.fvd)


def _fvd_kvd(config: EvaluateConfig, generated: list[VideoItem], real: list[VideoItem], cache_root: Path,
             i3d: Callable[[list[np.ndarray]], np.ndarray] | None, notices: list[str],
             log: Callable[[str], None]) -> dict[str, Any]:
    if i3d is None or not real:
        return {"fvd": None, "kvd": None}
    if min(len(real), len(generated)) < 2:
        notice = "FVD/KVD skipped: need at least 2 real and 2 generated videos"
        notices.append(notice)
        log(notice)
        return {"fvd": None, "kvd": None}
    signature = getattr(i3d, "signature", "features")
    num_frames = config.fvd.num_frames
    features = {}
    for name, items in (("real", real), ("generated", generated)):
        cache = feature_cache(cache_root, signature, name)
        extract_features(items, i3d, cache, num_frames, config.fvd.batch_size, progress=config.progress,
                         desc=f"I3D features ({name})")
        features[name] = load_features(items, cache, num_frames)
    description = getattr(i3d, "description", signature)
    fvd = frechet_distance_from_features(features["real"], features["generated"])
    subsets = kernel_distance(features["real"], features["generated"], config.kvd_subsets, config.kvd_subset_size,
                              seed=config.seed)
    return {
        "fvd": {"value": fvd, "extractor": description, "num_real": len(real), "num_generated": len(generated)},
        "kvd": {"value": subsets.mean, "std": subsets.std, "n_subsets": subsets.n_subsets,
                "subset_size": subsets.subset_size,
                "all_samples": mmd2_unbiased(features["real"], features["generated"]),
                "kernel": "(x.y / d + 1)^3, unbiased MMD^2"},
    }


def _rows(generated: list[VideoItem], sources: dict[str, InputSource], cache_root: Path,
          distance: PerceptualDistance | None, num_frames: int | None) -> list[dict[str, Any]]:
    model_free_cache = RecordCache(cache_root / "model_free")
    pic_cache = RecordCache(cache_root / distance.signature) if distance is not None else None
    rows = []
    for item in generated:
        source = sources[item.video_id]
        stamp = f"{item.stamp(num_frames)}|{source.stamp()}"
        values = model_free_cache.load(item.video_id, stamp) or {}
        pic = pic_cache.load(item.video_id, stamp) if pic_cache is not None else None
        rows.append({
            "video_id": item.video_id,
            "generated": str(item.path),
            "real": str(source.real.path) if source.real is not None else "",
            "input": source.describe(),
            "temporal_flicker": values.get("temporal_flicker"),
            "motion_magnitude": values.get("motion_magnitude"),
            "first_frame_psnr": values.get("first_frame_psnr"),
            "first_frame_ssim": values.get("first_frame_ssim"),
            "pic": pic["pic"] if pic else None,
            "pic_distance": distance.label if pic and distance is not None else "",
        })
    return rows


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(metrics: dict[str, Any]) -> str:
    """The ``metrics.md`` table."""
    lines = ["| metric | value | notes |", "|---|---|---|"]
    fvd, kvd, pic, mf = metrics.get("fvd"), metrics.get("kvd"), metrics.get("pic"), metrics["model_free"]
    if fvd:
        lines.append(f"| FVD | {_fmt(fvd['value'], 2)} | {fvd['extractor']}; {fvd['num_real']} real / "
                     f"{fvd['num_generated']} generated |")
        lines.append(f"| KVD | {_fmt(kvd['value'], 5)} ± {_fmt(kvd['std'], 5)} | {kvd['kernel']}; "
                     f"{kvd['n_subsets']} subsets of {kvd['subset_size']}; "
                     f"all samples: {_fmt(kvd['all_samples'], 5)} |")
    else:
        lines.append("| FVD / KVD | n/a | skipped (see notices) |")
    if pic:
        label = "PIC (LPIPS stand-in)" if pic["standin"] else "PIC"
        lines.append(f"| {label} | {_fmt(pic['value'])} | {pic['distance']}; {pic['num_videos']} videos |")
    else:
        lines.append("| PIC | n/a | skipped (see notices) |")
    lines.append(f"| temporal flicker | {_fmt(mf['temporal_flicker'], 3)} | mean abs. frame difference, 0-255 |")
    lines.append(f"| motion magnitude | {_fmt(mf['motion_magnitude'], 3)} | mean Farneback flow, px/frame |")
    lines.append(f"| first-frame PSNR | {_fmt(mf['first_frame_psnr'], 2)} | dB vs input image |")
    lines.append(f"| first-frame SSIM | {_fmt(mf['first_frame_ssim'])} | Gaussian-window SSIM vs input image |")
    text = "\n".join(lines) + "\n"
    if metrics.get("notices"):
        text += "\n" + "\n".join(f"- {n}" for n in metrics["notices"]) + "\n"
    return text


def _write_outputs(out_dir: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out_dir / "metrics.md") as tmp:
        tmp.write_text(markdown_table(metrics))
    with atomic_path(out_dir / "per_video.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
