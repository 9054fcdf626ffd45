import pytest
import torch

from dynamicrafter.config import ScheduleConfig
from dynamicrafter.diffusion import NoiseSchedule, classifier_free_guidance, sample_ddim
from dynamicrafter.diffusion.ddim import ddim_coefficients
from dynamicrafter.diffusion.denoiser import make_denoiser
from dynamicrafter.diffusion.guidance import Guidance
from dynamicrafter.diffusion.timesteps import sampling_timesteps
from dynamicrafter.errors import ConfigError

EPS = NoiseSchedule.from_config(ScheduleConfig())
V = NoiseSchedule.from_config(ScheduleConfig(parameterization="v", rescale_betas_zero_snr=True,
                                             use_dynamic_rescale=True, base_scale=0.7))


def test_scaled_linear_schedule_values():
    assert EPS.betas[0].item() == pytest.approx(0.00085, rel=1e-5)
    assert EPS.betas[-1].item() == pytest.approx(0.012, rel=1e-5)
    ac = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0)
    torch.testing.assert_close(EPS.alphas_cumprod, ac.float())


def test_zero_terminal_snr():
    assert V.alphas_cumprod[-1].item() == 0.0
    assert V.alphas_cumprod[0].item() == pytest.approx(EPS.alphas_cumprod[0].item(), rel=1e-6)
    assert bool((V.alphas_cumprod[1:] < V.alphas_cumprod[:-1]).all())


def test_dynamic_rescale_factors():
    assert V.scale_arr.shape == (1400,)
    assert V.scale_arr[0].item() == 1.0 and V.scale_arr[399].item() == pytest.approx(0.7)
    assert bool((V.scale_arr[400:] == pytest.approx(0.7)).all() if False else torch.allclose(
        V.scale_arr[400:], torch.tensor(0.7)))


def test_timestep_spacings():
    assert sampling_timesteps(6, "uniform") == [1, 167, 333, 499, 665, 831, 997]
    assert sampling_timesteps(50, "uniform")[:3] == [1, 21, 41] and len(sampling_timesteps(50, "uniform")) == 50
    trailing = sampling_timesteps(50, "uniform_trailing")
    assert trailing[-1] == 999 and trailing[0] == 19 and len(trailing) == 50
    assert sampling_timesteps(3, "uniform_trailing") == [332, 666, 999]
    assert sampling_timesteps(3, "uniform") == [1, 334, 667]  # 1000 would be past the schedule
    assert all(max(sampling_timesteps(s)) < 1000 for s in range(1, 200))
    with pytest.raises(ConfigError):
        sampling_timesteps(10, "karras")
    with pytest.raises(ConfigError):
        sampling_timesteps(0)


def test_last_step_uses_alpha_bar_zero_and_rescale_one():
    c = ddim_coefficients(V, sampling_timesteps(10, "uniform_trailing"), eta=1.0)
    assert c["a_prev"][0].item() == V.alphas_cumprod[0].item()
    assert c["rescale"][0].item() == 1.0
    assert c["rescale"][-1].item() == pytest.approx(1.0)  # both in the flat part at the start of sampling
    c0 = ddim_coefficients(EPS, sampling_timesteps(10), eta=0.0)
    assert bool((c0["sigma"] == 0).all())


def test_parameterization_conversions():
    z0, noise = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([5, 700])
    z_t = V.q_sample(z0, t, noise)
    v = V.velocity(z0, noise, t)
    torch.testing.assert_close(V.x0_from_v(z_t, t, v), z0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(V.eps_from_v(z_t, t, v), noise, atol=1e-5, rtol=1e-5)


def test_training_inputs_apply_dynamic_rescale():
    z0, noise, t = torch.ones(1, 1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1), torch.tensor([600])
    z_t, target = V.training_inputs(z0, t, noise)
    assert z_t.item() == pytest.approx(0.7 * V.sqrt_alphas_cumprod[600].item(), rel=1e-6)
    assert target.item() == pytest.approx(-V.sqrt_one_minus_alphas_cumprod[600].item() * 0.7, rel=1e-6)
    _, eps_target = EPS.training_inputs(z0, t, torch.full_like(z0, 0.3))
    assert eps_target.item() == pytest.approx(0.3)


def test_cfg_formulas():
    c, u, ui = torch.full((1, 4), 3.0), torch.full((1, 4), 1.0), torch.full((1, 4), 2.0)
    assert torch.allclose(classifier_free_guidance(c, u, 7.5), u + 7.5 * (c - u))
    out = classifier_free_guidance(c, u, 7.5, ui, image_scale=2.0)
    assert torch.allclose(out, u + 2.0 * (ui - u) + 7.5 * (c - ui))
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    plain = classifier_free_guidance(c, u, 5.0)
    full = classifier_free_guidance(c, u, 5.0, guidance_rescale=1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), c.std(dim=(1, 2, 3)))
    half = classifier_free_guidance(c, u, 5.0, guidance_rescale=0.5)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)


def test_denoiser_runs_every_guidance_branch_in_one_network_call():
    calls = []

    def network(x, t, context, fs, circular):
        calls.append(x.shape[0])
        # branch k's output is (k + 1) z: the context row of each sample holds its branch number
        return x * (context[:, :1, :1, None, None] + 1)

    z = torch.ones(2, 1, 3, 2, 2)
    context = torch.arange(2.0).repeat_interleave(2).view(4, 1, 1)  # [cond, cond, uncond, uncond]
    denoise = make_denoiser(network, context=context, concat=None, fs=torch.zeros(4), guidance=Guidance(3.0),
                            num_frames=3, temporal_length=3)
    out = denoise(z, torch.zeros(2))
    assert calls == [4]  # both branches in one call: cond = z, uncond = 2 z -> 2 + 3 (1 - 2) = -1
    assert torch.allclose(out, torch.full(z.shape, -1.0))


@pytest.mark.parametrize("schedule", [EPS, V])
def test_ddim_with_exact_denoiser_follows_the_noise_path(schedule):
    """With the exact prediction for one data point z0, deterministic DDIM keeps the noise eps fixed and ends at
    sqrt(a_0) z0 s + sqrt(1 - a_0) eps (s = the dynamic-rescale factor of the smallest sampled timestep)."""
    z0 = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    scale = schedule.scale_arr

    def target_at(t):
        return z0 * (scale[t].view(-1, 1, 1, 1, 1) if scale is not None else 1.0)

    def oracle(z, t):
        a = schedule.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        e = (z - a.sqrt() * target_at(t)) / (1 - a).sqrt()
        return e if schedule.parameterization == "eps" else a.sqrt() * e - (1 - a).sqrt() * target_at(t)

    timesteps = sampling_timesteps(20, "uniform" if schedule is EPS else "uniform_trailing")
    a_T = schedule.alphas_cumprod[timesteps[-1]]
    z_T = a_T.sqrt() * target_at(torch.tensor([timesteps[-1]])) + (1 - a_T).sqrt() * eps
    out = sample_ddim(oracle, z_T, schedule, timesteps, eta=0.0)
    a0 = schedule.alphas_cumprod[0]
    expected = a0.sqrt() * target_at(torch.tensor([timesteps[0]])) + (1 - a0).sqrt() * eps
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_ddim_seeded_is_bit_identical_and_eta_zero_ignores_generator():
    def denoiser(z, t):
        return 0.1 * z + t.float().view(-1, 1, 1, 1, 1) / 1000

    z = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    ts = sampling_timesteps(5)
    a = sample_ddim(denoiser, z, EPS, ts, 1.0, torch.Generator().manual_seed(3))
    b = sample_ddim(denoiser, z, EPS, ts, 1.0, torch.Generator().manual_seed(3))
    c = sample_ddim(denoiser, z, EPS, ts, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    d0 = sample_ddim(denoiser, z, EPS, ts, 0.0, torch.Generator().manual_seed(3))
    d1 = sample_ddim(denoiser, z, EPS, ts, 0.0, torch.Generator().manual_seed(4))
    assert torch.equal(d0, d1)


@pytest.mark.parametrize("steps", [25, 50])
def test_zero_snr_ddim_with_eta_one_stays_finite(steps):
    """At a_T = 0 the first step's 1 - a_t' - sigma_t^2 is 0 and float32 rounds it to -6e-8 for 25 trailing steps."""
    ts = sampling_timesteps(steps, "uniform_trailing")
    c = ddim_coefficients(V, ts, 1.0)
    assert float(c["a"][-1]) == 0.0
    z = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    out = sample_ddim(lambda z, t: 0.5 * z, z, V, ts, 1.0, torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all()
