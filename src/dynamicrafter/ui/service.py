"""The model behind the web UI: one pipeline in memory, one job at a time, every result written to a video file.

The service only checks inputs and calls the pipeline and the applications (:mod:`dynamicrafter.apps`); it does
not import Gradio, so it can be used and tested alone::

    service = ModelService(DynamiCrafterPipeline.from_checkpoint("model.ckpt"))
    options = service.check_settings({"steps": 25, ...}, seed=123, random_seed=False)
    result = service.animate("bear.png", "a bear walks", options)
    print(result.video, result.summary())
"""

from __future__ import annotations

import itertools
import random
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynamicrafter.apps.interpolation import interpolate, loop
from dynamicrafter.apps.story import STORY_SIZE_SETTINGS, parse_story, render_story
from dynamicrafter.diffusion.timesteps import sampling_timesteps
from dynamicrafter.errors import UserError
from dynamicrafter.media import save_video
from dynamicrafter.options import SamplingOptions
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.ui.config import UIConfig
from dynamicrafter.ui.inputs import SEED_MAX, check_image, check_prompt, check_settings, controls_for

ProgressFn = Callable[[int, int], None]  # (sampling steps done, total steps of the job)
WarnFn = Callable[[str], None]
# (pipeline, options with the job's seed) -> frames (3, t, H, W) in [-1, 1]
Render = Callable[[DynamiCrafterPipeline, SamplingOptions], torch.Tensor]

EMPTY_PROMPT_WARNING = "the prompt is empty: the motion follows the image alone (a prompt describing it helps)"


@dataclass(frozen=True)
class JobResult:
    video: Path  # the written .mp4
    frames: int
    width: int
    height: int
    fps: float
    seed: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.frames} frames, {self.width}x{self.height}, {self.fps:g} fps, seed {self.seed}, "
                f"generated in {self.seconds:.1f} s")


class ProgressPipeline:
    """The pipeline with a step callback added to every call, so that a job that calls it several times (one call
    per storyboard shot) reports its progress over all of its sampling steps. Every other attribute is the
    pipeline's."""

    def __init__(self, pipe: DynamiCrafterPipeline, total_steps: int, report: ProgressFn | None):
        self._pipe = pipe
        self._total = max(total_steps, 1)
        self._done = 0
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pipe(*args, callback_on_step_end=self._on_step, **kwargs)

    def _on_step(self, pipe: DynamiCrafterPipeline, step: int, t: int, tensors: dict[str, torch.Tensor]) -> None:
        self._done = min(self._done + 1, self._total)
        if self._report is not None:
            self._report(self._done, self._total)


class ModelService:
    """One loaded pipeline shared by every user of the app; jobs run one at a time (a lock guards the model)."""

    def __init__(self, pipe: DynamiCrafterPipeline, config: UIConfig | None = None):
        self.pipe = pipe
        self.config = config or UIConfig()
        self.controls = controls_for(pipe.config, self.config)
        self.output_dir = Path(self.config.output_dir or tempfile.mkdtemp(prefix="dynamicrafter-ui-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: str | None = None
        self._job_numbers = itertools.count(1)
        pipe.set_progress_bar_config(disable=True)

    @property
    def active_job(self) -> str | None:
        """The kind of the job running now ("animate", "interpolate", "loop", "storyboard"), or None."""
        return self._active

    def describe_model(self) -> str:
        c = self.pipe.config
        loras = getattr(self.pipe, "lora", None)
        adapters = "".join(f", LoRA '{n}' x {s:g}" for n, s in loras.scales.items()) if loras is not None else ""
        return (f"model '{c.name}': {c.defaults.width}x{c.defaults.height}, {c.unet.temporal_length} frames, "
                f"{self.pipe.device.type}{adapters}")

    def check_settings(self, values: Mapping[str, Any], seed: Any, random_seed: bool) -> SamplingOptions:
        """The sampling options of the sliders (refused when out of range); seed None with ``random_seed``."""
        return check_settings(values, self.controls, seed, bool(random_seed), self.pipe.config.unet.temporal_length)

    def timesteps(self, steps: int) -> list[int]:
        """The timesteps that ``steps`` gives with the loaded model (their count is the job's progress total)."""
        schedule = self.pipe.model.schedule
        return sampling_timesteps(steps, self.pipe.config.defaults.timestep_spacing, schedule.num_timesteps)

    # -------------------------------------------------------------------------------------------------------------
    # Jobs
    # -------------------------------------------------------------------------------------------------------------

    def animate(self, image: Any, prompt: Any, options: SamplingOptions, *, progress: ProgressFn | None = None,
                warn: WarnFn | None = None) -> JobResult:
        """Animate one image."""
        picture = check_image(image, "image", self.config).path
        text = self._prompt(prompt, warn)
        return self._run("animate", 1, options, lambda pipe, opts: pipe(
            picture, text, opts, output_type="pt").frames[0], progress, warn)

    def interpolate(self, start: Any, end: Any, prompt: Any, options: SamplingOptions, *,
                    progress: ProgressFn | None = None, warn: WarnFn | None = None) -> JobResult:
        """Frames from the first image to the last (both in the VDG input)."""
        first = check_image(start, "first image", self.config).path
        last = check_image(end, "last image", self.config).path
        text = self._prompt(prompt, warn)
        return self._run("interpolate", 1, options, lambda pipe, opts: interpolate(
            pipe, first, last, text, opts, output_type="pt").frames[0], progress, warn)

    def loop(self, image: Any, prompt: Any, options: SamplingOptions, *, progress: ProgressFn | None = None,
             warn: WarnFn | None = None) -> JobResult:
        """A seamless loop with the model's default method (:func:`dynamicrafter.apps.interpolation.loop`): a ring
        of ``frames`` frames for image-to-video models, ``frames - 1`` for interpolation models (closed loop)."""
        picture = check_image(image, "image", self.config).path
        text = self._prompt(prompt, warn)
        return self._run("loop", 1, options, lambda pipe, opts: loop(
            pipe, picture, text, opts, output_type="pt").frames[0], progress, warn)

    def storyboard(self, shots: Sequence[tuple[Any, Any]], options: SamplingOptions, crossfade: int = 0, *,
                   progress: ProgressFn | None = None, warn: WarnFn | None = None) -> JobResult:
        """Shots (image, prompt) rendered in order into one video; slots without an image and prompt are skipped.
        Shot k uses the seed + k (the story convention), so a shot can be re-rendered alone."""
        if isinstance(crossfade, bool) or not isinstance(crossfade, (int, float)) or crossfade != int(crossfade):
            raise UserError(f"crossfade must be a whole number of frames, got {crossfade!r}")
        if not 0 <= crossfade <= self.config.max_crossfade:
            raise UserError(f"crossfade must be in [0, {self.config.max_crossfade}] frames, got {crossfade:g}")
        entries = self._shots(shots, warn)
        defaults = {k: v for k, v in options.to_settings().items() if k not in ("seed", *STORY_SIZE_SETTINGS)}

        def render(pipe: DynamiCrafterPipeline, opts: SamplingOptions) -> torch.Tensor:
            story = parse_story({"shots": entries, "defaults": defaults, "crossfade": int(crossfade)},
                                name="storyboard", seed=opts.seed)
            return render_story(pipe, story).video

        return self._run("storyboard", len(entries), options, render, progress, warn)

    # -------------------------------------------------------------------------------------------------------------
    # Helpers
    # -------------------------------------------------------------------------------------------------------------

    def _shots(self, shots: Sequence[tuple[Any, Any]], warn: WarnFn | None) -> list[dict[str, str]]:
        """The storyboard's filled slots as story entries (image and prompt checked)."""
        entries = []
        for index, (image, prompt) in enumerate(shots, start=1):
            text = check_prompt(prompt, f"shot {index} prompt")
            if image is None or image == "":
                if text:
                    raise UserError(f"shot {index} has a prompt but no image; upload one or clear the prompt")
                continue
            picture = check_image(image, f"shot {index} image", self.config).path
            if not text and warn is not None:
                warn(f"shot {index}: {EMPTY_PROMPT_WARNING}")
            entries.append({"image": str(picture), "prompt": text})
        if not entries:
            raise UserError("the storyboard is empty: give at least one shot an image")
        return entries

    @staticmethod
    def _prompt(prompt: Any, warn: WarnFn | None) -> str:
        text = check_prompt(prompt)
        if not text and warn is not None:
            warn(EMPTY_PROMPT_WARNING)
        return text

    def _run(self, kind: str, calls: int, options: SamplingOptions, render: Render, progress: ProgressFn | None,
             warn: WarnFn | None) -> JobResult:
        options = options.replace(seed=options.seed if options.seed is not None else random.randint(0, SEED_MAX))
        steps = options.num_inference_steps or self.pipe.config.defaults.num_inference_steps
        with self._lock:
            self._active = kind
            try:
                t0 = time.perf_counter()
                pipe = ProgressPipeline(self.pipe, calls * len(self.timesteps(steps)), progress)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    video = render(pipe, options)  # type: ignore[arg-type]
                fps = self.pipe.config.defaults.save_fps
                path = self.output_dir / f"{kind}-{next(self._job_numbers):04d}-seed{options.seed}.mp4"
                save_video(video, path, fps=fps)
                seconds = time.perf_counter() - t0
            finally:
                self._active = None
        if warn is not None:
            for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
                warn(message)
        _, frames, height, width = video.shape
        return JobResult(path, frames, width, height, fps, int(options.seed), seconds)  # type: ignore[arg-type]


__all__ = ["EMPTY_PROMPT_WARNING", "JobResult", "ModelService", "ProgressPipeline"]
