"""The host inside ComfyUI: model folders from folder_paths, devices and eviction from model_management,
ModelPatcher handles, ProgressBar with live previews and the interrupt flag; the native MODEL, VAE and SAMPLER
views; and ``extend_host``, the pack's only change to ComfyUI's global state."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.k_diffusion.sampling
import comfy.lora
import comfy.model_management as mm
import comfy.model_patcher
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ...sana_core import lora
from ...sana_core.errors import SanaError
from ...sana_core.guidance import parse_pag_layers
from ...sana_core.pipeline import check_cond, check_latent
from ...sana_core.sampling import flow_dpm_solver, partial_schedule
from .. import conditioning
from . import comfy_layers
from .comfy_classes import (
    SanaBaseModel,
    SanaControlModel,
    SanaControlNetPatch,
    SanaLatentFormat,
    SanaModelSampling,
    SanaVAEAdapter,
)
from .constants import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, PAG_KEY, SAMPLER_NAME

log = logging.getLogger(__name__)


def model_roots(key: str) -> list[Path]:
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(key)]
    except KeyError:
        return []


# --- handles, devices and memory --------------------------------------------------------------------------------------

def devices(kind: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for 'diffusion' | 'text_encoder' | 'vae'."""
    if kind == "text_encoder":
        return mm.text_encoder_device(), mm.text_encoder_offload_device()
    if kind == "vae":
        return mm.vae_device(), mm.vae_offload_device()
    return mm.get_torch_device(), mm.unet_offload_device()


class _Holder(torch.nn.Module):
    """What ModelPatcher manages: it sets ``.device`` on its model, which our modules expose read-only."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device


class SanaTextEncoderModel(_Holder):
    """Gemma-2 as the host's model management holds it (the name its log shows)."""


class SanaDCAEModel(_Holder):
    """The DC-AE as the host's model management holds it (the name its log shows)."""


_HOLDERS = {"text_encoder": SanaTextEncoderModel, "vae": SanaDCAEModel}


def wrap(module: torch.nn.Module, kind: str) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher the host can evict. A Sana transformer is wrapped as a native ComfyUI model from the start,
    so SANA_MODEL and MODEL share one patcher and one copy of the weights."""
    load_device, offload = devices(kind)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    inner = SanaBaseModel(module, offload) if kind == "diffusion" else _HOLDERS[kind](module, offload)
    return comfy.model_patcher.ModelPatcher(inner, load_device=load_device, offload_device=offload, size=size)


def unwrap(handle) -> torch.nn.Module:
    return handle.model.inner


def operations():
    """The layer classes the loaders build from: the host's ``comfy.ops`` and their like (``comfy_layers.py``)."""
    return comfy_layers.Operations


load = comfy_layers.load


def release(handle) -> None:
    if handle.load_device == handle.offload_device:
        return
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is handle:
            mm.current_loaded_models.pop(i).model_unload()


_PATCH_ROOT = {"transformer": "diffusion_model.net.", "text_encoder": "inner."}  # where a part sits in its patcher


def add_lora(handle, sd: dict, part: str, strength: float, source: str):
    """A clone of the patcher with the LoRA as the host's own weight patches (LoRA, LoHa, LoKr, DoRA … through
    ComfyUI's adapters), applied when the host loads it and undone when it unloads; the file is checked first."""
    found = lora.prepare(unwrap(handle), sd, part, source)
    m = handle.clone()
    if strength != 0:
        patches = comfy.lora.load_lora(sd, {p: _PATCH_ROOT[part] + k for p, k in found.targets.items()},
                                       log_missing=False)
        m.add_patches(patches, strength)
    return m


def intermediate_device() -> torch.device:
    return mm.intermediate_device()


# --- progress, previews and interrupt ---------------------------------------------------------------------------------

class Progress:
    """One ProgressBar update per step, with a live preview when the host asks for previews; each update is also
    an interruption point."""

    def __init__(self, total: int):
        self.total = total
        self.bar = comfy.utils.ProgressBar(total)
        self.preview = previewer()

    def step(self, done: int, x0: torch.Tensor | None = None) -> None:
        mm.throw_exception_if_processing_interrupted()
        image = None
        if self.preview is not None and x0 is not None:
            image = self.preview.decode_latent_to_preview_image("JPEG", x0)
        self.bar.update_absolute(done, self.total, image)


class _TaesanaPreview:
    """TAESANA behind ComfyUI's TAESD previewer interface: decode(x0) → image in [-1, 1]."""

    def __init__(self, path, device):
        from ...sana_core.taesana import load_taesana_decoder

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


# --- native ComfyUI citizens: MODEL, VAE, SAMPLER, PAG ----------------------------------------------------------------

def native_model(handle, shift: float | None = None, truncate_timesteps: bool = True):
    """A MODEL (ModelPatcher clone) over a SANA_MODEL's handle; ``shift`` replaces the flow shift. Flow-Euler gives
    the model its σ·1000 unrounded (``truncate_timesteps`` False)."""
    m = handle.clone()
    if shift or not truncate_timesteps:
        sampling = SanaModelSampling(m.model.model_config)
        sampling.set_parameters(shift=shift or m.model.model_sampling.shift)
        sampling.truncate = truncate_timesteps
        m.add_object_patch("model_sampling", sampling)
    return m


def native_sampling(cfg) -> bool:
    """Whether SanaSample rides the host's sampling for this model: every flow model; Sana-Sprint (its own SCM
    sampler, guidance as a model input) takes the pack's sampler."""
    return not cfg.guidance_embeds


def _sampling_model(base, opts, num_layers: int):
    """The MODEL SanaSample samples with: a clone of ``base`` (the SANA_MODEL's patcher, or a patched MODEL of it)
    with the shift, timestep rounding and PAG patch, one per base and settings, kept on the base (a cycle the
    collector frees with it): the host sees the same model on every run and has nothing to load again."""
    key = (opts.flow_shift, opts.sampler, opts.pag_scale, opts.pag_adaptive_scale, opts.pag_layers)
    kept = base.__dict__.setdefault("_sana_sampling", {})
    if key not in kept:
        m = native_model(base, opts.flow_shift or None, truncate_timesteps=opts.sampler == "flow_dpm_solver")
        if opts.pag_scale > 0:
            m = pag_model(m, opts.pag_scale, opts.pag_adaptive_scale, parse_pag_layers(opts.pag_layers, num_layers))
        kept.clear()
        kept[key] = m
    return kept[key]


def sample_native(handle, positive, negative, latent: dict, seed: int, opts, progress,
                  patched=None) -> torch.Tensor:
    """SanaSample on the host's own path, the one KSampler takes (``comfy.sample.sample_custom`` with CFGGuider):
    every conditioning entry (combine, area, mask, timestep range, strength, ControlNet) and noise masks act as with
    KSampler. The sigmas are the reference schedule (``sampling.py``); PAG is the same model patch SanaPAG adds.
    ``patched``, a MODEL over the same Sana model, brings its patches (mask functions, LoRA, wrappers).
    Returns the raw latent."""
    import comfy.sample

    net = unwrap(handle)
    if patched is not None and getattr(patched, "model", None) is not handle.model:
        raise SanaError(f"patched_model is {_describe_model(patched)}, not Sana to MODEL's MODEL of this Sana model "
                        "(connect the MODEL that Sana to MODEL made from the same SANA_MODEL, after its patches)")
    samples = latent["samples"]
    check_latent(samples)
    sides = ((positive, "positive"), (negative, "negative")) if opts.cfg > 1 else ((positive, "positive"),)
    for cond, what in sides:  # the negative counts only with CFG, as on the pack's own path
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


def control_net(module: torch.nn.Module):
    """A CONTROL_NET for ComfyUI's Apply ControlNet nodes: the host's generic wrapper, with the control image
    resized to the latent's size ×32 and DC-AE-encoded (through the node's VAE), then scaled as a Sana latent."""
    return SanaControlNetPatch(SanaControlModel(module), compression_ratio=1, latent_format=SanaLatentFormat(),
                               load_device=mm.get_torch_device(), manual_cast_dtype=None,
                               extra_conds=["attention_mask"])


def vae_adapter(handle) -> SanaVAEAdapter:
    return SanaVAEAdapter(handle)


def sample_sana_flow_dpm_solver(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """The Flow-DPM-Solver as a k-diffusion sampler: ``model(x, σ)`` returns the data prediction x0."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])

    def denoise(xi, i):
        return model(xi, sigmas[i] * s_in, **extra_args)

    def cb(i, n, xi, x0):
        if callback is not None:
            callback({"x": xi, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

    return flow_dpm_solver(denoise, x, sigmas, cb)


def sampler_object():
    return comfy.samplers.KSAMPLER(sample_sana_flow_dpm_solver)


def pag_model(model, scale: float, adaptive: float, blocks: frozenset[int]):
    """Clone of a Sana MODEL that adds PAG after CFG: x0 += s·(x0_cond − x0_perturbed), with identity
    self-attention in ``blocks`` for the perturbed pass (equal to PAG on velocities, being linear)."""
    m = model.clone()

    def post_cfg(args):
        denoised, cond, sigma, x = args["denoised"], args["cond"], args["sigma"], args["input"]
        opts = args["model_options"].copy()
        opts["transformer_options"] = {**opts.get("transformer_options", {}), PAG_KEY: blocks}
        (ptb,) = comfy.samplers.calc_cond_batch(args["model"], [cond], x, sigma, opts)
        s = scale
        if adaptive:
            t = float(args["model"].model_sampling.timestep(sigma).flatten()[0])
            s = max(0.0, scale - adaptive * (1000 - t))
        return denoised + s * (args["cond_denoised"] - ptb)

    m.set_model_sampler_post_cfg_function(post_cfg, disable_cfg1_optimization=True)
    return m


# --- the pack's changes to ComfyUI's global state ---------------------------------------------------------------------



def extend_host() -> None:
    """Every change this pack makes to ComfyUI's global state (README: "Changes to ComfyUI's global state"):
    1. the Flow-DPM-Solver becomes KSampler's ``sana_flow_dpm_solver``: a function in comfy.k_diffusion.sampling and
       its name in comfy.samplers.KSAMPLER_NAMES and SAMPLER_NAMES (nothing changes for other models);
    2. ComfyUI's LoRA key map (``comfy.lora.model_lora_keys_unet``) also names a Sana model's layers as every
       published Sana LoRA layout does, so the host's own LoRA loaders patch Sana (other models: unchanged);
    3. the server answers GET /sana/bin, /sana/aspect and /sana/model (also under /api/) for the frontend
       (``binning.ROUTES``)."""
    setattr(comfy.k_diffusion.sampling, f"sample_{SAMPLER_NAME}", sample_sana_flow_dpm_solver)
    if not getattr(comfy.lora.model_lora_keys_unet, "sana", False):
        comfy.lora.model_lora_keys_unet = _with_sana_lora_keys(comfy.lora.model_lora_keys_unet)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)
    _add_routes()


def _with_sana_lora_keys(original):
    """ComfyUI's LoRA key map, plus every published Sana layout's names for a Sana model (``lora.key_map``); other
    models get exactly the original's map."""
    def model_lora_keys_unet(model, key_map=None):
        key_map = original(model, {} if key_map is None else key_map)
        if isinstance(model, SanaBaseModel):
            for prefix, key in lora.key_map(lora.layers(model.inner), "transformer").items():
                key_map.setdefault(prefix, _PATCH_ROOT["transformer"] + key)
        return key_map

    model_lora_keys_unet.sana = True
    return model_lora_keys_unet


def _add_routes() -> None:
    from aiohttp import web

    from .. import binning

    try:
        import server
    except ImportError:  # ComfyUI's modules without its server (a script): nothing to serve
        return
    prompt_server = getattr(server.PromptServer, "instance", None)
    if prompt_server is None:
        return
    taken = {getattr(r, "path", None) for r in prompt_server.routes}
    for name in binning.ROUTES:
        path = f"/sana/{name}"
        if path in taken:
            continue

        async def answer(request, name=name):
            status, body = binning.route_answer(name, request.rel_url.query)
            return web.json_response(body, status=status)

        prompt_server.routes.get(path)(answer)
