"""Flow schedules and samplers (docs/model.md §4). Pure functions over a schedule with a per-step callback.

A model function is ``model_fn(x (B,C,H,W) fp32, t (B,) fp32 model timestep) -> v (B,C,H,W) fp32`` — the flow
velocity, with guidance already applied (guidance.py wraps the network; the samplers know nothing of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import SanaError

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(step index, steps, x after the step, predicted x0) — progress, previews, interrupt checks
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]

SAMPLERS = ("flow_dpm_solver", "flow_euler")


@dataclass(frozen=True)
class Schedule:
    sigmas: torch.Tensor  # (N+1,) float32, decreasing, ends at 0
    timesteps: torch.Tensor  # (N,) float32: what the model is given (0..1000)

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def _shift(s: np.ndarray, shift: float) -> np.ndarray:
    return shift * s / (1 + (shift - 1) * s)


def _check(steps: int, shift: float) -> None:
    if steps < 1:
        raise SanaError(f"steps must be at least 1, got {steps}")
    if not shift > 0 or not math.isfinite(shift):
        raise SanaError(f"flow shift must be a positive number, got {shift}")


def flow_dpm_schedule(steps: int, shift: float) -> Schedule:
    """DPMSolverMultistepScheduler with flow sigmas: σ over linspace(0, 0.999), shifted, final σ 0, and model
    timesteps truncated to integers from the float64 σ (diffusers and NVlabs both truncate)."""
    _check(steps, shift)
    u = 1.0 - np.linspace(1, 1 / 1000, steps + 1)  # float64
    s = np.flip(_shift(u, shift))[:-1].copy()
    timesteps = torch.from_numpy(s * 1000).to(torch.int64).to(torch.float32)
    sigmas = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))
    return Schedule(sigmas, timesteps)


def flow_euler_schedule(steps: int, shift: float) -> Schedule:
    """FlowMatchEulerDiscreteScheduler: linspace(1, σ_min) with the shift applied twice, float timesteps."""
    _check(steps, shift)
    s_min = torch.tensor(1.0, dtype=torch.float32) / 1000  # the constructor's σ_min, shifted in float32
    s_min = (shift * s_min / (1 + (shift - 1) * s_min)).item()
    s = np.linspace(1000.0, s_min * 1000, steps) / 1000  # float64
    s = torch.from_numpy(_shift(s, shift)).to(torch.float32)
    return Schedule(torch.cat([s, torch.zeros(1)]), s * 1000)


def make_schedule(sampler: str, steps: int, shift: float) -> Schedule:
    if sampler == "flow_dpm_solver":
        return flow_dpm_schedule(steps, shift)
    if sampler == "flow_euler":
        return flow_euler_schedule(steps, shift)
    raise SanaError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def partial_schedule(sampler: str, steps: int, shift: float, denoise: float) -> Schedule:
    """img2img: the last ``steps`` steps of a ``steps/denoise``-step schedule (ComfyUI's KSampler convention)."""
    if not 0 < denoise <= 1:
        raise SanaError(f"denoise must be in (0, 1], got {denoise}")
    if denoise == 1:
        return make_schedule(sampler, steps, shift)
    full = make_schedule(sampler, int(steps / denoise), shift)
    return Schedule(full.sigmas[-(steps + 1):], full.timesteps[-steps:])


def noise_for_seed(seed: int, shape: tuple[int, ...], batch_index: list[int] | None = None) -> torch.Tensor:
    """The noise ComfyUI's KSampler and diffusers (CPU generator) draw for a seed: fp32 randn on the CPU, one
    tensor for the whole batch. ``batch_index`` (a LATENT's per-item indices) draws as ComfyUI's prepare_noise."""
    g = torch.Generator("cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(shape, generator=g, dtype=torch.float32)
    draws = [torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


def noise_latent(latent: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Flow forward process x_σ = σ·noise + (1−σ)·latent (pure noise when σ = 1 or latent is zero)."""
    return sigma * noise + (1.0 - sigma) * latent


_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _nan_error(i: int, steps: int, dtype: torch.dtype | None = None) -> SanaError:
    """The hint follows the model's compute dtype: an fp16 overflow only where it computes in fp16."""
    where = f"the model produced NaN/Inf at step {i + 1} of {steps}, where finite values are expected"
    if dtype == torch.float16:
        return SanaError(f"{where}; it computes in fp16 and this is usually an fp16 overflow — load the transformer "
                         "in bf16 (or fp32)")
    if dtype is None:
        return SanaError(f"{where}; if the transformer computes in fp16 this is usually an fp16 overflow (load it in "
                         "bf16 or fp32), otherwise check its weights and any LoRA files applied to it")
    name = _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
    return SanaError(f"{where}; it computes in {name}: check the transformer's weights and any LoRA files applied "
                     "to it")


class FiniteCheck:
    """The NaN/Inf check of every step. On the CPU it raises at once; on a GPU each step's flag stays on the device
    and ``done()`` reads them all at the end (reading one per step would stall the GPU queue every step). Either way
    the error names the first step that failed; ``dtype``, the model's compute dtype, picks its hint."""

    def __init__(self, steps: int, dtype: torch.dtype | None = None):
        self.steps = steps
        self.dtype = dtype
        self._flags: list[tuple[int, torch.Tensor]] = []

    def __call__(self, v: torch.Tensor, i: int) -> None:
        if v.is_cuda:
            self._flags.append((i, torch.isfinite(v).all()))
        elif not torch.isfinite(v).all():
            raise _nan_error(i, self.steps, self.dtype)

    def done(self) -> None:
        if not self._flags:
            return
        ok = torch.stack([f for _, f in self._flags]).cpu()
        steps = [i for i, _ in self._flags]
        self._flags = []
        if not bool(ok.all()):
            raise _nan_error(steps[int((~ok).nonzero()[0])], self.steps, self.dtype)


def flow_dpm_solver(denoise_fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor,
                    sigmas: torch.Tensor, callback: Callback | None = None, *,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """DPM-Solver++(2M, midpoint) on flow sigmas over a data-prediction function ``denoise_fn(x, i) -> x0``;
    first order on the first and last step (docs/model.md §4.1). fp32 arithmetic on 0-dim σ tensors, in diffusers'
    order (bit parity). Shared by the Sana sampler and ComfyUI's native SAMPLER. ``dtype``: the model's compute
    dtype, for the NaN/Inf error's hint (None: unknown)."""
    sig = sigmas.float().cpu()
    n = len(sig) - 1
    x = x.float()
    prev_x0 = None
    check = FiniteCheck(n, dtype)

    def lam(s):  # λ(σ) = log α − log σ, α = 1 − σ
        return torch.log(1 - s) - torch.log(s)

    for i in range(n):
        x0 = denoise_fn(x, i)
        check(x0, i)
        s0, s1 = sig[i], sig[i + 1]
        a1 = 1 - s1
        h = lam(s1) - lam(s0)
        if prev_x0 is None or i == n - 1:
            x_next = (s1 / s0) * x - (a1 * (torch.exp(-h) - 1.0)) * x0
        else:
            r0 = (lam(s0) - lam(sig[i - 1])) / h
            d1 = (1.0 / r0) * (x0 - prev_x0)
            x_next = (s1 / s0) * x - (a1 * (torch.exp(-h) - 1.0)) * x0 - 0.5 * (a1 * (torch.exp(-h) - 1.0)) * d1
        prev_x0 = x0
        x = x_next
        if callback is not None:
            callback(i, n, x, x0)
    check.done()
    return x


def sample_flow_dpm(model_fn: ModelFn, x: torch.Tensor, schedule: Schedule, callback: Callback | None = None, *,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """Flow-DPM-Solver on a velocity model: x0 = x − σ·v (σ > 0 before the last step, so a NaN/Inf in v shows in
    x0, which the solver checks)."""
    sig = schedule.sigmas.float().cpu()  # 0-dim CPU σ: scalars to the kernels, no host-to-device copy per step
    ts = schedule.timesteps.to(x.device)  # one copy, not one per step

    def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
        v = model_fn(x, ts[i].expand(x.shape[0])).float()
        return x - sig[i] * v

    return flow_dpm_solver(denoise, x, sig, callback, dtype=dtype)


def sample_flow_euler(model_fn: ModelFn, x: torch.Tensor, schedule: Schedule, callback: Callback | None = None, *,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """Flow Euler: x ← x + (σ_{i+1} − σ_i)·v, in fp32."""
    sig = schedule.sigmas.float().cpu()
    n = schedule.steps
    x = x.float()
    ts = schedule.timesteps.to(x.device)
    check = FiniteCheck(n, dtype)
    for i in range(n):
        v = model_fn(x, ts[i].expand(x.shape[0])).float()
        check(v, i)
        x0 = x - sig[i] * v
        x = x + (sig[i + 1] - sig[i]) * v
        if callback is not None:
            callback(i, n, x, x0)
    check.done()
    return x


def sample(sampler: str, model_fn: ModelFn, x: torch.Tensor, schedule: Schedule,
           callback: Callback | None = None, *,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """``dtype``: the model's compute dtype, for the NaN/Inf error's hint (None: unknown)."""
    if sampler == "flow_dpm_solver":
        return sample_flow_dpm(model_fn, x, schedule, callback, dtype=dtype)
    if sampler == "flow_euler":
        return sample_flow_euler(model_fn, x, schedule, callback, dtype=dtype)
    raise SanaError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


# --- Sana-Sprint (SCM, trigflow; docs/model.md §8) -------------------------------------------------------------------

def sprint_trig_times(steps: int, max_t: float = 1.57080, intermediate: float | None = 1.3,
                      denoise: float = 1.0) -> torch.Tensor:
    """The trig times of a ``steps``-step SCM schedule. ``denoise`` < 1 (image-to-image) drops the first
    ``int(steps − steps·denoise)`` of them, as diffusers' strength does; at least one step is kept."""
    if steps < 1:
        raise SanaError(f"steps must be at least 1, got {steps}")
    if not 0 < denoise <= 1:
        raise SanaError(f"denoise must be in (0, 1], got {denoise}")
    if steps == 2 and intermediate is not None:
        trig = torch.tensor([max_t, intermediate, 0.0], dtype=torch.float32)
    else:
        trig = torch.linspace(max_t, 0, steps + 1, dtype=torch.float32)
    skip = min(int(steps - steps * denoise), steps - 1)
    return trig[skip:]


def sample_sprint(model_fn: ModelFn, noise: torch.Tensor, trig: torch.Tensor, generator: torch.Generator,
                  sigma_data: float = 0.5, callback: Callback | None = None,
                  latent: torch.Tensor | None = None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """SCM sampling. ``model_fn(x_in, τ)`` gets the flow time τ ∈ [0, 1] (not ×1000) and returns v.
    Fresh noise is drawn on every step, the last included (it consumes the generator as diffusers does).
    ``latent`` (scaled, image-to-image) starts from cos(s₀)·latent + sin(s₀)·noise instead of pure noise.
    Returns the final x0 / σ_d — a raw latent ready for the decoder. ``dtype``: as for ``sample``."""
    x = noise.float() * sigma_data
    if latent is not None:
        x = torch.cos(trig[0]) * (latent.float() * sigma_data) + torch.sin(trig[0]) * x
    n = len(trig) - 1
    x0 = x
    check = FiniteCheck(n, dtype)
    for i in range(n):
        s, s_next = trig[i], trig[i + 1]
        tau = torch.sin(s) / (torch.sin(s) + torch.cos(s))
        norm = torch.sqrt(tau**2 + (1 - tau) ** 2)
        x_in = (x / sigma_data) * norm
        v = model_fn(x_in, tau.expand(x.shape[0]).to(x.device)).float()
        check(v, i)
        f = ((1 - 2 * tau) * x_in + (1 - 2 * tau + 2 * tau**2) * v) / norm * sigma_data
        x0 = torch.cos(s) * x - torch.sin(s) * f
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device) * sigma_data
        x = torch.cos(s_next) * x0 + torch.sin(s_next) * z
        if callback is not None:
            callback(i, n, x, x0 / sigma_data)
    check.done()
    return x0 / sigma_data
