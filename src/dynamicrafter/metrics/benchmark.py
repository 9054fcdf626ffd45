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
in the cache. Launch with ``torchrun --nproc_per_node 8 -m dynamicrafter.cli benchmark ...``; the rank context and
the barrier are :mod:`dynamicrafter.metrics.distributed`, the UCF-101 / MSR-VTT index builders (``--make-index``)
:mod:`dynamicrafter.data.benchmark_index`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dynamicrafter.data.benchmark_index import probe_record
from dynamicrafter.data.index import load_records
from dynamicrafter.data.video import PIXEL_SCALE, VideoDecodeError, VideoReader, transform_frames
from dynamicrafter.errors import UserError
from dynamicrafter.fingerprint import cache_fingerprint
from dynamicrafter.media import atomic_path, load_image, save_video
from dynamicrafter.metrics.distributed import DistributedContext
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
from dynamicrafter.options import DEFAULT_SEED, SamplingOptions

FeatureExtractor = Callable[[list[np.ndarray]], np.ndarray]

SAMPLES_FILE = "samples.jsonl"
STATE_FILE = "benchmark.json"
REAL_FORMATS = ("png", "mp4")
DEFAULT_NUM_SAMPLES = 2048  # per data set, as in the paper
DEFAULT_FRAME_STRIDE = 3
DEFAULT_RESOLUTION = 256
UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


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
    compile: bool = False  # torch.compile the U-Net (speed only: not part of the generation settings)

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
        self.sampling_options()  # the generation settings are checked before any work starts

    @property
    def clip_span(self) -> int:
        """Source frames a clip covers: ``(num_frames - 1) * frame_stride + 1``."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def sampling_settings(self) -> dict[str, Any]:
        """What the sample list, the real clips and the input images depend on."""
        return {"index": cache_fingerprint(self.index), "num_samples": self.num_samples,
                "frame_stride": self.frame_stride, "num_frames": self.num_frames,
                "resolution": list(self.resolution), "seed": self.seed, "real_format": self.real_format}

    def sampling_options(self) -> SamplingOptions:
        """The generation settings every sample shares; unset ones take the model's released values. The frame
        stride (or fps) and the seed are each sample's own (:func:`sample_options`)."""
        height, width = self.resolution
        shared = SamplingOptions.from_settings({"steps": self.steps, "guidance_scale": self.guidance_scale,
                                                "eta": self.eta}, style="flag")
        return shared.replace(num_frames=self.num_frames, height=height, width=width)

    def generation_settings(self, checkpoint: Path) -> dict[str, Any]:
        """What the generated videos depend on (besides the samples)."""
        settings = {"checkpoint": f"{checkpoint.name}:{cache_fingerprint(checkpoint)}",
                    "model_config": self.model_config, "steps": self.steps, "guidance_scale": self.guidance_scale,
                    "eta": self.eta, "dtype": self.dtype}
        if self.loras:  # (only when used: runs written before adapters existed keep their settings)
            from dynamicrafter.lora import parse_lora_option

            settings["loras"] = [f"{path.name}:{cache_fingerprint(path)}:{scale:g}"
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
            info = probe_record(records[row])
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


def sample_options(options: SamplingOptions, sample: Sample, seed: int, pipeline: Any) -> SamplingOptions:
    """One sample's generation settings: the shared ``options`` with its motion input and its own seed."""
    return options.replace(frame_stride=fs_condition(sample, pipeline), seed=sample_seed(seed, sample.sample_id))


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
    shared = config.sampling_options()
    fps = float(getattr(pipeline.config.defaults, "save_fps", 8.0))
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc="generating", unit="video",
              disable=not progress) as bar:
        for sample in todo:
            t0 = time.perf_counter()
            image = load_image(paths.input_image(sample.sample_id))
            options = sample_options(shared, sample, config.seed, pipeline)
            # the generator is the one options.seed makes, passed explicitly so that a wrapping pipeline sees it
            out = pipeline(image, sample.caption, options, output_type="pt",
                           generator=torch.Generator().manual_seed(options.seed))
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
        if config.compile:
            pipeline.enable_compile()
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
    dist = DistributedContext(rank, world_size, local_rank, barrier)
    progress = config.progress and rank == 0
    say = log if rank == 0 else (lambda line: log(f"[rank {rank}] {line}"))
    paths = BenchmarkPaths(config.out_dir, config.real_format)
    checkpoint = _open_run(config, paths, pipeline, rank)

    # weights first, so a wrong path fails before hours of generation
    device = _device(config, local_rank)
    eval_config = _evaluate_config(config, paths, device)
    models = _metric_models(eval_config, device, i3d, distance)
    if rank == 0:
        for notice in models.notices:
            log(notice)

    # 1. samples, 2. real clips and input images, 3. generated videos
    samples = _shared_samples(config, paths, dist, progress, say)
    prepare_clips(samples, config, paths, rank, world_size, progress)
    load = (lambda: pipeline) if pipeline is not None else _pipeline_loader(config, checkpoint, device)
    generation = generate_videos(samples, config, paths, load, rank, world_size, progress)
    _say_timing("generated", generation, say)
    # 4. this rank's per-video metrics and features (cached: the merge finds them)
    features = _extract_shard(samples, config, paths, models.i3d, models.distance, rank, world_size, progress)
    _say_timing("features of", features, say)
    dist.sync()
    if rank != 0:
        return None
    # 5. merge: every per-video file is in the cache
    _check_complete(samples, paths, world_size)
    result = _merge(eval_config, models, log)
    state = _read_state(paths.state)
    state["timing_rank0"] = {"generation": generation.to_json(), "features": features.to_json(),
                             "world_size": world_size, "device": device}
    _write_state(paths.state, state)
    return result


def _open_run(config: BenchmarkConfig, paths: BenchmarkPaths, pipeline: Any | None, rank: int) -> Path | None:
    """Check the inputs and refuse an OUT folder that holds a run with other settings; rank 0 records the settings.

    Returns the checkpoint to load (the default model's when none is given; None for an injected pipeline).
    """
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
    return checkpoint


@dataclass
class MetricModels:
    """The feature extractors of the scores, injected or loaded (None: that score is skipped), and the notices
    printed for the skipped ones."""

    i3d: FeatureExtractor | None
    distance: PerceptualDistance | None
    notices: list[str]


def _metric_models(eval_config: EvaluateConfig, device: str, i3d: FeatureExtractor | None,
                   distance: PerceptualDistance | None) -> MetricModels:
    notices: list[str] = []
    if distance is None:
        distance = _load_distance(eval_config, device, notices)
    if i3d is None:
        i3d = _load_i3d(eval_config, True, notices)
    return MetricModels(i3d, distance, notices)


def _shared_samples(config: BenchmarkConfig, paths: BenchmarkPaths, dist: DistributedContext, progress: bool,
                    log: Callable[[str], None]) -> list[Sample]:
    """The sample list every rank works on: rank 0 draws and writes it, the others read it after the barrier."""
    samples = _load_or_make_samples(config, paths, True, progress, log) if dist.rank == 0 else []
    dist.sync()
    if dist.rank != 0:
        samples = _load_or_make_samples(config, paths, False, progress, log)
    return samples


def _say_timing(what: str, timing: StageTiming, say: Callable[[str], None]) -> None:
    if timing.videos:
        say(f"{what} {timing.videos} videos in {timing.seconds:.1f}s ({timing.per_minute:.2f} videos/minute)")


def _merge(eval_config: EvaluateConfig, models: MetricModels, log: Callable[[str], None]) -> EvaluationResult:
    """``evaluate`` on the complete folders (it finds every per-video file in the cache and writes metrics.json /
    .md and per_video.csv); the notices already printed are not repeated."""
    shown = set(models.notices)
    return evaluate(eval_config, i3d=models.i3d, distance=models.distance,
                    log=lambda line: None if line in shown else log(line))


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


__all__ = [
    "BenchmarkConfig", "BenchmarkPaths", "Sample", "SamplingReport", "StageTiming", "cut_clip", "generate_videos",
    "make_samples", "parse_resolution", "prepare_clips", "read_samples", "run_benchmark", "sample_options",
    "sample_seed", "write_samples",
]
