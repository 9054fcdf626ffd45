"""Applications (Python API): interpolation, keyframe chaining, loops, sliding windows, lambda, stories, checks."""

import dataclasses

import pytest
import torch

from dynamicrafter.apps.checks import CHECK_SEED, interpolation_report, lambda_sweep, loop_report, window_report
from dynamicrafter.apps.frames import chain, crossfade_concat
from dynamicrafter.apps.interpolation import interpolate, interpolate_keyframes, loop
from dynamicrafter.apps.lambdas import motion_controls
from dynamicrafter.apps.story import parse_story, render_shot, render_story
from dynamicrafter.config import config_for_tests
from dynamicrafter.diffusion.windows import closed_loop, window_weights, windowed_denoiser
from dynamicrafter.errors import UserError
from dynamicrafter.models.controls import AS_TRAINED, parse_image_attention_scale
from dynamicrafter.options import TemporalWindows
from dynamicrafter.testing import random_image, tiny_pipeline

T = config_for_tests().unet.temporal_length
FAST = {"height": 32, "width": 32, "num_inference_steps": 2}
IMAGES = [random_image(seed=i) for i in range(3)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def run(pipe):
    """``run(**kwargs)``: the tiny pipeline on the first image, small and fast, frames as a tensor."""

    def call(**kwargs):
        kwargs = {**FAST, "output_type": "pt", **kwargs}
        return pipe(IMAGES[0], "a red square moves left", generator=gen(kwargs.pop("seed", 0)), **kwargs).frames

    return call


# ---------------------------------------------------------------------------------------------------------------
# Sliding temporal windows
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("frames", "size", "stride", "starts"), [
    (32, 16, 8, [0, 8, 16]),
    (32, None, None, list(range(0, 29, 2))),  # size = temporal length 4, stride = half
    (11, 4, 3, [0, 3, 6, 7]),  # the last window is aligned to the end
    (3, 16, 8, [0]),  # a window longer than the video is the whole video
])
def test_windows_cover_every_frame_and_weights_sum_to_one(frames, size, stride, starts):
    for weighting in ("linear", "uniform"):
        windows = TemporalWindows(size, stride, weighting)
        slices = windows.slices(frames, T)
        assert [s.start for s in slices] == starts
        total = torch.zeros(frames)
        for s, w in zip(slices, window_weights(windows, frames, T)):
            total[s] += w
        torch.testing.assert_close(total, torch.ones(frames))


@pytest.mark.parametrize(("frames", "size", "stride", "first_frames"), [
    (12, 4, 2, [0, 2, 4, 6, 8, 10]),  # the last window wraps: frames 10, 11, 0, 1
    (10, 4, 3, [0, 3, 6, 9]),  # windows wrap past the end, all the same size
])
def test_windows_on_a_circle_wrap_around_and_weights_sum_to_one(frames, size, stride, first_frames):
    windows = TemporalWindows(size, stride)
    indices = windows.windows(frames, T, circular=True)
    assert [w[0] for w in indices] == first_frames
    assert all(w == [(w[0] + k) % frames for k in range(size)] for w in indices)
    total = torch.zeros(frames)
    for w, weight in zip(indices, window_weights(windows, frames, T, circular=True)):
        total[w] += weight
    torch.testing.assert_close(total, torch.ones(frames))
    assert windows.windows(size, T, circular=True) == [slice(0, size)]  # one window: the network's own circle


def test_window_settings_are_checked():
    with pytest.raises(UserError, match="stride 9 is larger than the window size 8"):
        TemporalWindows(8, 9)
    with pytest.raises(UserError, match="weighting"):
        TemporalWindows(8, 4, "cosine")


def recorded_unet_calls(monkeypatch, pipe) -> list[tuple[int, bool]]:
    """Patch the tiny pipeline's U-Net to record (frames, circular time axis) of every call."""
    calls: list[tuple[int, bool]] = []
    original = pipe.model.unet.forward

    def forward(x, *args, controls=AS_TRAINED, **kwargs):
        calls.append((x.shape[2], controls.circular))
        return original(x, *args, controls=controls, **kwargs)

    monkeypatch.setattr(pipe.model.unet, "forward", forward)
    return calls


def test_windowed_run_denoises_every_frame_in_windows(monkeypatch, pipe, run):
    calls = recorded_unet_calls(monkeypatch, pipe)
    out = run(num_frames=32, temporal_windows=TemporalWindows(8, 4), num_inference_steps=1)
    assert out.shape == (1, 3, 32, 32, 32) and torch.isfinite(out).all()
    assert calls == [(8, False)] * len(range(0, 25, 4))  # one call per window (starts 0, 4, ..., 24), 8 frames each


def test_window_as_long_as_the_video_equals_the_plain_run(run):
    plain = run(seed=3)
    for windows in (TemporalWindows(), TemporalWindows(T, 1, "uniform"), TemporalWindows(64)):
        assert torch.equal(run(seed=3, temporal_windows=windows), plain)


# ---------------------------------------------------------------------------------------------------------------
# Interpolation, keyframes, loops
# ---------------------------------------------------------------------------------------------------------------


def test_interpolation_puts_both_ends_in_vdg_and_takes_the_context_from_the_start(pipe):
    conds = []

    def capture(denoise, cond):
        conds.append(cond)
        return denoise

    out = interpolate(pipe, IMAGES[0], IMAGES[1], "x", generator=gen(), output_type="pt", sample_posterior=False,
                      denoiser_wrapper=capture, **FAST)
    assert out.frames.shape == (1, 3, T, 32, 32)
    pixels = torch.stack([pipe.preprocess_image(im, 32, 32) for im in IMAGES[:2]], dim=1)[None]  # (1, 3, 2, H, W)
    ends = pipe.encode_video(pixels, sample=False)
    vdg = conds[0].concat[:1]  # conditional branch
    torch.testing.assert_close(vdg[:, :, 0], ends[:, :, 0])
    torch.testing.assert_close(vdg[:, :, -1], ends[:, :, 1])
    assert vdg[:, :, 1:-1].eq(0).all()
    start_tokens = pipe.encode_image(pixels[:, :, 0])
    torch.testing.assert_close(conds[0].context[:1, pipe.config.unet.text_context_len:], start_tokens)


def test_three_keyframes_give_one_video_without_duplicated_boundary_frames(pipe):
    out = interpolate_keyframes(pipe, IMAGES, ["a", "b"], generator=gen(5), output_type="pt", **FAST)
    assert out.frames.shape == (1, 3, 2 * T - 1, 32, 32) and out.latents.shape[2] == 2 * T - 1
    g = gen(5)
    first = interpolate(pipe, IMAGES[0], IMAGES[1], "a", generator=g, output_type="pt", **FAST).frames
    second = interpolate(pipe, IMAGES[1], IMAGES[2], "b", generator=g, output_type="pt", **FAST).frames
    assert torch.equal(out.frames, torch.cat([first, second[:, :, 1:]], dim=2))
    with pytest.raises(UserError, match="3 prompts for 3 keyframes"):
        interpolate_keyframes(pipe, IMAGES, ["a", "b", "c"], **FAST)
    with pytest.raises(UserError, match="at least 2 keyframes"):
        interpolate_keyframes(pipe, IMAGES[:1], **FAST)


def test_closed_loop_denoiser_shares_the_first_frame_with_the_closing_frame():
    seen = []

    def net(z, t):  # a stand-in network: records its input, predicts something frame-dependent
        seen.append(z.clone())
        return z * torch.arange(1.0, z.shape[2] + 1).view(1, 1, -1, 1, 1)

    z = torch.randn(2, 4, 5, 3, 3)
    pred = closed_loop(net)(z, torch.zeros(2))
    assert seen[0].shape[2] == 6 and torch.equal(seen[0][:, :, -1], z[:, :, 0])  # frame 0 appended as frame 5
    assert pred.shape == z.shape
    torch.testing.assert_close(pred[:, :, 0], z[:, :, 0] * (1 + 6) / 2)  # mean of positions 0 and 5
    torch.testing.assert_close(pred[:, :, 1:], z[:, :, 1:] * torch.arange(2.0, 6).view(1, 1, -1, 1, 1))


def test_closed_loop_keeps_the_distinct_frames_and_composes_with_windows(pipe):
    seen = []

    def wrapper(denoise, cond):
        def recorded(z, t):
            seen.append(z.shape[2])
            return denoise(z, t)
        return recorded

    out = loop(pipe, IMAGES[0], "x", method="closed", generator=gen(2), output_type="pt", denoiser_wrapper=wrapper,
               **FAST)
    assert out.frames.shape[2] == T - 1 and out.latents.shape[2] == T - 1 and set(seen) == {T - 1}
    again = loop(pipe, IMAGES[0], "x", method="closed", generator=gen(2), output_type="pt", **FAST)
    assert torch.equal(out.frames, again.frames)  # seeded loops are reproducible
    closing = loop(pipe, IMAGES[0], "x", method="closed", generator=gen(2), output_type="pt", drop_last_frame=False,
                   **FAST).frames
    assert torch.equal(closing[:, :, :-1], out.frames) and torch.equal(closing[:, :, -1], closing[:, :, 0])
    long = loop(pipe, IMAGES[0], "x", method="closed", generator=gen(2), output_type="pt", num_frames=3 * T,
                temporal_windows=TemporalWindows(T, T // 2), **{**FAST, "num_inference_steps": 1})
    assert long.frames.shape[2] == 3 * T - 1
    with pytest.raises(UserError, match="num_frames must be >= 2 for a closed loop"):
        loop(pipe, IMAGES[0], "x", method="closed", num_frames=1, **FAST)


def test_ring_loop_is_an_animation_on_a_circular_timeline(monkeypatch, pipe):
    vdg_filled = []

    def wrapper(denoise, cond):
        vdg_filled.append(bool(cond.concat[:, :, 1:-1].ne(0).any()))
        return denoise

    calls = recorded_unet_calls(monkeypatch, pipe)
    out = loop(pipe, IMAGES[0], "x", generator=gen(2), output_type="pt", denoiser_wrapper=wrapper, **FAST)
    assert pipe.config.interp_mode is False  # the default method of an image-to-video model is the ring
    assert out.frames.shape[2] == T and out.latents.shape[2] == T  # every frame distinct, none dropped
    # every step runs the network on the circle, with the image-to-video VDG input (the image in every frame)
    assert calls == [(T, True)] * FAST["num_inference_steps"] and vdg_filled == [True]
    same = pipe(IMAGES[0], "x", loop=True, loop_method="ring", generator=gen(2), output_type="pt", **FAST)
    assert torch.equal(out.frames, same.frames)
    plain = pipe(IMAGES[0], "x", generator=gen(2), output_type="pt", **FAST)
    assert not torch.allclose(out.frames, plain.frames, atol=1e-4)
    kept = loop(pipe, IMAGES[0], "x", generator=gen(2), output_type="pt", drop_last_frame=False, **FAST).frames
    assert torch.equal(kept[:, :, :-1], out.frames) and torch.equal(kept[:, :, -1], kept[:, :, 0])


def test_long_ring_loop_wraps_its_windows_around_the_circle(monkeypatch, pipe):
    seen = []
    windows = TemporalWindows(T, T // 2)
    denoise = windowed_denoiser(windows, lambda z, t, frames: seen.append(frames.tolist()) or torch.zeros_like(z),
                                3 * T, T, circular=True)
    denoise(torch.zeros(1, 4, 3 * T, 2, 2), torch.zeros(1))
    assert [w[0] for w in seen] == list(range(0, 3 * T, T // 2))
    assert seen[-1] == [(3 * T - T // 2 + k) % (3 * T) for k in range(T)]  # the last window wraps to frame 0

    calls = recorded_unet_calls(monkeypatch, pipe)
    out = loop(pipe, IMAGES[0], "x", generator=gen(2), output_type="pt", num_frames=3 * T, temporal_windows=windows,
               **{**FAST, "num_inference_steps": 1})
    assert out.frames.shape[2] == 3 * T
    # the windows wrap around the circle; inside a window time is a plain segment
    assert calls == [(T, False)] * len(range(0, 3 * T, T // 2))


def test_loop_methods_are_checked(pipe):
    with pytest.raises(UserError, match="unknown loop method 'spiral': use one of \\['ring', 'closed', 'open'\\]"):
        loop(pipe, IMAGES[0], "x", method="spiral", **FAST)
    with pytest.raises(UserError, match="loop_method 'closed' is set but loop is not"):
        pipe(IMAGES[0], "x", loop_method="closed", **FAST)
    with pytest.raises(UserError, match="a closed or open loop ends on its own image: do not pass end_image"):
        pipe(IMAGES[0], "x", end_image=IMAGES[1], loop=True, loop_method="closed", **FAST)
    interp = tiny_pipeline(dataclasses.replace(pipe.config, interp_mode=True))
    with pytest.raises(UserError, match="ring loop animates the image.*use the 'closed' loop method"):
        loop(interp, IMAGES[0], "x", method="ring", **FAST)
    assert loop(interp, IMAGES[0], "x", output_type="pt", **FAST).frames.shape[2] == T - 1  # default: closed


def test_open_loop_is_the_released_interpolation_from_the_image_to_itself(pipe):
    full = loop(pipe, IMAGES[0], "x", generator=gen(2), output_type="pt", method="open", drop_last_frame=False,
                **FAST).frames
    same = pipe(IMAGES[0], "x", end_image=IMAGES[0], generator=gen(2), output_type="pt", **FAST).frames
    assert torch.equal(full, same)
    kept = loop(pipe, IMAGES[0], "x", generator=gen(2), output_type="pt", method="open", **FAST)
    assert kept.frames.shape[2] == T - 1 and kept.latents.shape[2] == T - 1
    assert torch.equal(kept.frames, full[:, :, :-1])


def test_chain_and_crossfade():
    clips = [torch.full((1, 1, 4, 1, 1), float(i)) for i in range(3)]
    assert chain(clips).shape[2] == 10
    video, ranges = crossfade_concat(clips, 1)
    assert video.shape[2] == 12 - 2 and ranges == [(0, 4), (3, 7), (6, 10)]
    assert video[0, 0, :, 0, 0].tolist() == [0, 0, 0, 0.5, 1, 1, 1.5, 2, 2, 2]
    video, ranges = crossfade_concat(clips[:2], 2)
    assert video[0, 0, :, 0, 0].tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1, 1]) and ranges == [(0, 4), (2, 6)]
    assert crossfade_concat(clips, 0)[0].shape[2] == 12
    with pytest.raises(UserError, match="crossfade 2 is too long for clip 2 of 4 frames.*use crossfade <= 1"):
        crossfade_concat(clips, 2)


# ---------------------------------------------------------------------------------------------------------------
# Lambda, stream switches, motion
# ---------------------------------------------------------------------------------------------------------------


def test_lambda_zero_per_group_equals_the_context_stream_off(run):
    off = run(seed=4, context_stream=False)
    assert torch.equal(run(seed=4, image_attention_scale={"input": 0.0, "middle": 0.0, "output": 0.0}), off)
    half = run(seed=4, image_attention_scale={"input": 0.0})
    assert not torch.equal(half, off) and not torch.equal(half, run(seed=4))
    assert not torch.equal(run(seed=4, vdg=False), run(seed=4))


def test_image_attention_scale_parsing():
    assert parse_image_attention_scale("0.5") == 0.5
    assert parse_image_attention_scale(0) == 0.0
    assert parse_image_attention_scale("input=0.5, middle=1.0,output=1") == {"input": 0.5, "middle": 1.0,
                                                                              "output": 1.0}
    layer = "input_blocks.0.1.transformer_blocks.0.attn2"
    assert parse_image_attention_scale(f"{layer}=0.25") == {layer: 0.25}
    assert parse_image_attention_scale({"output": 2}) == {"output": 2.0}
    for bad, message in [("input=abc", "'abc' is not a number"), ("inputs=1", "unknown layer group 'inputs'"),
                         ("-1", ">= 0"), ("input", "is not a number"), ("=1", "is not NAME=NUMBER")]:
        with pytest.raises(UserError, match=message) as e:
            parse_image_attention_scale(bad, "--image-attention-scale")
        assert str(e.value).startswith("--image-attention-scale") and "\n" not in str(e.value)


def test_motion_controls_per_model():
    expected = {"256": ("frame stride", (1, 6), "larger"), "512": ("fps", (15, 30), "smaller"),
                "1024": ("fps", (5, 15), "smaller"), "512_interp": ("fps", (5, 30), "smaller")}
    for name, (meaning, rng, more) in expected.items():
        m = motion_controls(name)
        assert (m.frame_stride_meaning, m.frame_stride_range, m.frame_stride_more_motion) == (meaning, rng, more)
        assert m.image_attention_scale_range == (0.0, 1.0) and m.learned_lambda == (name == "256")
        assert "smaller = a weaker context stream" in m.describe()


# ---------------------------------------------------------------------------------------------------------------
# Stories
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("story")
    for i, im in enumerate(IMAGES):
        im.save(folder / f"img{i}.png")
    return folder


def test_story_concatenates_shots_with_crossfade_and_shots_rerender_alone(image_dir, pipe):
    story = parse_story({"crossfade": 1, "height": 32, "width": 32, "defaults": {"steps": 2},
                         "shots": [{"image": "img0.png", "prompt": "a"},
                                   {"image": "img1.png", "end_image": "img2.png", "prompt": "b", "seed": 9},
                                   {"image": "img2.png", "loop": True}]}, base_dir=image_dir)
    assert [s.seed for s in story.shots] == [123, 9, 125]
    result = render_story(pipe, story)
    lengths = [T, T, T]  # the loop is a ring (the tiny model animates images): all its frames are distinct
    assert result.video.shape[1] == sum(lengths) - 2 and [c.shape[1] for c in result.clips] == lengths
    assert result.frame_ranges == [(0, T), (T - 1, 2 * T - 1), (2 * T - 2, 3 * T - 2)]
    assert [s.options.loop_method for s in result.shots] == [None, None, "ring"]  # resolved for the sidecar
    assert all(s.options.num_frames == T and s.options.num_inference_steps == 2 and s.options.eta == 1.0
               for s in result.shots)  # resolved for the sidecar
    assert torch.equal(render_shot(pipe, result.shots[1]), result.clips[1])
    start, stop = result.frame_ranges[1]
    assert torch.equal(result.video[:, start + 1 : stop - 1], result.clips[1][:, 1:-1])  # outside the cross-fades


@pytest.mark.parametrize(("shots", "message"), [
    ([{"prompt": "no image"}], "shot 1: 'image' is required"),
    ([{"image": "img0.png"}, {"image": "img0.png", "promt": "x"}], "shot 2: unknown field 'promt' (did you mean "
                                                                   "'prompt'?"),
    ([{"image": "missing.png"}], "shot 1: 'image' file not found"),
    ([{"image": "img0.png", "frames": "ten"}], "shot 1: 'frames' must be a whole number in [1, 4096], got 'ten'"),
    ([{"image": "img0.png", "eta": 2}], "shot 1: 'eta' must be a finite number in [0, 1], got 2"),
    ([{"image": "img0.png", "eta": float("nan")}], "shot 1: 'eta' must be a finite number in [0, 1], got nan"),
    ([{"image": "img0.png", "loop": "yes"}], "shot 1: 'loop' must be true or false"),
    ([{"image": "img0.png", "loop": True, "loop_method": "spiral"}], "shot 1: 'loop_method' must be one of ring, "
                                                                     "closed, open, got 'spiral'"),
    ([{"image": "img0.png", "loop_method": "open"}], "shot 1: 'loop_method' is set but 'loop' is not true"),
    ([{"image": "img0.png", "image_attention_scale": "input=x"}], "shot 1: 'image_attention_scale'"),
    (["img0.png"], "shot 1: a shot is a mapping"),
])
def test_bad_scripts_give_one_line_errors_naming_shot_and_field(image_dir, shots, message):
    with pytest.raises(UserError) as e:
        parse_story({"shots": shots}, base_dir=image_dir, name="s.yaml")
    assert message in str(e.value) and str(e.value).startswith("s.yaml: ") and "\n" not in str(e.value)


def test_bad_story_keys_and_crossfade(image_dir, pipe):
    with pytest.raises(UserError, match="unknown key 'shot' \\(did you mean 'shots'"):
        parse_story({"shot": []}, base_dir=image_dir)
    with pytest.raises(UserError, match="'shots' must be a non-empty list"):
        parse_story({"shots": []}, base_dir=image_dir)
    story = parse_story({"crossfade": T, "shots": [{"image": "img0.png"}, {"image": "img1.png"}]}, base_dir=image_dir)
    with pytest.raises(UserError, match="shot 1: 'frames' gives 4 frames, too few for a crossfade of 4"):
        render_story(pipe, story)
    story = parse_story({"shots": [{"image": "img0.png", "image_attention_scale": {"input_blocks.9.attn2": 1}}]},
                        base_dir=image_dir)
    with pytest.raises(UserError, match="shot 1: image_attention_scale: the model has no image cross-attention"):
        render_story(pipe, story)


# ---------------------------------------------------------------------------------------------------------------
# Measured checks (figures on a trained model; the mechanical parts hold for any weights)
# ---------------------------------------------------------------------------------------------------------------


def test_checks_run_and_their_mechanical_parts_hold(pipe):
    report = interpolation_report(pipe, IMAGES[0], IMAGES[1], "x", **FAST)
    video = interpolate(pipe, IMAGES[0], IMAGES[1], "x", generator=gen(CHECK_SEED), output_type="pt",
                        **FAST).frames[0]
    start, end = (pipe.preprocess_image(im, 32, 32) for im in IMAGES[:2])
    assert report.vdg_ends
    assert report.start_error == pytest.approx(float(((video[:, 0] - start) ** 2).mean()))
    assert report.end_error == pytest.approx(float(((video[:, -1] - end) ** 2).mean()))
    looped = loop_report(pipe, IMAGES[0], "x", **FAST)
    video = loop(pipe, IMAGES[0], "x", generator=gen(CHECK_SEED), output_type="pt", **FAST).frames[0]
    steps = ((video[:, 1:] - video[:, :-1]) ** 2).mean(dim=(0, 2, 3))
    assert looped.frames == T == video.shape[1]
    assert looped.seam_step == pytest.approx(float(((video[:, -1] - video[:, 0]) ** 2).mean()))
    assert looped.mean_step == pytest.approx(float(steps.mean())) and looped.mean_step > 0
    assert looped.seam_ratio == pytest.approx(looped.seam_step / looped.mean_step)
    sweep = lambda_sweep(pipe, IMAGES[0], "x", scales=(0.0, 1.0), **FAST)
    assert sweep.zero_is_context_off and len(sweep.image_error) == 2
    windows = window_report(pipe, IMAGES[0], "x", num_frames=8, windows=TemporalWindows(4, 2),
                            **{**FAST, "num_inference_steps": 1})
    assert windows.frames == 8 and windows.covered and windows.full_window_is_plain
    assert windows.windows == [(0, 4), (2, 6), (4, 8)]
