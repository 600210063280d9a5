"""Schedules and sampling loops against diffusers' schedulers; guidance and binning."""

import pytest
import torch
from sana_comfy.sana_core import bins
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.guidance import parse_pag_layers
from sana_comfy.sana_core.sampling import (
    flow_dpm_schedule,
    flow_euler_schedule,
    noise_for_seed,
    partial_schedule,
    sample_flow_dpm,
    sample_flow_euler,
)

STEPS = [1, 2, 5, 20]
SHIFTS = [1.0, 3.0, 6.0]


def _dpm(shift):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
                                       algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                       lower_order_final=True, final_sigmas_type="zero")


def _euler(shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=shift)


@pytest.mark.parity
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("kind", ["dpm", "euler"])
def test_schedule_identical(steps, shift, kind):
    ref = (_dpm if kind == "dpm" else _euler)(shift)
    ref.set_timesteps(steps)
    ours = (flow_dpm_schedule if kind == "dpm" else flow_euler_schedule)(steps, shift)
    assert torch.equal(ours.sigmas, ref.sigmas)
    assert torch.equal(ours.timesteps, ref.timesteps.float())  # dpm: the truncated integers; euler: floats


@pytest.mark.unit
def test_dpm_timesteps_published_values():
    want = [999, 982, 963, 944, 922, 899, 874, 847, 817, 785, 749, 710, 666, 617, 562, 499, 428, 345, 249, 136]
    assert flow_dpm_schedule(20, 3.0).timesteps.tolist() == want


def _toy_model(x, t):
    """A nonlinear velocity field that depends on x and t, so solver order matters."""
    return torch.tanh(x * 1.3) * (t.view(-1, 1, 1, 1) / 1000) + 0.1 * x.roll(1, dims=-1)


@pytest.mark.parity
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("kind", ["dpm", "euler"])
def test_full_loop_matches_scheduler_step(steps, shift, kind):
    x = noise_for_seed(7, (2, 32, 3, 5))
    ref = (_dpm if kind == "dpm" else _euler)(shift)
    ref.set_timesteps(steps)
    xr = x.clone()
    for t in ref.timesteps:
        tt = t.expand(2).float()
        xr = ref.step(_toy_model(xr, tt), t, xr, return_dict=False)[0]
    seen = []
    fn = sample_flow_dpm if kind == "dpm" else sample_flow_euler
    sched = (flow_dpm_schedule if kind == "dpm" else flow_euler_schedule)(steps, shift)
    xo = fn(_toy_model, x, sched, callback=lambda i, n, xi, x0: seen.append((i, n)))
    assert seen == [(i, steps) for i in range(steps)]
    assert (xo - xr).abs().max().item() <= 1e-6


@pytest.mark.parity
def test_noise_matches_comfy_and_diffusers_draws():
    from diffusers.utils.torch_utils import randn_tensor

    a = noise_for_seed(42, (2, 32, 4, 4))
    b = randn_tensor((2, 32, 4, 4), generator=torch.Generator("cpu").manual_seed(42), dtype=torch.float32)
    assert torch.equal(a, b)
    # ComfyUI's prepare_noise: torch.manual_seed(seed) then torch.randn(..., generator=that generator, device="cpu")
    c = torch.randn((2, 32, 4, 4), generator=torch.manual_seed(42), dtype=torch.float32, device="cpu")
    assert torch.equal(a, c)
    assert torch.equal(noise_for_seed(2**64 - 1, (1, 2)), noise_for_seed(2**64 - 1, (1, 2)))


@pytest.mark.unit
def test_partial_schedule():
    full = flow_dpm_schedule(10, 3.0)
    part = partial_schedule("flow_dpm_solver", 6, 3.0, 0.6)
    assert torch.equal(part.sigmas, full.sigmas[-7:]) and len(part.timesteps) == 6
    assert torch.equal(partial_schedule("flow_euler", 5, 3.0, 1.0).sigmas, flow_euler_schedule(5, 3.0).sigmas)
    with pytest.raises(SanaError, match="steps must be at least 1"):
        flow_dpm_schedule(0, 3.0)
    with pytest.raises(SanaError, match="denoise"):
        partial_schedule("flow_dpm_solver", 5, 3.0, 1.5)


@pytest.mark.unit
def test_nan_velocity_stops_with_step_and_hint():
    calls = []

    def bad(x, t):
        calls.append(1)
        return torch.full_like(x, float("nan")) if len(calls) == 2 else x

    with pytest.raises(SanaError, match=r"NaN/Inf at step 2 of 5.*bf16"):
        sample_flow_dpm(bad, torch.zeros(1, 32, 2, 2), flow_dpm_schedule(5, 3.0))


@pytest.mark.unit
def test_pag_layer_parsing():
    assert parse_pag_layers("8", 20) == {8}
    assert parse_pag_layers("7, 9-11", 20) == {7, 9, 10, 11}
    with pytest.raises(SanaError, match=r"out of range.*0\.\.19"):
        parse_pag_layers("25", 20)
    with pytest.raises(SanaError, match=r"cannot read 'x'.*0\.\.19"):
        parse_pag_layers("x", 20)


@pytest.mark.parity
def test_bins_match_diffusers_tables():
    from diffusers.image_processor import PixArtImageProcessor
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    for res, ref in [(512, ASPECT_RATIO_512_BIN), (1024, ASPECT_RATIO_1024_BIN), (2048, ASPECT_RATIO_2048_BIN),
                     (4096, ASPECT_RATIO_4096_BIN)]:
        assert {k: tuple(int(x) for x in v) for k, v in ref.items()} == bins.BIN_TABLES[res]
        for h, w in [(1024, 1024), (768, 1360), (333, 999), (1000, 250), (4000, 100)]:
            assert bins.nearest_bin(h, w, res) == PixArtImageProcessor.classify_height_width_bin(h, w, ref)
    img = torch.rand(1, 3, 64, 96)
    want = PixArtImageProcessor.resize_and_crop_tensor(img, 70, 50)
    assert torch.equal(bins.resize_and_crop(img, 50, 70), want)
    assert bins.table_for_model(32) == 1024 and bins.table_for_size(2000, 2100) == 2048
