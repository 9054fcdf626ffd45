import threading

import numpy as np
import pytest
import torch
from PIL import Image

from dynamicrafter.conditioning import cfg_dropout_masks, vdg_latents
from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import UserError
from dynamicrafter.options import SamplingOptions
from dynamicrafter.testing import random_image, tiny_pipeline

IMAGE = random_image()
T = config_for_tests().defaults.num_frames


@pytest.fixture
def run(pipe):
    """``run(seed=0, pipe=None, **kwargs)``: the tiny pipeline (or ``pipe``) on one image, frames as a tensor."""

    def call(seed=0, pipe=pipe, **kwargs):
        kwargs.setdefault("output_type", "pt")
        return pipe(IMAGE, "a red square moves left", generator=torch.Generator().manual_seed(seed), **kwargs)

    return call


def test_output_types_and_shapes(run):
    pt = run().frames
    assert pt.shape == (1, 3, T, 64, 64) and pt.min() >= -1 and pt.max() <= 1
    np_frames = run(output_type="np").frames
    assert np_frames.shape == (1, T, 64, 64, 3)
    np.testing.assert_allclose(np_frames, (pt.permute(0, 2, 3, 4, 1).numpy() + 1) / 2, atol=1e-6)
    pil = run(output_type="pil").frames
    assert len(pil) == 1 and len(pil[0]) == T and isinstance(pil[0][0], Image.Image)
    latent = run(output_type="latent").frames
    assert latent.shape == (1, 4, T, 32, 32)


def test_seeded_runs_are_bit_identical(run):
    assert torch.equal(run(seed=3).frames, run(seed=3).frames)
    assert not torch.equal(run(seed=3).frames, run(seed=4).frames)


def test_given_latents_and_eta_zero_are_deterministic(run):
    latents = torch.randn(1, 4, T, 32, 32, generator=torch.Generator().manual_seed(9))
    a = run(seed=1, latents=latents, eta=0.0, sample_posterior=False).frames
    b = run(seed=2, latents=latents, eta=0.0, sample_posterior=False).frames
    assert torch.equal(a, b)


def test_precomputed_inputs_equal_the_computed_path(pipe):
    prompt = "a red square moves left"
    generator = torch.Generator().manual_seed(5)
    pixels = pipe.preprocess_image(IMAGE, 64, 64)[None]
    image_latents = vdg_latents(pipe.encode_video(pixels[:, :, None], generator), T)
    latents = torch.randn(1, 4, T, 32, 32, generator=generator)
    direct = pipe(IMAGE, prompt, generator=torch.Generator().manual_seed(5), output_type="latent").frames
    pre = pipe(prompt_embeds=pipe.encode_prompt([prompt]), negative_prompt_embeds=pipe.encode_prompt([""]),
               image_embeds=pipe.encode_image(pixels), image_latents=image_latents, latents=latents,
               image=IMAGE, generator=torch.Generator().manual_seed(99), eta=0.0, output_type="latent").frames
    again = pipe(IMAGE, prompt, image_latents=image_latents, latents=latents, eta=0.0, output_type="latent").frames
    torch.testing.assert_close(pre, again)
    assert direct.shape == pre.shape


def test_image_guidance_with_equal_scales_equals_two_branch_guidance(run):
    a = run(seed=1, guidance_scale=5.0).frames
    b = run(seed=1, guidance_scale=5.0, image_guidance_scale=5.0).frames
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    c = run(seed=1, guidance_scale=5.0, image_guidance_scale=1.0).frames
    assert not torch.allclose(a, c, atol=1e-3)


def test_stream_switches(run):
    base = run(seed=1).frames
    no_context = run(seed=1, context_stream=False).frames
    torch.testing.assert_close(run(seed=1, image_attention_scale=0.0).frames, no_context)
    assert not torch.allclose(base, no_context, atol=1e-4)
    assert not torch.allclose(base, run(seed=1, vdg=False).frames, atol=1e-4)
    # the switches are restored after the call
    torch.testing.assert_close(run(seed=1).frames, base)


def test_negative_prompt_and_batches(pipe, run):
    assert not torch.allclose(run(seed=1).frames, run(seed=1, negative_prompt="blurry").frames, atol=1e-4)
    out = pipe(IMAGE, ["a cat", "a dog"], generator=torch.Generator().manual_seed(0), output_type="pt").frames
    assert out.shape[0] == 2


def test_interpolation_puts_both_ends_in_vdg(run):
    frames = torch.arange(2.0).view(1, 1, 2, 1, 1).expand(1, 4, 2, 2, 2)
    vdg = vdg_latents(frames, 5, interp=True)
    assert vdg[0, 0, :, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    vdg = vdg_latents(frames + 3, 5, interp=True)
    assert vdg[0, 0, :, 0, 0].tolist() == [3.0, 0.0, 0.0, 0.0, 4.0]
    out = run(seed=1, end_image=random_image(seed=7)).frames
    assert out.shape == (1, 3, T, 64, 64) and not torch.allclose(out, run(seed=1).frames, atol=1e-4)


def test_callback_can_observe_and_replace_latents(run):
    seen = []

    def callback(pipe, i, t, tensors):
        seen.append((i, t))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == len(seen) - 1 == 3 else None

    run(seed=1, callback_on_step_end=callback, num_inference_steps=4)
    assert [i for i, _ in seen] == [0, 1, 2, 3] and seen[0][1] > seen[-1][1]


def test_cfg_dropout_masks_follow_the_released_proportions():
    drop_text, drop_image = cfg_dropout_masks(200_000, 0.05, torch.Generator().manual_seed(0))
    assert drop_text.float().mean().item() == pytest.approx(0.10, abs=0.003)
    assert drop_image.float().mean().item() == pytest.approx(0.10, abs=0.003)
    assert (drop_text & drop_image).float().mean().item() == pytest.approx(0.05, abs=0.003)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"height": 62}, "multiples of 4"),
    ({"eta": 1.5}, "eta must be"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"frame_stride": 0}, "frame_stride"),
    ({"output_type": "gif"}, "output_type"),
    ({"latents": torch.zeros(1, 4, 2, 8, 8)}, "latents has shape"),
])
def test_bad_options_raise_one_line_errors(kwargs, message, run):
    with pytest.raises(UserError, match=message) as e:
        run(**kwargs)
    assert "\n" not in str(e.value)


def test_missing_image_and_wrong_image_tensor(pipe):
    with pytest.raises(UserError, match="give an image"):
        pipe(None, "x")
    with pytest.raises(UserError, match="image tensors must be"):
        pipe(torch.zeros(64, 64), "x")


def test_v_prediction_model_runs():
    pipe = tiny_pipeline(config_for_tests(parameterization="v"))
    out = pipe(IMAGE, "x", generator=torch.Generator().manual_seed(0), output_type="pt").frames
    assert torch.isfinite(out).all()


def test_sampling_options_object_equals_the_keyword_call(pipe, run):
    options = SamplingOptions(num_inference_steps=3, guidance_scale=5.0, eta=0.5, image_attention_scale=0.5, seed=11)
    by_object = pipe(IMAGE, "a red square moves left", options, output_type="pt").frames
    by_keywords = run(seed=11, num_inference_steps=3, guidance_scale=5.0, eta=0.5, image_attention_scale=0.5).frames
    assert torch.equal(by_object, by_keywords)
    # keyword overrides win over the options object
    overridden = pipe(IMAGE, "a red square moves left", options, eta=0.0, output_type="pt").frames
    assert torch.equal(overridden, run(seed=11, num_inference_steps=3, guidance_scale=5.0, eta=0.0,
                                       image_attention_scale=0.5).frames)
    with pytest.raises(TypeError, match="unexpected sampling option 'num_inference_step'.*did you mean"):
        pipe(IMAGE, "x", num_inference_step=3)


def test_two_threads_with_different_lambdas_get_their_single_thread_results(pipe):
    """Lambda reaches the layers with each call (no module state), so concurrent calls do not disturb each other."""
    scales = [0.0, 1.0, {"input": 0.25, "output": 2.0}]
    options = [SamplingOptions(num_inference_steps=4, image_attention_scale=s, seed=5) for s in scales]
    alone = [pipe(IMAGE, "a red square moves left", o, output_type="pt").frames for o in options]
    assert not torch.equal(alone[0], alone[1]) and not torch.equal(alone[1], alone[2])
    results: dict[int, torch.Tensor] = {}
    start = threading.Barrier(len(options))

    def work(i: int) -> None:
        start.wait()
        for _ in range(2):  # several calls each, so that the threads' network calls interleave
            results[i] = pipe(IMAGE, "a red square moves left", options[i], output_type="pt").frames

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(options))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, expected in enumerate(alone):
        assert torch.equal(results[i], expected), f"thread {i} (lambda {scales[i]}) differs from its single run"
