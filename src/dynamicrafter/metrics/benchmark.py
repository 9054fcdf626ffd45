"""``dynamicrafter benchmark``: the paper's UCF-101 / MSR-VTT evaluation end to end, resumable and sharded over GPUs.

Protocol (authors' answer in the original repository's issues #6 / #10): draw ``num_samples`` test videos (a seeded
permutation of the index; every usable video once, and with replacement only when the index holds fewer usable
videos than ``num_samples``), take from each a random ``num_frames``-frame clip at ``frame_stride`` (seeded start
frame; videos shorter than ``(num_frames - 1) * frame_stride + 1`` frames, unreadable or missing ones are skipped and
counted), animate the clip's first frame with the video's caption, and compare generated with real clips.

Stages, each resumable and each writing one file (or folder) per sample id, atomically::

    OUT/benchmark.json          the settings (a re-run with other settings is refused), sampling counts, timings
    OUT/samples.jsonl           the sample list: id, video path, start frame, stride, caption, ... (rank 0)
    OUT/real/ID/0000.png ...    the real clip, resized + center-cropped to the resolution (or OUT/real/ID.mp4)
    OUT/inputs/ID.png           its first frame, the image that is animated
    OUT/generated/ID.mp4        the generated video (seeded by the sample id: independent of rank and order)
    OUT/cache/...               per-video features and metrics (:mod:`dynamicrafter.metrics.features`)
    OUT/metrics.json, metrics.md, per_video.csv   written by :func:`dynamicrafter.metrics.evaluate.evaluate`

Sharding: rank ``r`` of ``world_size`` cuts, generates and extracts the features of the samples ``i`` with
``i % world_size == r`` and writes only their files; after a barrier (``torch.distributed``, gloo) rank 0 checks
that every shard is complete and merges by running ``evaluate`` on the folders, where every per-video file is found
in the cache. Launch with ``torchrun --nproc_per_node 8 -m dynamicrafter.cli benchmark ...``.

Index builders (``--make-index``): UCF-101 (``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``, caption = the class name made
readable, "ApplyEyeMakeup" -> "apply eye makeup") and MSR-VTT (test videos ``video7010.mp4`` ... found under the
root, one caption per video chosen seeded among its annotated sentences).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dynamicrafter.data.index import ClipRecord, load_records, write_table
from dynamicrafter.data.video import PIXEL_SCALE, VideoDecodeError, VideoReader, transform_frames
from dynamicrafter.errors import UserError
from dynamicrafter.media import atomic_path, load_image, save_video
from dynamicrafter.metrics.evaluate import (
    EvaluateConfig,
    EvaluationResult,
    InputSource,
    PerceptualDistance,
    _load_distance,
    _load_i3d,
    evaluate,
    per_video_metrics,
)
from dynamicrafter.metrics.features import VideoItem, extract_features, feature_cache
from dynamicrafter.metrics.i3d import FVD_NUM_FRAMES, FVDConfig
from dynamicrafter.metrics.kernel import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS
from dynamicrafter.metrics.weights import file_fingerprint

FeatureExtractor = Callable[[list[np.ndarray]], np.ndarray]

SAMPLES_FILE = "samples.jsonl"
STATE_FILE = "benchmark.json"
REAL_FORMATS = ("png", "mp4")
DEFAULT_SEED = 123  # the released scripts' seed
DEFAULT_NUM_SAMPLES = 2048  # per data set, as in the paper
DEFAULT_FRAME_STRIDE = 3
DEFAULT_RESOLUTION = 256
DIST_TIMEOUT = timedelta(hours=24)  # a barrier may wait for the slowest rank's whole shard of generation
SOURCE_VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
UCF_FILE = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g\d+_c\d+$")
CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
MSRVTT_SPLIT = "test"
MAKE_INDEX_KINDS = ("ucf101", "msrvtt")


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------

def parse_resolution(text: str | int | Sequence[int]) -> tuple[int, int]:
    """``256`` -> (256, 256); ``"320x512"`` -> (320, 512) (height x width)."""
    if isinstance(text, int):
        return text, text
    if not isinstance(text, str):
        height, width = (int(v) for v in text)
        return height, width
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", text)
    if not match:
        raise UserError(f"--resolution must be a size like 256 or HEIGHTxWIDTH (320x512), got '{text}'")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


@dataclass
class BenchmarkConfig:
    """Everything ``dynamicrafter benchmark`` takes (see ``--help``); ``model_config`` is the ``--config`` option."""

    index: Path
    out_dir: Path
    checkpoint: Path | None = None
    model_config: str | None = None
    root: Path | None = None
    num_samples: int = DEFAULT_NUM_SAMPLES
    frame_stride: int = DEFAULT_FRAME_STRIDE
    num_frames: int = FVD_NUM_FRAMES
    resolution: tuple[int, int] = (DEFAULT_RESOLUTION, DEFAULT_RESOLUTION)
    seed: int = DEFAULT_SEED
    steps: int | None = None
    guidance_scale: float | None = None
    eta: float | None = None
    real_format: str = "png"
    device: str | None = None
    dtype: str = "auto"
    text_encoder: str | None = None
    image_encoder: str | None = None
    i3d: str | None = None
    fvd_preset: str = "auto"
    dreamsim: str | None = None
    dreamsim_type: str | None = None
    batch_size: int = 8
    kvd_subsets: int = DEFAULT_SUBSETS
    kvd_subset_size: int = DEFAULT_SUBSET_SIZE
    progress: bool = True
    loras: tuple[str, ...] = ()  # LoRA adapters, FILE[:SCALE] (dynamicrafter.lora.parse_lora_option)

    def __post_init__(self) -> None:
        self.index, self.out_dir = Path(self.index), Path(self.out_dir)
        self.root = Path(self.root) if self.root is not None else None
        self.checkpoint = Path(self.checkpoint) if self.checkpoint is not None else None
        self.resolution = parse_resolution(self.resolution)
        for name in ("num_samples", "frame_stride", "num_frames", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if min(self.resolution) < 1:
            raise UserError(f"--resolution must be positive, got {self.resolution}")
        if self.real_format not in REAL_FORMATS:
            raise UserError(f"--real-format must be one of {', '.join(REAL_FORMATS)}, got '{self.real_format}'")

    @property
    def clip_span(self) -> int:
        """Source frames a clip covers: ``(num_frames - 1) * frame_stride + 1``."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def sampling_settings(self) -> dict[str, Any]:
        """What the sample list, the real clips and the input images depend on."""
        return {"index": file_fingerprint(self.index), "num_samples": self.num_samples,
                "frame_stride": self.frame_stride, "num_frames": self.num_frames,
                "resolution": list(self.resolution), "seed": self.seed, "real_format": self.real_format}

    def generation_settings(self, checkpoint: Path) -> dict[str, Any]:
        """What the generated videos depend on (besides the samples)."""
        settings = {"checkpoint": f"{checkpoint.name}:{file_fingerprint(checkpoint)}",
                    "model_config": self.model_config, "steps": self.steps, "guidance_scale": self.guidance_scale,
                    "eta": self.eta, "dtype": self.dtype}
        if self.loras:  # (only when used: runs written before adapters existed keep their settings)
            from dynamicrafter.lora import parse_lora_option

            settings["loras"] = [f"{path.name}:{file_fingerprint(path)}:{scale:g}"
                                 for path, scale in map(parse_lora_option, self.loras)]
        return settings


@dataclass(frozen=True)
class Sample:
    """One test clip: ``num_frames`` frames of ``path`` from ``start_frame``, ``frame_stride`` apart."""

    sample_id: str
    path: str
    start_frame: int
    frame_stride: int
    num_frames: int
    caption: str
    fps: float
    source_frames: int
    index_row: int

    @property
    def frame_indices(self) -> list[int]:
        return [self.start_frame + k * self.frame_stride for k in range(self.num_frames)]

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        return {"id": row.pop("sample_id"), **row}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Sample:
        row = dict(row)
        row["sample_id"] = row.pop("id")
        return cls(**row)


@dataclass
class BenchmarkPaths:
    """Where every stage writes (see the module docstring)."""

    out_dir: Path
    real_format: str = "png"
    samples: Path = field(init=False)
    state: Path = field(init=False)
    real: Path = field(init=False)
    inputs: Path = field(init=False)
    generated: Path = field(init=False)
    cache: Path = field(init=False)

    def __post_init__(self) -> None:
        self.samples, self.state = self.out_dir / SAMPLES_FILE, self.out_dir / STATE_FILE
        self.real, self.inputs = self.out_dir / "real", self.out_dir / "inputs"
        self.generated, self.cache = self.out_dir / "generated", self.out_dir / "cache"

    def real_clip(self, sample_id: str) -> Path:
        return self.real / (f"{sample_id}.mp4" if self.real_format == "mp4" else sample_id)

    def input_image(self, sample_id: str) -> Path:
        return self.inputs / f"{sample_id}.png"

    def generated_video(self, sample_id: str) -> Path:
        return self.generated / f"{sample_id}.mp4"


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------

def sample_seed(seed: int, sample_id: str) -> int:
    """The generation seed of one sample: a hash of the run seed and the sample id (not of rank or order)."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _sample_id(position: int, total: int, path: str) -> str:
    width = max(4, len(str(total - 1)))
    return f"{position:0{width}d}_{UNSAFE_ID_CHARS.sub('_', Path(path).stem)}"


def _probe(record: ClipRecord) -> tuple[int, float] | str:
    """``(frames, fps)`` of a record's video, or the reason it cannot be used."""
    if not Path(record.path).is_file():
        return "missing"
    try:
        with VideoReader(record.path, fps=record.fps) as reader:
            return len(reader), record.fps or reader.fps
    except (VideoDecodeError, OSError):
        return "unreadable"


@dataclass
class SamplingReport:
    """How the sample list was drawn: rows of the index, videos probed and usable, skips by reason, repeats."""

    index_rows: int
    probed: int
    usable: int
    skipped: dict[str, int]
    drawn_with_replacement: int

    def describe(self, config: BenchmarkConfig) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        text = (f"sampled {config.num_samples} clips from {self.index_rows} videos (probed {self.probed}, "
                f"{self.usable} usable; skipped: {skipped}; 'too short' = fewer than {config.clip_span} frames)")
        if self.drawn_with_replacement:
            text += (f"; the index holds fewer usable videos than --num-samples: {self.drawn_with_replacement} "
                     f"clips drawn with replacement")
        return text


def make_samples(config: BenchmarkConfig, progress: bool = True) -> tuple[list[Sample], SamplingReport]:
    """The seeded sample list (see the module docstring); deterministic given the index and the settings."""
    records = load_records(config.index, config.root)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(records))
    chosen: list[tuple[int, int, float]] = []  # (row, frames, fps)
    skipped: Counter[str] = Counter()
    probed = 0
    with tqdm(total=config.num_samples, desc="probing videos", unit="video", disable=not progress) as bar:
        for row in order:
            probed += 1
            info = _probe(records[row])
            if isinstance(info, str):
                skipped[info] += 1
                continue
            if info[0] < config.clip_span:
                skipped["too short"] += 1
                continue
            chosen.append((int(row), *info))
            bar.update(1)
            if len(chosen) == config.num_samples:
                break
    if not chosen:
        raise UserError(f"no video of '{config.index}' is usable: {dict(skipped)} (a clip needs {config.clip_span} "
                        f"frames: {config.num_frames} frames at stride {config.frame_stride}); check --root and the "
                        f"files")
    usable = len(chosen)
    repeats = config.num_samples - usable
    if repeats:
        chosen += [chosen[i] for i in rng.choice(usable, size=repeats, replace=True)]
    samples = []
    for position, (row, frames, fps) in enumerate(chosen):
        record = records[row]
        start_rng = np.random.default_rng([config.seed, position])
        start = int(start_rng.integers(0, frames - config.clip_span + 1))
        samples.append(Sample(_sample_id(position, config.num_samples, record.path), str(Path(record.path).resolve()),
                              start, config.frame_stride, config.num_frames, record.caption, float(fps), frames, row))
    report = SamplingReport(len(records), probed, usable, dict(skipped), repeats)
    return samples, report


def write_samples(samples: Sequence[Sample], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(s.to_json()) + "\n" for s in samples))


def read_samples(path: Path) -> list[Sample]:
    samples = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(Sample.from_json(json.loads(line)))
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"'{path}' line {n} is not a sample ({e}); delete the file to draw the samples again") \
                from e
    return samples


def _check_samples(samples: Sequence[Sample], config: BenchmarkConfig, path: Path) -> None:
    wrong = [s for s in samples if (s.frame_stride, s.num_frames) != (config.frame_stride, config.num_frames)]
    if len(samples) != config.num_samples or wrong:
        raise UserError(f"'{path}' lists {len(samples)} samples (stride/frames of the first: "
                        f"{samples[0].frame_stride if samples else '-'}/{samples[0].num_frames if samples else '-'}) "
                        f"but the run asks for {config.num_samples} at {config.frame_stride}/{config.num_frames}; "
                        f"use a new -o folder")


# ----------------------------------------------------------------------------------------------------------------
# Run state: settings check, timings
# ----------------------------------------------------------------------------------------------------------------

def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"'{path}' is not valid JSON ({e}); delete it to start the run's bookkeeping anew") from e


def _write_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(state, indent=2) + "\n")


def _check_settings(state: dict[str, Any], settings: dict[str, Any], out_dir: Path) -> None:
    previous = state.get("settings")
    if not previous:
        return
    changed = [f"{key}: {previous.get(key)!r} -> {value!r}" for key, value in settings.items()
               if previous.get(key) != value]
    if changed:
        raise UserError(f"'{out_dir}' holds a benchmark run with other settings ({'; '.join(changed)}); use a new "
                        f"-o folder or rerun with the same settings to resume")


# ----------------------------------------------------------------------------------------------------------------
# Real clips and input images
# ----------------------------------------------------------------------------------------------------------------

def cut_clip(sample: Sample, resolution: tuple[int, int]) -> np.ndarray:
    """The sample's frames, resized and center-cropped as the data layer does, as uint8 ``(t, h, w, 3)``."""
    try:
        with VideoReader(sample.path, fps=sample.fps) as reader:
            frames = reader.get_batch(sample.frame_indices)
    except (VideoDecodeError, OSError) as e:
        raise UserError(f"cannot cut sample {sample.sample_id} from '{sample.path}' ({e}); remove the video from the "
                        f"index and start again in a new -o folder") from e
    video = transform_frames(frames, resolution)  # (3, t, h, w) in [-1, 1]
    uint8 = ((video + 1.0) * PIXEL_SCALE).round().clamp(0, 255).to(torch.uint8)
    return uint8.permute(1, 2, 3, 0).numpy()


def _save_png(image: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _save_frame_folder(frames: np.ndarray, path: Path) -> None:
    """PNG frames in a folder that appears under its name only once complete (written beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{i:04d}.png", format="PNG")
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def prepare_clips(samples: Sequence[Sample], config: BenchmarkConfig, paths: BenchmarkPaths, rank: int = 0,
                  world_size: int = 1, progress: bool = True) -> int:
    """Cut this rank's real clips and write their first frames; returns how many were cut (others existed)."""
    mine = [s for i, s in enumerate(samples) if i % world_size == rank]
    todo = [s for s in mine if not paths.real_clip(s.sample_id).exists()]
    for sample in tqdm(todo, desc="cutting real clips", unit="clip", disable=not progress):
        frames = cut_clip(sample, config.resolution)
        _save_png(frames[0], paths.input_image(sample.sample_id))  # first: a clip on disk implies its input image
        if config.real_format == "mp4":
            save_video(frames, paths.real_clip(sample.sample_id))
        else:
            _save_frame_folder(frames, paths.real_clip(sample.sample_id))
    return len(todo)


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------

def fs_condition(sample: Sample, pipeline: Any) -> int:
    """The model's motion input: the frame stride (256 model), or the clip's frame rate for fps-conditioned ones."""
    if getattr(pipeline.config, "fs_condition_type", "fs") == "fps":
        return max(1, int(sample.fps // sample.frame_stride))
    return sample.frame_stride


@dataclass
class StageTiming:
    """Work done by one stage on one rank."""

    videos: int = 0
    seconds: float = 0.0

    @property
    def per_minute(self) -> float | None:
        return 60.0 * self.videos / self.seconds if self.videos and self.seconds > 0 else None

    def to_json(self) -> dict[str, Any]:
        rate = self.per_minute
        return {"videos": self.videos, "seconds": round(self.seconds, 3),
                "videos_per_minute": None if rate is None else round(rate, 3)}


def generate_videos(samples: Sequence[Sample], config: BenchmarkConfig, paths: BenchmarkPaths,
                    load_pipeline: Callable[[], Any], rank: int = 0, world_size: int = 1,
                    progress: bool = True) -> StageTiming:
    """Generate this rank's missing videos (the model is loaded only when one is missing)."""
    mine = [s for i, s in enumerate(samples) if i % world_size == rank]
    todo = [s for s in mine if not paths.generated_video(s.sample_id).exists()]
    timing = StageTiming()
    if not todo:
        return timing
    pipeline = load_pipeline()
    height, width = config.resolution
    fps = float(getattr(pipeline.config.defaults, "save_fps", 8.0))
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc="generating", unit="video",
              disable=not progress) as bar:
        for sample in todo:
            t0 = time.perf_counter()
            image = load_image(paths.input_image(sample.sample_id))
            out = pipeline(image, sample.caption, num_frames=config.num_frames, height=height, width=width,
                           num_inference_steps=config.steps, guidance_scale=config.guidance_scale, eta=config.eta,
                           frame_stride=fs_condition(sample, pipeline), output_type="pt",
                           generator=torch.Generator().manual_seed(sample_seed(config.seed, sample.sample_id)))
            save_video(out.frames[0], paths.generated_video(sample.sample_id), fps=fps)
            timing.videos += 1
            timing.seconds += time.perf_counter() - t0
            bar.update(1)
    return timing


def _pipeline_loader(config: BenchmarkConfig, checkpoint: Path, device: str) -> Callable[[], Any]:
    def load() -> Any:
        from dynamicrafter.pipeline import DynamiCrafterPipeline

        pipeline = DynamiCrafterPipeline.from_checkpoint(checkpoint, config=config.model_config, device=device,
                                                         dtype=config.dtype, text_encoder_path=config.text_encoder,
                                                         image_encoder_path=config.image_encoder)
        pipeline.set_progress_bar_config(disable=True)
        from dynamicrafter.lora import load_lora_options

        load_lora_options(pipeline, config.loras)
        return pipeline

    return load


# ----------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------

def _evaluate_config(config: BenchmarkConfig, paths: BenchmarkPaths, device: str) -> EvaluateConfig:
    return EvaluateConfig(
        generated=paths.generated, out_dir=config.out_dir, real=paths.real, inputs=paths.inputs, i3d=config.i3d,
        dreamsim=config.dreamsim, dreamsim_type=config.dreamsim_type,
        fvd=FVDConfig(preset=config.fvd_preset, num_frames=config.num_frames, batch_size=config.batch_size,
                      device=device),
        real_frame_stride=1, kvd_subsets=config.kvd_subsets, kvd_subset_size=config.kvd_subset_size,
        seed=config.seed, progress=config.progress)


def _device(config: BenchmarkConfig, local_rank: int) -> str:
    if config.device:
        return config.device
    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def _load_or_make_samples(config: BenchmarkConfig, paths: BenchmarkPaths, write: bool, progress: bool,
                          log: Callable[[str], None]) -> list[Sample]:
    if paths.samples.is_file():
        samples = read_samples(paths.samples)
        _check_samples(samples, config, paths.samples)
        return samples
    samples, report = make_samples(config, progress)
    if write:
        log(report.describe(config))
        write_samples(samples, paths.samples)
        state = _read_state(paths.state)
        state["sampling"] = asdict(report)
        _write_state(paths.state, state)
    return samples


def _check_complete(samples: Sequence[Sample], paths: BenchmarkPaths, world_size: int) -> None:
    for what, path_of in (("real clips", paths.real_clip), ("input images", paths.input_image),
                          ("generated videos", paths.generated_video)):
        missing = [i for i, s in enumerate(samples) if not path_of(s.sample_id).exists()]
        if missing:
            ranks = ", ".join(str(r) for r in sorted({i % world_size for i in missing}))
            example = samples[missing[0]].sample_id
            raise UserError(f"{len(missing)} of {len(samples)} {what} are missing (e.g. '{example}', rank(s) {ranks} "
                            f"of {world_size}): run every rank to completion on the same OUT folder before rank 0 "
                            f"merges")


def run_benchmark(config: BenchmarkConfig, rank: int = 0, world_size: int = 1, *, local_rank: int = 0,
                  barrier: Callable[[], Any] | None = None, pipeline: Any | None = None,
                  i3d: FeatureExtractor | None = None, distance: PerceptualDistance | None = None,
                  log: Callable[[str], None] = print) -> EvaluationResult | None:
    """Run the benchmark's share of rank ``rank`` of ``world_size``; rank 0 also merges and returns the result.

    ``barrier`` synchronises the ranks (``torch.distributed.barrier`` under torchrun). Without it the ranks may also
    run one after the other (rank 0 last): each computes the sample list itself when ``samples.jsonl`` does not exist
    yet, and rank 0 refuses to merge while a shard is incomplete. ``pipeline`` (anything called like
    :class:`~dynamicrafter.pipeline.DynamiCrafterPipeline` with a ``config``), ``i3d`` and ``distance`` inject
    preloaded models; otherwise they are loaded from the configured files (FVD/KVD and PIC are skipped with a
    one-line notice when their weights are absent).
    """
    if not 0 <= rank < world_size:
        raise UserError(f"rank must be in [0, {world_size}), got {rank}")
    sync = barrier or (lambda: None)
    progress = config.progress and rank == 0
    say = log if rank == 0 else (lambda line: log(f"[rank {rank}] {line}"))
    paths = BenchmarkPaths(config.out_dir, config.real_format)
    if not config.index.is_file():
        raise UserError(f"index file not found: '{config.index}' (build one with --make-index ucf101|msrvtt)")
    if config.checkpoint is not None and not config.checkpoint.exists():
        raise UserError(f"checkpoint not found: '{config.checkpoint}'")
    checkpoint = config.checkpoint
    if checkpoint is None and pipeline is None:
        from dynamicrafter.weights import default_checkpoint

        checkpoint = default_checkpoint()
    settings = config.sampling_settings()
    settings.update(config.generation_settings(checkpoint) if checkpoint is not None else
                    {"checkpoint": f"injected:{getattr(pipeline.config, 'name', 'pipeline')}"})
    state = _read_state(paths.state)
    _check_settings(state, settings, config.out_dir)
    if rank == 0 and not state.get("settings"):
        _write_state(paths.state, {**state, "settings": settings})

    # weights first, so a wrong path fails before hours of generation
    device = _device(config, local_rank)
    notices: list[str] = []
    eval_config = _evaluate_config(config, paths, device)
    if distance is None:
        distance = _load_distance(eval_config, device, notices)
    if i3d is None:
        i3d = _load_i3d(eval_config, True, notices)
    if rank == 0:
        for notice in notices:
            log(notice)

    # 1. samples (rank 0 draws and writes them; the others read them after the barrier)
    samples = _load_or_make_samples(config, paths, rank == 0, progress, say) if rank == 0 else []
    sync()
    if rank != 0:
        samples = _load_or_make_samples(config, paths, False, progress, say)
    # 2. real clips and input images, 3. generated videos
    prepare_clips(samples, config, paths, rank, world_size, progress)
    load = (lambda: pipeline) if pipeline is not None else _pipeline_loader(config, checkpoint, device)
    generation = generate_videos(samples, config, paths, load, rank, world_size, progress)
    if generation.videos:
        say(f"generated {generation.videos} videos in {generation.seconds:.1f}s "
            f"({generation.per_minute:.2f} videos/minute)")
    # 4. this rank's per-video metrics and features (cached: the merge finds them)
    features = _extract_shard(samples, config, paths, i3d, distance, rank, world_size, progress)
    if features.videos:
        say(f"features of {features.videos} videos in {features.seconds:.1f}s "
            f"({features.per_minute:.2f} videos/minute)")
    sync()
    if rank != 0:
        return None

    # 5. merge: every per-video file is in the cache; evaluate writes metrics.json / .md and per_video.csv
    _check_complete(samples, paths, world_size)
    shown = set(notices)
    result = evaluate(eval_config, i3d=i3d, distance=distance,
                      log=lambda line: None if line in shown else log(line))
    state = _read_state(paths.state)
    state["timing_rank0"] = {"generation": generation.to_json(), "features": features.to_json(),
                             "world_size": world_size, "device": device}
    _write_state(paths.state, state)
    return result


def _extract_shard(samples: Sequence[Sample], config: BenchmarkConfig, paths: BenchmarkPaths,
                   i3d: FeatureExtractor | None, distance: PerceptualDistance | None, rank: int, world_size: int,
                   progress: bool) -> StageTiming:
    """Model-free metrics, PIC and I3D features of this rank's share, into the cache ``evaluate`` reads.

    The timing counts a sample once when any of its work was done (its real clip's features included).
    """
    t0 = time.perf_counter()
    generated = [VideoItem(s.sample_id, paths.generated_video(s.sample_id)) for s in samples]
    real = [VideoItem(s.sample_id, paths.real_clip(s.sample_id)) for s in samples]
    sources = {s.sample_id: InputSource("image", image=paths.input_image(s.sample_id)) for s in samples}
    computed = per_video_metrics(generated, sources, paths.cache, distance, num_frames=config.num_frames, rank=rank,
                                 world_size=world_size, progress=progress)
    if i3d is not None:
        signature = getattr(i3d, "signature", "features")
        for name, items in (("real", real), ("generated", generated)):
            computed = max(computed, extract_features(
                items, i3d, feature_cache(paths.cache, signature, name), config.num_frames, config.batch_size, rank,
                world_size, progress=progress, desc=f"I3D features ({name})"))
    return StageTiming(computed, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------------------
# torch.distributed
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun launch (RANK / WORLD_SIZE / LOCAL_RANK; 0 / 1 / 0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    barrier: Callable[[], Any] | None = None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got '{value}'") from None


@contextlib.contextmanager
def distributed_context() -> Iterator[DistributedContext]:
    """The rank context from the environment; with ``WORLD_SIZE > 1`` a gloo process group provides the barrier.

    gloo works for CPU and GPU ranks alike and on any number of nodes (``MASTER_ADDR`` / ``MASTER_PORT`` from
    torchrun); only barriers are exchanged, so NCCL brings nothing, and gloo's timeout is set long enough for the
    slowest rank's shard.
    """
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        yield DistributedContext()
        return
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=DIST_TIMEOUT)
    try:
        yield DistributedContext(rank, world_size, local_rank, dist.barrier)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------
# Index builders
# ----------------------------------------------------------------------------------------------------------------

def readable_class_name(name: str) -> str:
    """UCF-101 class folder -> text prompt: ``ApplyEyeMakeup`` -> ``apply eye makeup``, ``YoYo`` -> ``yo yo``."""
    return CAMEL_BOUNDARY.sub(" ", name.replace("_", " ")).lower().strip()


def _probe_fps(path: Path) -> float | None:
    try:
        with VideoReader(path) as reader:
            return reader.fps
    except (VideoDecodeError, OSError):
        return None


def _index_rows(entries: list[tuple[Path, str]], out: Path, progress: bool) -> tuple[list[dict[str, Any]], int]:
    """Rows (path relative to the index's folder, caption, fps) and the number of unreadable videos."""
    base = out.resolve().parent
    rows, unreadable = [], 0
    for path, caption in tqdm(entries, desc="reading video headers", unit="video", disable=not progress):
        fps = _probe_fps(path)
        unreadable += fps is None
        rows.append({"path": os.path.relpath(path.resolve(), base), "caption": caption,
                     "fps": None if fps is None else round(fps, 6)})
    return rows, unreadable


def _split_names(split_list: Path | None) -> set[str] | None:
    if split_list is None:
        return None
    if not split_list.is_file():
        raise UserError(f"split list not found: '{split_list}' (UCF-101's ucfTrainTestlist/testlist0X.txt)")
    names = {Path(line.split()[0]).name for line in split_list.read_text().splitlines() if line.strip()}
    if not names:
        raise UserError(f"split list '{split_list}' lists no videos")
    return names


def make_ucf101_index(root: Path, out: Path, split_list: Path | None = None, progress: bool = True
                      ) -> dict[str, int]:
    """Index of ``root/<Class>/v_<Class>_gXX_cYY.avi`` (a flat folder works too): caption = readable class name.

    ``split_list`` (e.g. ``testlist01.txt``) keeps only the listed videos. Returns counts for the summary line.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"UCF-101 folder not found: '{root}' (pass --root UCF-101/, the folder of class folders)")
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SOURCE_VIDEO_EXTENSIONS)
    wanted = _split_names(split_list)
    if wanted is not None:
        videos = [p for p in videos if p.name in wanted]
    if not videos:
        raise UserError(f"no videos (.avi/.mp4 ...) under '{root}'" + (" in the split list" if wanted else ""))
    entries = []
    for path in videos:
        # the class folder names the class (UCF's HandstandPushups/ holds v_HandStandPushups_*.avi); a flat folder
        # falls back on the file name
        match = UCF_FILE.match(path.stem)
        class_name = path.parent.name if path.parent != root or not match else match.group("cls")
        entries.append((path, readable_class_name(class_name)))
    rows, unreadable = _index_rows(entries, out, progress)
    write_table(rows, out, columns=["path", "caption", "fps"])
    missing = len(wanted) - len(videos) if wanted is not None else 0
    return {"videos": len(rows), "classes": len({c for _, c in entries}), "unreadable": unreadable,
            "listed_but_missing": missing}


def make_msrvtt_index(root: Path, annotations: Path, out: Path, seed: int = DEFAULT_SEED, progress: bool = True
                      ) -> dict[str, int]:
    """Index of MSR-VTT's test videos (``split == "test"`` in the annotation JSON) found anywhere under ``root``.

    The caption of a video is one of its annotated sentences, chosen with a generator seeded by ``seed`` and the
    video id (the same choice whatever the order of the file).
    """
    root, annotations = Path(root), Path(annotations)
    if not root.is_dir():
        raise UserError(f"MSR-VTT folder not found: '{root}' (pass --root, the folder holding video7010.mp4 ...)")
    if not annotations.is_file():
        raise UserError(f"annotation file not found: '{annotations}' (pass --annotations test_videodatainfo.json)")
    try:
        data = json.loads(annotations.read_text())
        videos, sentences = data["videos"], data["sentences"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"'{annotations}' is not an MSR-VTT annotation file with 'videos' and 'sentences' ({e})") \
            from e
    test_ids = [v["video_id"] for v in videos if v.get("split", MSRVTT_SPLIT) == MSRVTT_SPLIT]
    if not test_ids:
        raise UserError(f"'{annotations}' lists no test videos (split 'test'); pass test_videodatainfo.json")
    captions: dict[str, list[tuple[int, str]]] = {}
    for s in sentences:
        captions.setdefault(s["video_id"], []).append((int(s.get("sen_id", 0)), str(s["caption"]).strip()))
    files = {p.stem: p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in SOURCE_VIDEO_EXTENSIONS}
    entries, missing, uncaptioned = [], 0, 0
    for video_id in sorted(test_ids, key=lambda v: (len(v), v)):
        if video_id not in files:
            missing += 1
            continue
        options = sorted(captions.get(video_id, []))
        if not options:
            uncaptioned += 1
            continue
        rng = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
        entries.append((files[video_id], options[int(rng.integers(len(options)))][1]))
    if not entries:
        raise UserError(f"none of the {len(test_ids)} test videos of '{annotations}' is under '{root}' "
                        f"(expected files like {test_ids[0]}.mp4)")
    rows, unreadable = _index_rows(entries, out, progress)
    write_table(rows, out, columns=["path", "caption", "fps"])
    return {"videos": len(rows), "missing": missing, "without_caption": uncaptioned, "unreadable": unreadable}


__all__ = [
    "BenchmarkConfig", "BenchmarkPaths", "DistributedContext", "Sample", "SamplingReport", "cut_clip",
    "distributed_context", "generate_videos", "make_msrvtt_index", "make_samples", "make_ucf101_index",
    "parse_resolution", "prepare_clips", "read_samples", "readable_class_name", "run_benchmark", "sample_seed",
    "write_samples",
]
