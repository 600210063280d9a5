"""Sampling on the host's machinery: progress with live previews and the interrupt, Sana as a MODEL with its flow
shift, SanaSample on the path KSampler takes, the Flow-DPM-Solver as a host sampler, and PAG as a model patch."""

from __future__ import annotations

import logging

import comfy.k_diffusion.sampling
import comfy.model_management as mm
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ...sana_core import caches
from ...sana_core.errors import SanaError
from ...sana_core.guidance import pag_guide, pag_scale_at, parse_pag_layers
from ...sana_core.pipeline import SampleOptions, check_cond, check_latent
from ...sana_core.sampling import flow_dpm_solver, partial_schedule
from ...sana_core.video import check_video_latent, is_video
from .. import conditioning
from .comfy_classes import SanaModelSampling, SanaVideoSupported
from .constants import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, PAG_KEY, SAMPLER_NAME
from .memory import Handle, unwrap

log = logging.getLogger(__name__)


# --- progress, previews and interrupt ---------------------------------------------------------------------------------

class Progress:
    """One ProgressBar update per step, with a live preview when the host asks for previews; each update is also
    an interruption point."""

    def __init__(self, total: int, video: bool = False):
        self.total = total
        self.bar = comfy.utils.ProgressBar(total)
        self.preview = video_previewer() if video else previewer()

    def step(self, done: int, x0: torch.Tensor | None = None) -> None:
        mm.throw_exception_if_processing_interrupted()
        image = None
        if self.preview is not None and x0 is not None:
            image = self.preview.decode_latent_to_preview_image("JPEG", x0)
        self.bar.update_absolute(done, self.total, image)


class _TaesanaPreview:
    """TAESANA behind the host's TAESD previewer interface: decode(x0) → image in [-1, 1]."""

    def __init__(self, path, device):
        from ...sana_core.load.taesana import load_taesana_decoder

        self.decoder = load_taesana_decoder(path, device)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.decoder(x0.to(next(self.decoder.parameters()).device, torch.float32)) * 2 - 1


def previewer():
    """As the host's --preview-method says: TAESANA when asked for TAESD and models/vae_approx holds
    taesana_decoder*, else the latent→RGB factors; None when previews are off."""
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod, args

    method = args.preview_method
    if method == LatentPreviewMethod.NoPreviews:
        return None
    if method == LatentPreviewMethod.TAESD:
        name = next((f for f in folder_paths.get_filename_list("vae_approx") if f.startswith("taesana_decoder")), None)
        if name:
            return latent_preview.TAESDPreviewerImpl(_TaesanaPreview(folder_paths.get_full_path("vae_approx", name),
                                                                     mm.get_torch_device()))
        log.warning("TAESD previews asked for, but models/vae_approx has no taesana_decoder file: using latent2rgb")
    return latent_preview.Latent2RGBPreviewer(LATENT_RGB_FACTORS, LATENT_RGB_BIAS)


def video_previewer():
    """SANA-Video's previews are the host's own for Wan 2.1 latents (its latent→RGB factors, or TAEHV when asked
    for TAESD and models/vae_approx has it); None when previews are off."""
    import latent_preview

    return latent_preview.get_previewer(mm.get_torch_device(), SanaVideoSupported.latent_format())


# --- Sana as a MODEL, SanaSample on the host's path ------------------------------------------------------------------

def native_model(handle: Handle, shift: float | None = None, truncate_timesteps: bool = True):
    """A MODEL (a clone of the SANA_MODEL's patcher); ``shift`` replaces the flow shift. Flow-Euler gives the model
    its σ·1000 unrounded (``truncate_timesteps`` False)."""
    m = handle.clone()
    if shift or not truncate_timesteps:
        sampling = SanaModelSampling(m.model.model_config)
        sampling.set_parameters(shift=shift or m.model.model_sampling.shift)
        sampling.truncate = truncate_timesteps
        m.add_object_patch("model_sampling", sampling)
    return m


def native_sampling(cfg) -> bool:
    """Whether SanaSample rides the host's sampling for this model config: every flow model and every SANA-Video
    model; Sana-Sprint (its own SCM sampler, guidance as a model input) takes the core's sampler."""
    return is_video(cfg) or not cfg.guidance_embeds


def _sampling_model(base, opts: SampleOptions, num_layers: int):
    """The MODEL SanaSample samples with: a clone of ``base`` (the SANA_MODEL's patcher, or a patched MODEL of it)
    with the shift, timestep rounding and PAG patch, one per base and settings, kept on the base (a cycle the
    collector frees with it): the host sees the same model on every run and has nothing to load again."""
    key = (opts.flow_shift, opts.sampler, opts.pag_scale, opts.pag_adaptive_scale, opts.pag_layers)
    kept = caches.kept(base, "sampling", dict)
    if key not in kept:
        m = native_model(base, opts.flow_shift or None, truncate_timesteps=opts.sampler == "flow_dpm_solver")
        if opts.pag_scale > 0:
            m = pag_model(m, opts.pag_scale, opts.pag_adaptive_scale, parse_pag_layers(opts.pag_layers, num_layers))
        kept.clear()
        kept[key] = m
    return kept[key]


def sample_native(handle: Handle, positive: list, negative: list, latent: dict, seed: int, opts: SampleOptions,
                  progress: Progress, patched=None) -> torch.Tensor:
    """SanaSample on the path KSampler takes (``comfy.sample.sample_custom`` with the host's CFG guider): every
    conditioning entry (combine, area, mask, timestep range, strength, ControlNet) and noise masks act as with
    KSampler. The sigmas are the reference schedule; PAG is the same model patch Sana PAG adds. ``patched``, a MODEL
    made by Sana to MODEL from the same SANA_MODEL, brings its patches (mask functions, LoRA, wrappers): sampling
    runs on a clone of it instead of the handle. Returns the raw latent."""
    import comfy.sample

    net = unwrap(handle)
    if patched is not None and getattr(patched, "model", None) is not handle.model:
        raise SanaError(f"patched_model is {_describe_model(patched)}, not Sana to MODEL's MODEL of this Sana model "
                        "(connect the MODEL that Sana to MODEL made from the same SANA_MODEL, after its patches)")
    samples = latent["samples"]
    if is_video(net.cfg):
        check_video_latent(samples, net.cfg)
        if opts.pag_scale > 0:
            raise SanaError("PAG is not available for SANA-Video models (their reference pipeline has none): set "
                            "pag_scale to 0")
    else:
        check_latent(samples)
    sides = ((positive, "positive"), (negative, "negative")) if opts.cfg > 1 else ((positive, "positive"),)
    for cond, what in sides:  # the negative counts only with CFG
        for c in conditioning.side(cond, what):
            check_cond(net, c, what)
    if opts.denoise <= 0:
        return samples.clone()
    m = _sampling_model(patched or handle, opts, net.cfg.num_layers)
    sched = partial_schedule(opts.sampler, opts.steps, opts.flow_shift or net.cfg.flow_shift, opts.denoise)
    sampler = sampler_object() if opts.sampler == "flow_dpm_solver" else comfy.samplers.sampler_object("euler")
    latent_image = comfy.sample.fix_empty_latent_channels(m, samples)
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    return comfy.sample.sample_custom(
        m, noise, max(opts.cfg, 1.0), sampler, sched.sigmas, positive, negative, latent_image,
        noise_mask=latent.get("noise_mask"), callback=lambda i, x0, x, n: progress.step(i + 1, x0),
        disable_pbar=True, seed=seed)


def _describe_model(m) -> str:
    inner = getattr(m, "model", None)
    return f"a MODEL of {type(inner).__name__}" if inner is not None else f"a {type(m).__name__}"


# --- the Flow-DPM-Solver as a host sampler, PAG as a model patch ------------------------------------------------------

def sample_sana_flow_dpm_solver(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """The Flow-DPM-Solver as a k-diffusion sampler: ``model(x, σ)`` returns the data prediction x0; a NaN/Inf names
    the model's compute dtype."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])

    def denoise(xi, i):
        return model(xi, sigmas[i] * s_in, **extra_args)

    def cb(i, n, xi, x0):
        if callback is not None:
            callback({"x": xi, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

    patcher = getattr(getattr(model, "inner_model", None), "model_patcher", None)  # the guider's MODEL
    return flow_dpm_solver(denoise, x, sigmas, cb, dtype=patcher.model_dtype() if patcher is not None else None)


def sampler_object():
    """The Flow-DPM-Solver as a SAMPLER."""
    return comfy.samplers.KSAMPLER(sample_sana_flow_dpm_solver)


def pag_model(model, scale: float, adaptive: float, blocks: frozenset[int]):
    """A clone of a Sana MODEL that adds PAG after CFG (``guidance.pag_guide`` on data predictions), with identity
    self-attention in ``blocks`` for the perturbed pass."""
    m = model.clone()

    def post_cfg(args):
        denoised, cond, sigma, x = args["denoised"], args["cond"], args["sigma"], args["input"]
        opts = args["model_options"].copy()
        opts["transformer_options"] = {**opts.get("transformer_options", {}), PAG_KEY: blocks}
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [cond], x, sigma, opts)
        t = float(args["model"].model_sampling.timestep(sigma).flatten()[0]) if adaptive else 1000.0
        return pag_guide(denoised, args["cond_denoised"], perturbed, pag_scale_at(scale, adaptive, t))

    m.set_model_sampler_post_cfg_function(post_cfg, disable_cfg1_optimization=True)
    return m


def register_sampler() -> None:
    """KSampler's ``sana_flow_dpm_solver``: the function in comfy.k_diffusion.sampling and the name in
    comfy.samplers.KSAMPLER_NAMES and SAMPLER_NAMES (nothing changes for other models)."""
    setattr(comfy.k_diffusion.sampling, f"sample_{SAMPLER_NAME}", sample_sana_flow_dpm_solver)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)
