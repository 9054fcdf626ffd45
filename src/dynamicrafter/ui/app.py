"""The Gradio app: tabs Animate, Interpolate / Loop and Storyboard over one shared :class:`ModelService`.

The handlers only convert between Gradio values and the service; every problem reaches the page as a one-line
message (``gr.Error`` / ``gr.Warning``), never a traceback. The generation events share one queue slot
(``concurrency_id="model"``, one job at a time) and are named API endpoints for ``gradio_client``:
``/animate``, ``/interpolate``, ``/loop``, ``/storyboard``.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from dynamicrafter.errors import UserError
from dynamicrafter.options import DEFAULT_SEED, SAMPLER_NAMES, SamplingOptions
from dynamicrafter.ui.config import STORYBOARD_SHOTS
from dynamicrafter.ui.inputs import SEED_MAX, SETTING_NAMES, check_image
from dynamicrafter.ui.service import JobResult, ModelService

log = logging.getLogger(__name__)

MODEL_QUEUE = "model"  # concurrency id shared by every generation event: one job on the model at a time
# system fonts only: the app works on machines without internet access
THEME_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}
IMAGE_HEIGHT = 288  # pixels, inputs and results alike
CSS = "#queue-status {text-align: right}"

PROGRESS = gr.Progress()  # marks a handler's progress parameter; Gradio passes a fresh tracker to every event
F = TypeVar("F", bound=Callable[..., Any])
Outputs = tuple[str, str, str, str]  # video, download file, seed used, summary


def examples_dir() -> Path:
    """The example images shipped with the package (copies of the released test prompts' images)."""
    return Path(str(resources.files("dynamicrafter") / "assets" / "examples"))


def example_prompts() -> list[tuple[Path, str]]:
    """(image, prompt) pairs of ``assets/examples/prompts.txt`` (tab-separated file name and prompt)."""
    folder = examples_dir()
    pairs = []
    for line in (folder / "prompts.txt").read_text().splitlines():
        name, _, prompt = line.partition("\t")
        if name.strip() and (folder / name.strip()).is_file():
            pairs.append((folder / name.strip(), prompt.strip()))
    return pairs


def shown_errors(fn: F) -> F:
    """Turn every failure of a handler into a one-line ``gr.Error`` (HTML-escaped: messages may quote file
    names); unexpected ones are logged with their traceback on the server only."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None
        except Exception as e:
            log.exception("job failed")
            raise gr.Error(html.escape(f"generation failed ({type(e).__name__}: {e}); the server log has the "
                                       f"details", quote=False), print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def warn(message: str) -> None:
    gr.Warning(html.escape(message, quote=False))


def progress_reporter(progress: gr.Progress) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress((done, total), desc="denoising", unit="steps")

    return report


def outputs(result: JobResult) -> Outputs:
    return str(result.video), str(result.video), str(result.seed), result.summary()


@dataclass
class SettingInputs:
    """The sampling controls of one tab (sliders in :data:`SETTING_NAMES` order, the seed, then the sampler: last,
    so that API calls written before it existed keep their positions)."""

    sliders: list[gr.Slider]
    seed: gr.Number
    random_seed: gr.Checkbox
    sampler: gr.Dropdown

    @property
    def components(self) -> list[gr.components.Component]:
        return [*self.sliders, self.seed, self.random_seed, self.sampler]


@dataclass
class ResultOutputs:
    video: gr.Video
    download: gr.DownloadButton
    seed: gr.Textbox
    summary: gr.Markdown

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.video, self.download, self.seed, self.summary]


def setting_inputs(service: ModelService, tab: str) -> SettingInputs:
    with gr.Accordion("Settings", open=True):
        sliders = []
        for row in (SETTING_NAMES[:3], SETTING_NAMES[3:]):
            with gr.Row():
                for name in row:
                    c = service.controls[name]
                    sliders.append(gr.Slider(c.minimum, c.maximum, value=c.default, step=c.step, label=c.label,
                                             info=c.info or None, elem_id=f"{tab}-{name.replace('_', '-')}",
                                             min_width=240))
        with gr.Row():
            seed = gr.Number(DEFAULT_SEED, label="Seed", precision=0, minimum=0, maximum=SEED_MAX,
                             elem_id=f"{tab}-seed")
            random_seed = gr.Checkbox(False, label="Random seed (the seed used is shown with the result)",
                                      elem_id=f"{tab}-random-seed")
            sampler = gr.Dropdown(list(SAMPLER_NAMES), value=SAMPLER_NAMES[0], label="Sampler",
                                  info="ddim: the released sampler; dpmpp_2m / unipc: as close in fewer steps",
                                  elem_id=f"{tab}-sampler")
    return SettingInputs(sliders, seed, random_seed, sampler)


def result_outputs(tab: str) -> ResultOutputs:
    video = gr.Video(label="Result", autoplay=True, loop=True, interactive=False, height=IMAGE_HEIGHT,
                     elem_id=f"{tab}-video")
    download = gr.DownloadButton("Download video", elem_id=f"{tab}-download")
    seed = gr.Textbox(label="Seed used", interactive=False, elem_id=f"{tab}-seed-used")
    summary = gr.Markdown(label="Summary", elem_id=f"{tab}-summary")
    return ResultOutputs(video, download, seed, summary)


def image_input(label: str, elem_id: str, height: int = IMAGE_HEIGHT) -> gr.Image:
    return gr.Image(label=label, type="filepath", sources=["upload", "clipboard"], height=height, elem_id=elem_id)


def check_on_upload(image: gr.Image, service: ModelService, what: str) -> None:
    """Check an image as soon as it is uploaded (the message appears before anything is generated)."""

    @shown_errors
    def check(value: Any) -> None:
        if value is not None:
            check_image(value, what, service.config)

    image.upload(check, inputs=image, outputs=None, preprocess=False, show_progress="hidden",
                 api_visibility="private")


def waiting_jobs(demo: gr.Blocks) -> int:
    """Jobs waiting in Gradio's queue (the number its ``/queue/status`` route reports)."""
    queue = getattr(demo, "_queue", None)
    try:
        return len(queue) if queue is not None else 0
    except TypeError:
        return 0


def queue_text(active: str | None, waiting: int) -> str:
    running = f"running: {active}" if active else "idle"
    return f"**Queue:** {running} · {waiting} waiting"


def generate_event(button: gr.Button, fn: Callable[..., Outputs], inputs: Sequence[gr.components.Component],
                   result: ResultOutputs, api_name: str) -> None:
    button.click(fn, inputs=list(inputs), outputs=result.components, api_name=api_name,
                 api_description=(fn.__doc__ or "").strip() or None, preprocess=False, concurrency_limit=1,
                 concurrency_id=MODEL_QUEUE, show_progress="full", show_progress_on=[result.video])


@dataclass
class Handlers:
    """The generation handlers; their parameter names and docstrings are the API endpoints' parameters and
    descriptions (``gradio_client``: ``client.predict(..., steps=25, api_name="/animate")``)."""

    animate: Callable[..., Outputs]
    interpolate: Callable[..., Outputs]
    loop: Callable[..., Outputs]
    storyboard: Callable[..., Outputs]


def generation_handlers(service: ModelService) -> Handlers:
    """The four generation handlers over ``service``: Gradio values -> checked options -> a job -> outputs."""

    def checked(*values: Any) -> SamplingOptions:
        *controls, seed, random_seed, sampler = values
        return service.check_settings({**dict(zip(SETTING_NAMES, controls)), "sampler": sampler}, seed, random_seed)

    @shown_errors
    def animate(image: Any, prompt: str, steps: int, guidance_scale: float, eta: float, frame_stride: int,
                image_attention_scale: float, frames: int, seed: int, random_seed: bool,
                sampler: str = SAMPLER_NAMES[0], progress: gr.Progress = PROGRESS) -> Outputs:
        """Animate an image following a text prompt; returns (video, download file, seed used, summary)."""
        settings = checked(steps, guidance_scale, eta, frame_stride, image_attention_scale, frames, seed, random_seed,
                           sampler)
        return outputs(service.animate(image, prompt, settings, progress=progress_reporter(progress), warn=warn))

    @shown_errors
    def interpolate(first_image: Any, last_image: Any, prompt: str, steps: int, guidance_scale: float, eta: float,
                    frame_stride: int, image_attention_scale: float, frames: int, seed: int, random_seed: bool,
                    sampler: str = SAMPLER_NAMES[0], progress: gr.Progress = PROGRESS) -> Outputs:
        """Generative interpolation from the first to the last image; returns (video, download, seed, summary)."""
        settings = checked(steps, guidance_scale, eta, frame_stride, image_attention_scale, frames, seed, random_seed,
                           sampler)
        return outputs(service.interpolate(first_image, last_image, prompt, settings,
                                           progress=progress_reporter(progress), warn=warn))

    @shown_errors
    def loop(first_image: Any, last_image: Any, prompt: str, steps: int, guidance_scale: float, eta: float,
             frame_stride: int, image_attention_scale: float, frames: int, seed: int, random_seed: bool,
             sampler: str = SAMPLER_NAMES[0], progress: gr.Progress = PROGRESS) -> Outputs:
        """A seamless loop of the first image (last_image is ignored; the loaded model's loop method, see
        ``apps.interpolation.loop``); returns (video, download, seed, summary)."""
        settings = checked(steps, guidance_scale, eta, frame_stride, image_attention_scale, frames, seed, random_seed,
                           sampler)
        return outputs(service.loop(first_image, prompt, settings, progress=progress_reporter(progress), warn=warn))

    @shown_errors
    def storyboard(shot1_image: Any, shot1_prompt: str, shot2_image: Any, shot2_prompt: str, shot3_image: Any,
                   shot3_prompt: str, shot4_image: Any, shot4_prompt: str, crossfade: int, steps: int,
                   guidance_scale: float, eta: float, frame_stride: int, image_attention_scale: float, frames: int,
                   seed: int, random_seed: bool, sampler: str = SAMPLER_NAMES[0],
                   progress: gr.Progress = PROGRESS) -> Outputs:
        """Render up to 4 shots (image + prompt; empty slots are skipped) into one video, shot k with seed + k - 1;
        returns (video, download, seed, summary)."""
        settings = checked(steps, guidance_scale, eta, frame_stride, image_attention_scale, frames, seed, random_seed,
                           sampler)
        shots = [(shot1_image, shot1_prompt), (shot2_image, shot2_prompt), (shot3_image, shot3_prompt),
                 (shot4_image, shot4_prompt)]
        return outputs(service.storyboard(shots, settings, crossfade, progress=progress_reporter(progress),
                                          warn=warn))

    assert STORYBOARD_SHOTS == 4, "the storyboard handler's parameters name 4 shots"
    return Handlers(animate, interpolate, loop, storyboard)


def build_app(service: ModelService) -> gr.Blocks:
    """The app around ``service`` (not launched: see :func:`launch`)."""
    handlers = generation_handlers(service)
    pairs = example_prompts()
    with gr.Blocks(title="DynamiCrafter", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        with gr.Row():
            gr.Markdown(f"## DynamiCrafter\nAnimate a still image with a text prompt · {service.describe_model()} "
                        f"· one job at a time")
            status = gr.Markdown(queue_text(None, 0), elem_id="queue-status")
        animate_tab(service, handlers, pairs)
        interpolate_tab(service, handlers, pairs)
        storyboard_tab(service, handlers, pairs)
        timer = gr.Timer(service.config.status_interval)
        timer.tick(lambda: queue_text(service.active_job, waiting_jobs(demo)), outputs=status, queue=False,
                   show_progress="hidden", api_visibility="private")
    return demo


def animate_tab(service: ModelService, handlers: Handlers, pairs: list[tuple[Path, str]]) -> None:
    """Image + prompt -> video (endpoint ``/animate``), with the shipped examples."""
    with gr.Tab("Animate", id="animate"):
        with gr.Row():
            with gr.Column():
                image = image_input("Image", "animate-image")
                prompt = gr.Textbox(label="Prompt", placeholder="describe the motion and the scene",
                                    elem_id="animate-prompt")
                button = gr.Button("Generate", variant="primary", elem_id="animate-generate")
            with gr.Column():
                result = result_outputs("animate")
        settings = setting_inputs(service, "animate")
        check_on_upload(image, service, "image")
        generate_event(button, handlers.animate, [image, prompt, *settings.components], result, "animate")
        gr.Examples([[str(path), text] for path, text in pairs], inputs=[image, prompt],
                    label="Examples (images shipped with the package)")


def interpolate_tab(service: ModelService, handlers: Handlers, pairs: list[tuple[Path, str]]) -> None:
    """First + last image -> interpolation (``/interpolate``), or a loop of the first image (``/loop``)."""
    model = service.pipe.config
    interp_note = "" if model.interp_mode else (
        f" The loaded model ('{model.name}') was trained for image animation: it loops the image on a "
        f"circular timeline (all frames kept); interpolation works best with the 512_interp checkpoint.")
    with gr.Tab("Interpolate / Loop", id="interpolate"):
        gr.Markdown("Interpolate between a first and a last image, or loop the first image (the video repeats "
                    f"seamlessly).{interp_note}")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    first = image_input("First image", "interpolate-first")
                    last = image_input("Last image (not used by Loop)", "interpolate-last")
                prompt = gr.Textbox(label="Prompt", elem_id="interpolate-prompt")
                with gr.Row():
                    interp_button = gr.Button("Interpolate", variant="primary", elem_id="interpolate-generate")
                    loop_button = gr.Button("Loop", variant="primary", elem_id="loop-generate")
            with gr.Column():
                result = result_outputs("interpolate")
        settings = setting_inputs(service, "interpolate")
        check_on_upload(first, service, "first image")
        check_on_upload(last, service, "last image")
        inputs = [first, last, prompt, *settings.components]
        generate_event(interp_button, handlers.interpolate, inputs, result, "interpolate")
        generate_event(loop_button, handlers.loop, inputs, result, "loop")
        examples = interpolate_examples(pairs)
        if examples:
            gr.Examples(examples, inputs=[first, last, prompt], label="Examples")


def interpolate_examples(pairs: list[tuple[Path, str]]) -> list[list[str | None]]:
    """The shipped smile pair (interpolation) and the beach image (loop), where present."""
    by_name = {path.name: (path, prompt) for path, prompt in pairs}
    examples: list[list[str | None]] = []
    if "smile_01.png" in by_name and (examples_dir() / "smile_02.png").is_file():
        examples.append([str(by_name["smile_01.png"][0]), str(examples_dir() / "smile_02.png"),
                         by_name["smile_01.png"][1]])
    if "loop_beach.png" in by_name:
        examples.append([str(by_name["loop_beach.png"][0]), None, by_name["loop_beach.png"][1]])
    return examples


def storyboard_tab(service: ModelService, handlers: Handlers, pairs: list[tuple[Path, str]]) -> None:
    """Up to :data:`STORYBOARD_SHOTS` image + prompt slots -> one video (``/storyboard``)."""
    with gr.Tab("Storyboard", id="storyboard"):
        gr.Markdown(f"Up to {STORYBOARD_SHOTS} shots rendered in order into one video (slots without an image are "
                    "skipped); shot k uses the seed + k - 1, so a shot can be re-rendered alone.")
        slots: list[gr.components.Component] = []
        with gr.Row():
            for k in range(1, STORYBOARD_SHOTS + 1):
                with gr.Column(min_width=200):
                    shot_image = image_input(f"Shot {k}", f"shot{k}-image", height=200)
                    shot_prompt = gr.Textbox(label=f"Shot {k} prompt", lines=2, elem_id=f"shot{k}-prompt")
                    check_on_upload(shot_image, service, f"shot {k} image")
                    slots += [shot_image, shot_prompt]
        with gr.Row():
            crossfade = gr.Slider(0, service.config.max_crossfade, value=0, step=1, label="Cross-fade (frames)",
                                  info="frames blended between consecutive shots", elem_id="storyboard-crossfade")
            button = gr.Button("Render storyboard", variant="primary", elem_id="storyboard-generate")
        result = result_outputs("storyboard")
        settings = setting_inputs(service, "storyboard")
        generate_event(button, handlers.storyboard, [*slots, crossfade, *settings.components], result,
                       "storyboard")
        example = [value for path, text in pairs[:STORYBOARD_SHOTS] for value in (str(path), text)]
        if example:
            example += [None, ""] * (STORYBOARD_SHOTS - len(example) // 2)
            gr.Examples([example], inputs=slots, label="Example storyboard")


def launch(demo: gr.Blocks, service: ModelService, *, block: bool = True, quiet: bool = False
           ) -> tuple[Any, str, str]:
    """Serve ``demo`` on the service's host and port with the queue on; ``block=False`` returns at once
    (tests). Returns Gradio's (app, local URL, share URL)."""
    config = service.config
    demo.queue(max_size=config.max_queue, default_concurrency_limit=1)
    return demo.launch(
        server_name=config.host, server_port=config.port, share=config.share, prevent_thread_lock=not block,
        max_file_size=config.max_image_bytes, allowed_paths=[str(service.output_dir), str(examples_dir())],
        show_error=False, quiet=quiet, ssr_mode=False, theme=gr.themes.Default(**THEME_FONTS),  # type: ignore[arg-type]
        css=CSS,
    )


__all__ = ["Handlers", "build_app", "example_prompts", "examples_dir", "generation_handlers", "launch", "queue_text",
           "shown_errors", "waiting_jobs"]
