"""The fewer-step samplers (DPM-Solver++(2M), UniPC) beside the released DDIM: exactness on known solutions,
agreement with diffusers' schedulers where those apply, zero terminal SNR, dynamic rescale, the pipeline wiring and
the convergence benchmark's quick mode."""

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

from dynamicrafter.config import ScheduleConfig, config_for_tests
from dynamicrafter.diffusion.ddim import sample_ddim
from dynamicrafter.diffusion.dpm_solver import sample_dpmpp_2m
from dynamicrafter.diffusion.ode import ode_grid
from dynamicrafter.diffusion.samplers import SAMPLERS
from dynamicrafter.diffusion.schedule import NoiseSchedule
from dynamicrafter.diffusion.timesteps import sampling_timesteps
from dynamicrafter.diffusion.unipc import corrector_weights, sample_unipc
from dynamicrafter.errors import ConfigError
from dynamicrafter.options import SAMPLER_NAMES, SETTINGS_BY_NAME, SamplingOptions
from dynamicrafter.testing import random_image, tiny_pipeline

EPS = NoiseSchedule.from_config(ScheduleConfig())
V_PLAIN = NoiseSchedule.from_config(ScheduleConfig(parameterization="v"))
V_ZERO_SNR = NoiseSchedule.from_config(ScheduleConfig(parameterization="v", rescale_betas_zero_snr=True))
V_RESCALED = NoiseSchedule.from_config(ScheduleConfig(parameterization="v", rescale_betas_zero_snr=True,
                                                      use_dynamic_rescale=True))
NEW = {"dpmpp_2m": sample_dpmpp_2m, "unipc": sample_unipc}
SHAPE = (2, 4, 3, 4, 4)


def noise(seed: int, shape=SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def spacing_for(schedule: NoiseSchedule) -> str:
    return "uniform_trailing" if schedule.config.rescale_betas_zero_snr else "uniform"


def output_from_x0(schedule: NoiseSchedule, z: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The network output (eps or v) whose x0 prediction at (z, t) is ``x0`` (x0 is what the model predicts,
    including any dynamic-rescale factor)."""
    a = schedule.alphas_cumprod[t].double().view(-1, 1, 1, 1, 1)
    eps = (z.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
    out = eps if schedule.parameterization == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0.double()
    return out.float()


def scale_at(schedule: NoiseSchedule, t) -> float:
    return 1.0 if schedule.scale_arr is None else float(schedule.scale_arr[t])


class GaussianData:
    """Data z_0 ~ N(mu, var) per element: the exact denoiser and the exact probability-flow ODE solution.

    With dynamic rescale the model at t is trained on s_t z_0, so it predicts E[s_t z_0 | z_t]. The ODE keeps
    xi = (z - alpha_t mu) / sqrt(alpha_t^2 var + sigma_t^2) constant (alpha_t = sqrt(a_t) s_t).
    """

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.mu = noise(10)
        self.var = 0.05 + noise(11).abs()

    def moments(self, t: int, end: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t mu and the marginal std at timestep t (at the end point alpha_bar_0 with s = scale_arr[0])."""
        a = float(self.schedule.alphas_cumprod[0 if end else t].double())
        alpha = math.sqrt(a) * scale_at(self.schedule, 0 if end else t)
        return alpha * self.mu, (alpha**2 * self.var + (1 - a)).sqrt()

    def denoiser(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = float(self.schedule.alphas_cumprod[int(t[0])].double())
        s = scale_at(self.schedule, int(t[0]))
        alpha = math.sqrt(a) * s
        x0 = s * self.mu + alpha * s * self.var / (alpha**2 * self.var + (1 - a)) * (z - alpha * self.mu)
        return output_from_x0(self.schedule, z, t, x0)

    def exact(self, z_T: torch.Tensor, t_start: int) -> torch.Tensor:
        mean, std = self.moments(t_start)
        mean_0, std_0 = self.moments(0, end=True)
        return mean_0 + std_0 * (z_T - mean) / std


def run(sampler, schedule, denoiser, z, steps, spacing=None, **kw):
    return sampler(denoiser, z, schedule, sampling_timesteps(steps, spacing or spacing_for(schedule)), 0.0, **kw)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


# ---------------------------------------------------------------------------------------------------------------------
# Registry and options
# ---------------------------------------------------------------------------------------------------------------------


def test_registry_options_and_flags_list_the_same_samplers():
    assert tuple(SAMPLERS) == SAMPLER_NAMES == ("ddim", "dpmpp_2m", "unipc")
    assert SETTINGS_BY_NAME["sampler"].choices == SAMPLER_NAMES
    assert "ignored" in SETTINGS_BY_NAME["eta"].help
    assert SamplingOptions(sampler="unipc").sampler == "unipc"


def test_eta_set_for_a_deterministic_sampler_warns():
    config = config_for_tests()
    with pytest.warns(UserWarning, match="eta 0.5 is ignored by the deterministic sampler 'unipc'"):
        SamplingOptions(sampler="unipc", eta=0.5).resolved(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamplingOptions(sampler="unipc").resolved(config)  # the released eta default: no warning
        SamplingOptions(sampler="ddim", eta=0.5).resolved(config)


# ---------------------------------------------------------------------------------------------------------------------
# Known solutions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("schedule", [EPS, V_ZERO_SNR, V_RESCALED], ids=["eps", "v-zero-snr", "v-rescaled"])
@pytest.mark.parametrize("steps", [1, 5, 20])
def test_exact_denoiser_of_one_data_point_lands_on_it(name, schedule, steps):
    """With the exact prediction for one data point z0 (s_t z0 under dynamic rescale) every data prediction
    u = x0_hat / s_t is z0, so any correct solver ends exactly at sqrt(a_0) z0 + sqrt(1 - a_0) eps: this fails if
    the rescale factor is not undone (the predictions would differ from step to step) or the first zero-SNR step
    is mishandled."""
    z0, eps = noise(0), noise(1)

    def oracle(z, t):
        return output_from_x0(schedule, z, t, z0 * scale_at(schedule, int(t[0])))

    timesteps = sampling_timesteps(steps, spacing_for(schedule))
    t_N = timesteps[-1]
    a_N = float(schedule.alphas_cumprod[t_N])
    z_T = math.sqrt(a_N) * scale_at(schedule, t_N) * z0 + math.sqrt(1 - a_N) * eps
    out = NEW[name](oracle, z_T, schedule, timesteps, 0.0)
    a_0 = float(schedule.alphas_cumprod[0])
    torch.testing.assert_close(out, math.sqrt(a_0) * z0 + math.sqrt(1 - a_0) * eps, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", [EPS, V_ZERO_SNR, V_RESCALED], ids=["eps", "v-zero-snr", "v-rescaled"])
def test_gaussian_data_errors_shrink_faster_than_ddim(schedule):
    """On Gaussian data the probability-flow ODE has a closed-form solution. From 20 to 80 steps DDIM's error falls
    about four-fold (first order); DPM-Solver++(2M)'s and UniPC's (higher order) at least 6-fold, and they end far
    closer (measured: 6.5-11x against 3.7-3.9x)."""
    data = GaussianData(schedule)
    z_T = noise(2)
    steps = (20, 80)
    exact = {n: data.exact(z_T, sampling_timesteps(n, spacing_for(schedule))[-1]) for n in steps}  # from t_N

    def errors(fn):
        return [rms(run(fn, schedule, data.denoiser, z_T, n), exact[n]) for n in steps]

    err = {name: errors(fn) for name, fn in NEW.items()}
    for name, (e20, e80) in err.items():
        assert e80 < e20 / 6, (name, err[name])
    if schedule.scale_arr is None:  # (DDIM's last step keeps the released scale s of its smallest timestep)
        ddim = errors(sample_ddim)
        assert ddim[0] / 4.5 < ddim[1] < ddim[0] / 3, ddim
        for name in NEW:
            assert err[name][1] < ddim[1] / 2, (name, err[name], ddim)


@pytest.mark.parametrize("schedule", [EPS, V_ZERO_SNR], ids=["eps", "v-zero-snr"])
def test_converges_to_the_many_step_ddim_result(schedule):
    """A nonlinear denoiser (no closed form), trailing spacing (every run starts at t = T - 1): the distance to
    1000-step DDIM (eta 0) falls with the steps, and 20 steps are closer than DDIM's 50."""
    weight = noise(3, (4, 4)) / 4

    def denoiser(z, t):
        c = t.float().view(-1, 1, 1, 1, 1) / 1000
        return torch.tanh(torch.einsum("ij,bj...->bi...", weight, z) + c) * (1 - c) + 0.3 * z * c

    z_T = noise(4)
    reference = run(sample_ddim, schedule, denoiser, z_T, 1000, "uniform_trailing")
    for name, fn in NEW.items():
        d = [rms(run(fn, schedule, denoiser, z_T, n, "uniform_trailing"), reference) for n in (5, 10, 20, 50)]
        assert d[0] > d[1] > d[2] > d[3] and d[3] < d[0] / 20, (name, d)
    ddim_50 = rms(run(sample_ddim, schedule, denoiser, z_T, 50, "uniform_trailing"), reference)
    for fn in NEW.values():
        assert rms(run(fn, schedule, denoiser, z_T, 20, "uniform_trailing"), reference) < ddim_50


@pytest.mark.parametrize("schedule", [EPS, V_ZERO_SNR], ids=["eps", "v-zero-snr"])
def test_extrapolated_ddim_reference_of_the_benchmark_is_closer_to_the_exact_solution(schedule):
    """The benchmark's second reference, DDIM_250 + (DDIM_250 - DDIM_50) / 4, cancels DDIM's first-order error: on
    Gaussian data (trailing spacing, so both runs start at t = T - 1) it is several times closer to the exact ODE
    solution than DDIM_250 itself."""
    data = GaussianData(schedule)
    z_T = noise(12)
    exact = data.exact(z_T, 999)
    ddim_50, ddim_250 = (run(sample_ddim, schedule, data.denoiser, z_T, n, "uniform_trailing") for n in (50, 250))
    extrapolated = ddim_250 + (ddim_250 - ddim_50) * 50 / 200
    assert rms(extrapolated, exact) < rms(ddim_250, exact) / 4


def test_first_order_step_is_ddim():
    """One step (and every first-order step) is the DDIM step at eta 0."""
    data = GaussianData(V_ZERO_SNR)
    z_T = noise(5)
    for fn in NEW.values():
        torch.testing.assert_close(run(fn, V_ZERO_SNR, data.denoiser, z_T, 1), run(sample_ddim, V_ZERO_SNR,
                                                                                   data.denoiser, z_T, 1))


# ---------------------------------------------------------------------------------------------------------------------
# Against diffusers' schedulers (where they apply exactly: no zero terminal SNR, no dynamic rescale)
# ---------------------------------------------------------------------------------------------------------------------


def _nonlinear(z, t):
    return 0.5 * torch.tanh(z) + 0.3 * torch.sin(t.float().view(-1, 1, 1, 1, 1) / 300.0) * z


def _diffusers_run(scheduler, z: torch.Tensor) -> torch.Tensor:
    x = z.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(_nonlinear(x, t.view(1)), t, x).prev_sample
    return x


@pytest.mark.parametrize("schedule", [EPS, V_PLAIN], ids=["eps", "v"])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_agree_with_diffusers_schedulers(schedule, steps):
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                  final_sigmas_type="sigma_min", lower_order_final=True,  # the last step ends at alpha_bar_0
                  prediction_type="epsilon" if schedule.parameterization == "eps" else "v_prediction")
    z = noise(6)
    timesteps = sampling_timesteps(steps, "uniform")
    dpm = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, euler_at_final=True, **common)
    dpm.set_timesteps(timesteps=list(reversed(timesteps)))
    torch.testing.assert_close(sample_dpmpp_2m(_nonlinear, z, schedule, timesteps), _diffusers_run(dpm, z),
                               atol=5e-5, rtol=1e-5)
    unipc = UniPCMultistepScheduler(solver_order=2, solver_type="bh2", timestep_spacing="trailing", **common)
    unipc.set_timesteps(steps)
    trailing = sampling_timesteps(steps, "uniform_trailing")
    assert unipc.timesteps.tolist() == list(reversed(trailing))
    torch.testing.assert_close(sample_unipc(_nonlinear, z, schedule, trailing), _diffusers_run(unipc, z),
                               atol=5e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Zero terminal SNR, determinism, callbacks
# ---------------------------------------------------------------------------------------------------------------------


def test_zero_snr_grid_has_an_infinite_first_step_handled_explicitly():
    grid = ode_grid(V_ZERO_SNR, sampling_timesteps(10, "uniform_trailing"))
    assert grid.timesteps[0] == 999 and grid.alpha[0] == 0.0 and grid.sigma[0] == 1.0
    assert grid.lam[0] == -math.inf and grid.h(0) == math.inf and grid.phi(0) == 1.0
    assert grid.ratio(1, 0) is None  # the zero-SNR point is no multistep history
    assert all(math.isfinite(grid.lam[k]) for k in range(1, grid.num_steps + 1))
    assert corrector_weights(math.inf, None) == (0.0, 1.0)  # b_1(h) -> 1: the exact limit, not 1/2
    assert corrector_weights(0.3, None) == (0.0, 0.5)
    rho_1, rho_2 = corrector_weights(1e-3, -1.0)
    # small h, equal steps: the third-order Adams-Moulton weights 5/12 u_{k+1} + 8/12 u_k - 1/12 u_{k-1}
    assert rho_1 == pytest.approx(1 / 12, abs=1e-3) and rho_2 == pytest.approx(5 / 12, abs=1e-3)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("steps", [1, 2, 3, 25, 50])
def test_zero_snr_first_step_is_finite(name, steps):
    weight = noise(7, (4, 4))

    def denoiser(z, t):  # an arbitrary bounded v prediction
        return torch.tanh(torch.einsum("ij,bj...->bi...", weight, z)) * (1 + t.float().view(-1, 1, 1, 1, 1) / 100)

    out = run(NEW[name], V_RESCALED, denoiser, noise(8), steps)
    assert torch.isfinite(out).all() and out.abs().max() < 100


@pytest.mark.parametrize("name", NEW)
def test_eps_prediction_at_zero_snr_is_refused(name):
    eps_zero_snr = NoiseSchedule.from_config(ScheduleConfig(rescale_betas_zero_snr=True))
    with pytest.raises(ConfigError, match="no x0 prediction at t = 999"):
        run(NEW[name], eps_zero_snr, lambda z, t: z, noise(0), 5, "uniform_trailing")


@pytest.mark.parametrize("name", NEW)
def test_deterministic_whatever_eta_and_generator(name):
    data = GaussianData(V_RESCALED)
    z = noise(9)
    ts = sampling_timesteps(7, "uniform_trailing")
    a = NEW[name](data.denoiser, z, V_RESCALED, ts, 0.0, None)
    b = NEW[name](data.denoiser, z, V_RESCALED, ts, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NEW)
def test_callback_sees_every_step_and_can_replace_the_latents(name):
    data = GaussianData(EPS)
    seen = []

    def callback(i, t, z, z0):
        seen.append((i, t, z0.shape))
        return torch.zeros_like(z) if i == 2 else None

    ts = sampling_timesteps(3)
    out = NEW[name](data.denoiser, noise(9), EPS, ts, 0.0, None, callback)
    assert [(i, t) for i, t, _ in seen] == [(0, ts[2]), (1, ts[1]), (2, ts[0])]
    assert torch.equal(out, torch.zeros(SHAPE))


# ---------------------------------------------------------------------------------------------------------------------
# Through the pipeline
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_pipeline_sampler_option_runs_all_guidance_branches_in_one_network_batch(name, parameterization):
    pipe = tiny_pipeline(config_for_tests(parameterization=parameterization, height=32, width=32, num_frames=2))
    calls = []
    forward = pipe.model.unet.forward

    def counting(x, *args, **kwargs):
        calls.append(x.shape[0])
        return forward(x, *args, **kwargs)

    pipe.model.unet.forward = counting
    image, latents = random_image(32, 32), noise(1, (1, 4, 2, 16, 16))

    def generate(sampler, steps):
        return pipe(image, "x", sampler=sampler, num_inference_steps=steps, eta=0.0, guidance_scale=5.0,
                    image_guidance_scale=2.0, guidance_rescale=0.5, timestep_spacing="uniform_trailing",
                    latents=latents, generator=torch.Generator().manual_seed(0), output_type="latent").frames

    out = generate(name, 4)
    assert calls == [3] * 4  # three guidance branches (text + image guidance), one network batch per step
    assert torch.isfinite(out).all() and not torch.equal(out, generate("ddim", 4))
    if parameterization == "eps":  # no dynamic rescale: a single (first-order) step is the DDIM step
        torch.testing.assert_close(generate(name, 1), generate("ddim", 1))


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------------


def test_convergence_benchmark_quick_mode(capsys):
    path = Path(__file__).parents[1] / "benchmarks" / "sampler_convergence.py"
    spec = importlib.util.spec_from_file_location("sampler_convergence", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    (result,) = module.main(["--quick"])
    printed = capsys.readouterr().out
    assert printed.count("| sampler |") == 4 and "steps to match" in printed
    for (reference, what), table in result.distances.items():
        assert set(table) == set(SAMPLERS)
        for row in table.values():
            assert all(math.isfinite(v) and v >= 0 for v in row.values())
        ddim = [table["ddim"][s] for s in result.steps]
        assert ddim == sorted(ddim, reverse=True) and ddim[-1] < result.control[reference, what]
    latent = result.distances["ddim", "latent"]
    assert latent["ddim"][result.baseline_steps] > 0 and result.steps_to_match("ddim", "latent", "ddim") == 4
