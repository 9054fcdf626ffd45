"""Web UI: input checks, the model service (jobs, progress, warnings), error display, the CLI, and the app's API
through gradio_client against a server on a free local port."""

import math
import socket

import numpy as np
import pytest

from dynamicrafter.cli import build_parser
from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import UserError
from dynamicrafter.media import read_video_frames
from dynamicrafter.testing import tiny_checkpoint, tiny_pipeline
from dynamicrafter.ui.config import UIConfig
from dynamicrafter.ui.inputs import check_image, check_settings, controls_for
from dynamicrafter.ui.service import EMPTY_PROMPT_WARNING, ModelService

T = config_for_tests().unet.temporal_length  # 4
VALUES = {"steps": 2, "guidance_scale": 7.5, "eta": 1.0, "frame_stride": 3, "image_attention_scale": 1.0, "frames": T}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return ModelService(tiny_pipeline(), UIConfig(output_dir=tmp_path_factory.mktemp("ui-out")))


def settings(service, seed=123, random_seed=False, **values):
    return service.check_settings({**VALUES, **values}, seed, random_seed)


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------


def test_check_image_accepts_paths_and_gradio_payloads(images):
    checked = check_image({"path": str(images[0]), "orig_name": "holiday.png"}, "image", UIConfig())
    assert (checked.path, checked.name, checked.width, checked.height) == (images[0], "holiday.png", 96, 72)
    assert check_image(str(images[0]), "image", UIConfig()).name == "k0.png"


@pytest.mark.parametrize("case, message", [
    ("missing", "no image given"),
    ("text", "is not an image"),
    ("truncated", "corrupt or truncated"),
    ("pixels", "over the limit of 5,000 (server option --max-image-pixels)"),
    ("bytes", "(server option --max-image-bytes)"),
])
def test_check_image_refuses_bad_uploads_with_one_line(tmp_path, images, case, message):
    config = UIConfig(max_image_pixels=5000 if case == "pixels" else 4096 * 4096,
                      max_image_bytes=1000 if case == "bytes" else 20 * 2**20)
    value = {"missing": None, "pixels": images[0], "bytes": images[0]}.get(case)
    if case == "text":
        value = tmp_path / "notes.png"
        value.write_text("not an image")
    elif case == "truncated":
        value = tmp_path / "cut.png"
        value.write_bytes(images[0].read_bytes()[:2000])
    with pytest.raises(UserError) as e:
        check_image(value, "shot 2 image", config)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("shot 2 image")


def test_controls_follow_the_model_and_ui_limits():
    from dynamicrafter.recipe.config import TINY

    controls = controls_for(TINY, UIConfig(max_steps=40))
    assert (controls["frame_stride"].minimum, controls["frame_stride"].maximum) == TINY.defaults.frame_stride_range
    assert controls["frame_stride"].label == "Motion (frame stride)"
    assert (controls["steps"].default, controls["steps"].maximum) == (25, 40)
    assert (controls["frames"].default, controls["frames"].maximum) == (16, 32)
    assert (controls["image_attention_scale"].minimum, controls["image_attention_scale"].maximum) == (0.0, 1.0)


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, "steps must be in [1, 100], got 0"),
    ("steps", 2.5, "steps must be a whole number"),
    ("eta", 1.5, "eta must be in [0, 1], got 1.5"),
    ("guidance_scale", math.nan, "guidance_scale must be a number"),
    ("frame_stride", 9, "frame_stride must be in [1, 6], got 9"),
    ("frames", 100, "frames must be in [2, 8], got 100"),
    ("image_attention_scale", "high", "image_attention_scale must be a number"),
])
def test_out_of_range_settings_are_refused(name, value, message):
    controls = controls_for(config_for_tests(), UIConfig())
    with pytest.raises(UserError) as e:
        check_settings({**VALUES, name: value}, controls, 1, False)
    assert message in str(e.value)


def test_sampler_is_a_setting_checked_by_name():
    controls = controls_for(config_for_tests(), UIConfig())
    assert check_settings(VALUES, controls, 1, False).sampler is None  # unset: the model's own (DDIM, as released)
    assert check_settings({**VALUES, "sampler": "unipc"}, controls, 1, False).sampler == "unipc"
    with pytest.raises(UserError, match="sampler must be one of ddim, dpmpp_2m, unipc, got 'euler'"):
        check_settings({**VALUES, "sampler": "euler"}, controls, 1, False)


def test_seed_is_checked_unless_random():
    controls = controls_for(config_for_tests(), UIConfig())
    assert check_settings(VALUES, controls, 7.0, False).seed == 7
    assert check_settings(VALUES, controls, -5, True).seed is None
    with pytest.raises(UserError, match="seed must be in"):
        check_settings(VALUES, controls, -5, False)


def test_steps_that_overrun_the_timestep_spacing_drop_the_step_past_the_schedule(service):
    # uniform spacing, 1000 training steps: 3 steps -> 1, 334, 667 and 1000, which is past the last timestep (999)
    assert service.check_settings({**VALUES, "steps": 3}, 0, False).num_inference_steps == 3
    assert service.timesteps(3) == [1, 334, 667]


# ----------------------------------------------------------------------------------------------------------------
# Service: jobs, progress, warnings
# ----------------------------------------------------------------------------------------------------------------


def test_animate_writes_the_video_reports_progress_and_warns_on_empty_prompt(service, images):
    steps, warnings = [], []
    result = service.animate({"path": str(images[0])}, "  ", settings(service),
                             progress=lambda done, total: steps.append((done, total)), warn=warnings.append)
    frames = read_video_frames(result.video)
    assert frames.shape == (T, 64, 64, 3) and result.frames == T and result.seed == 123
    assert steps == [(1, 2), (2, 2)]
    assert warnings == [EMPTY_PROMPT_WARNING]
    assert "4 frames, 64x64, 8 fps, seed 123" in result.summary()
    assert service.active_job is None


def test_random_seed_is_reported_and_reproduces_the_video(service, images):
    first = service.animate(images[0], "a bear", settings(service, random_seed=True))
    again = service.animate(images[0], "a bear", settings(service, seed=first.seed))
    assert np.array_equal(read_video_frames(first.video), read_video_frames(again.video))


def test_pipeline_warnings_reach_the_page(service, images):
    warnings = []
    service.animate(images[0], "a bear", settings(service, frames=3), warn=warnings.append)
    assert any("differ from the model's temporal length" in w for w in warnings)


def test_more_frames_than_the_model_use_sliding_windows(service, images):
    result = service.animate(images[0], "a bear", settings(service, frames=2 * T))
    assert read_video_frames(result.video).shape[0] == 2 * T


def test_interpolate_and_loop_frame_counts(service, images):
    assert service.interpolate(images[0], images[1], "turn", settings(service)).frames == T
    assert read_video_frames(service.loop(images[0], "waves", settings(service)).video).shape[0] == T  # a ring


def test_storyboard_skips_empty_slots_and_crossfades(service, images):
    steps = []
    result = service.storyboard([(images[0], "a"), (None, ""), (images[1], "b"), (None, None)], settings(service),
                                crossfade=1, progress=lambda done, total: steps.append((done, total)))
    assert read_video_frames(result.video).shape[0] == 2 * T - 1
    assert steps[-1] == (4, 4)  # two shots of two steps
    with pytest.raises(UserError, match="shot 2 has a prompt but no image"):
        service.storyboard([(images[0], "a"), (None, "b")], settings(service))
    with pytest.raises(UserError, match="the storyboard is empty"):
        service.storyboard([(None, "")], settings(service))
    with pytest.raises(UserError, match=r"crossfade must be in \[0, 8\]"):
        service.storyboard([(images[0], "a")], settings(service), crossfade=20)


# ----------------------------------------------------------------------------------------------------------------
# CLI and error display
# ----------------------------------------------------------------------------------------------------------------


def test_cli_listens_locally_without_share_by_default():
    args = build_parser().parse_args(["ui"])
    assert (args.host, args.port, args.share) == ("127.0.0.1", None, False)
    args = build_parser().parse_args(["ui", "--port", "8080", "--max-image-bytes", "1000", "--max-image-pixels", "9"])
    assert (args.port, args.max_image_bytes, args.max_image_pixels) == (8080, 1000, 9)


def test_ui_config_refuses_bad_limits():
    with pytest.raises(UserError, match="max-image-bytes must be >= 1"):
        UIConfig(max_image_bytes=0)
    with pytest.raises(UserError, match="port must be in"):
        UIConfig(port=70000)


def test_handler_errors_become_one_line_messages_without_traceback():
    gr = pytest.importorskip("gradio")
    from dynamicrafter.ui.app import shown_errors

    @shown_errors
    def refuse(name):
        raise UserError(f"image '{name}' is not an image")

    @shown_errors
    def crash():
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as e:
        refuse("<b>x</b>.png")
    assert e.value.message == "image '&lt;b&gt;x&lt;/b&gt;.png' is not an image"
    with pytest.raises(gr.Error) as e:
        crash()
    assert e.value.message.startswith("generation failed (RuntimeError: boom)")


# ----------------------------------------------------------------------------------------------------------------
# The served app through gradio_client
# ----------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio")
    from dynamicrafter.pipeline import DynamiCrafterPipeline
    from dynamicrafter.ui.app import build_app, launch

    folder = tmp_path_factory.mktemp("ui-server")
    pipe = DynamiCrafterPipeline.from_checkpoint(tiny_checkpoint(folder), device="cpu")
    service = ModelService(pipe, UIConfig(port=free_port(), output_dir=folder / "out"))
    demo = build_app(service)
    _, url, _ = launch(demo, service, block=False, quiet=True)
    yield url, demo
    demo.close()


def test_api_endpoints_through_gradio_client(server, images, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = server
    client = Client(url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    assert {"/animate", "/interpolate", "/loop", "/storyboard"} <= set(api["named_endpoints"])
    video, download, seed, summary = client.predict(image=handle_file(str(images[0])), prompt="a bear", steps=2,
                                                    frames=T + 2, seed=5, api_name="/animate")
    assert read_video_frames(video).shape == (T + 2, 64, 64, 3) and seed == "5" and f"{T + 2} frames" in summary
    assert read_video_frames(download).shape[0] == T + 2
    video, *_ = client.predict(first_image=handle_file(str(images[1])), last_image=None, prompt="", steps=2,
                               api_name="/loop")
    assert read_video_frames(video).shape[0] == T
    video, *_ = client.predict(shot1_image=handle_file(str(images[0])), shot1_prompt="a", shot2_image=None,
                               shot2_prompt="", shot3_image=handle_file(str(images[1])), shot3_prompt="b",
                               shot4_image=None, shot4_prompt="", crossfade=1, steps=2, api_name="/storyboard")
    assert read_video_frames(video).shape[0] == 2 * T - 1
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(AppError, match="image 'notes.png' is not an image"):
        client.predict(image=handle_file(str(not_image)), prompt="x", api_name="/animate")
    with pytest.raises(AppError, match=r"steps must be in \[1, 100\], got 500"):
        client.predict(image=handle_file(str(images[0])), prompt="x", steps=500, api_name="/animate")
    fast = {"image": handle_file(str(images[0])), "prompt": "a bear", "steps": 3, "seed": 5, "api_name": "/animate"}
    ddim, dpm = (read_video_frames(client.predict(**fast, sampler=name)[0]) for name in ("ddim", "dpmpp_2m"))
    assert ddim.shape == dpm.shape and not np.array_equal(ddim, dpm)  # the sampler reaches the pipeline


def test_queue_status_counts_waiting_jobs(server):
    from dynamicrafter.ui.app import queue_text, waiting_jobs

    assert waiting_jobs(server[1]) == 0
    assert queue_text(None, 0) == "**Queue:** idle · 0 waiting"
    assert queue_text("animate", 2) == "**Queue:** running: animate · 2 waiting"
