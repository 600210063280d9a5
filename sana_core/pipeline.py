"""Prompt → image with the pieces of sana_core, in the steps of diffusers' SanaPipeline (docs/model.md §4.2).

Latents crossing this module's boundary are *raw* DC-AE latents (as ``DCAE.encode`` returns them); sampling runs in
the scaled space (raw × scaling factor), as ComfyUI does for every model. The scaling factor, channels and
compression are the DC-AE's own (``DCAE.latent_space``); functions without a DC-AE take a ``space`` (default: the
published one, ``latent.SANA``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from . import bins
from .errors import SanaError
from .guidance import TextCond, guided_model_fn, parse_pag_layers
from .latent import SANA, LatentSpace
from .sampling import (
    Callback,
    noise_for_seed,
    noise_latent,
    partial_schedule,
    sample,
    sample_sprint,
    sprint_trig_times,
)
from .transformer import SanaTransformer

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SampleOptions:
    steps: int = 20
    cfg: float = 4.5
    sampler: str = "flow_dpm_solver"
    flow_shift: float = 0.0  # 0 = the model's default
    pag_scale: float = 0.0
    pag_adaptive_scale: float = 0.0
    pag_layers: str = "8"
    denoise: float = 1.0


def binned_size(height: int, width: int, model: SanaTransformer | None = None, binning: bool = True
                ) -> tuple[int, int]:
    """The size actually generated (``bins.plan``): the nearest aspect-ratio bin of the model's table, or the request
    itself."""
    bh, bw = bins.plan(width, height, binning, model.cfg.resolution if model is not None else None)["bin"]
    return bh, bw


def check_latent(latent: torch.Tensor, what: str = "latent", space: LatentSpace = SANA) -> None:
    space.check(latent, what)


def check_cond(model: SanaTransformer, c: TextCond, what: str) -> None:
    width = c.embeds.shape[-1]
    if c.embeds.ndim != 3 or width != model.cfg.caption_channels:
        raise SanaError(f"{what} conditioning is {width} wide; this Sana model expects {model.cfg.caption_channels}-wide "
                        "Gemma-2 features from Sana Encode Prompt (it came from another text encoder)")
    if c.mask.shape != c.embeds.shape[:2]:
        raise SanaError(f"{what} conditioning mask has shape {tuple(c.mask.shape)}, expected "
                        f"{tuple(c.embeds.shape[:2])}")


def denoise(model: SanaTransformer, positive: TextCond, negative: TextCond | None, latent: torch.Tensor, seed: int,
            opts: SampleOptions, callback: Callback | None = None, noise: torch.Tensor | None = None,
            control=None, space: LatentSpace = SANA) -> torch.Tensor:
    """Raw latent (B, 32, h, w) of ``space`` in → raw latent out. ``denoise`` 1 ignores the input values (text-to-image),
    below 1 starts part-way down the schedule from it (image-to-image), 0 returns it unchanged.

    ``control`` (``controlnet.Control``) adds a ControlNet's samples at every step. The inputs are checked here,
    once; Sana-Sprint models take their own sampler (``_sample_sprint``)."""
    check_latent(latent, space=space)
    b = latent.shape[0]
    positive = _checked(model, positive, b, "positive")
    sprint = model.cfg.guidance_embeds  # Sprint takes cfg as an embedded value, with no negative batch
    use_cfg = opts.cfg > 1.0 and not sprint
    if use_cfg:
        if negative is None:
            raise SanaError("cfg > 1 needs a negative conditioning")
        negative = _checked(model, negative, b, "negative")
    if opts.denoise <= 0:
        return latent.clone()
    if noise is None:
        noise = noise_for_seed(seed, tuple(latent.shape))
    noise = noise.to(model.device)
    with torch.no_grad():
        if sprint:
            if control is not None:
                raise SanaError("ControlNet with Sana-Sprint models is not supported; use a flow model")
            x = _sample_sprint(model, positive, seed, opts, noise, callback, space.scaled(latent.float()))
        else:
            x = _sample_flow(model, positive, negative if use_cfg else None, space.scaled(latent.float()), opts,
                             noise, callback, control)
    return space.raw(x).to(latent.device)


def _checked(model: SanaTransformer, c: TextCond, batch: int, what: str) -> TextCond:
    check_cond(model, c, what)
    return c.repeat_to(batch, f"{what} conditioning")


def _sample_flow(model: SanaTransformer, positive: TextCond, negative: TextCond | None, scaled: torch.Tensor,
                 opts: SampleOptions, noise: torch.Tensor, callback: Callback | None, control=None) -> torch.Tensor:
    """Flow-DPM-Solver or Flow-Euler with CFG, PAG and a ControlNet, in the scaled latent space (docs/model.md §4.2)."""
    shift = opts.flow_shift or model.cfg.flow_shift
    sched = partial_schedule(opts.sampler, opts.steps, shift, min(opts.denoise, 1.0))
    x_lat = scaled.to(noise.device)
    x = noise if opts.denoise >= 1 else noise_latent(x_lat, noise, sched.sigmas[0].item())
    layers = parse_pag_layers(opts.pag_layers, model.cfg.num_layers) if opts.pag_scale > 0 else frozenset()
    fn = guided_model_fn(model, positive, negative, cfg=opts.cfg, pag_scale=opts.pag_scale,
                         pag_adaptive_scale=opts.pag_adaptive_scale, pag_layers=layers, control=control)
    return sample(opts.sampler, fn, x, sched, callback, dtype=model.dtype)


def _sample_sprint(model: SanaTransformer, positive: TextCond, seed: int, opts: SampleOptions, noise: torch.Tensor,
                   callback: Callback | None, scaled: torch.Tensor) -> torch.Tensor:
    """Sana-Sprint: SCM sampling with the guidance scale as a model input (docs/model.md §8). The step noise
    continues the seed's stream after the initial draw, as diffusers' pipeline draws it. ``denoise`` < 1 noises
    ``scaled`` (the input latent, scaled) to the first kept trig time, as diffusers' Sprint image-to-image pipeline
    does at that strength."""
    g = torch.full((1,), opts.cfg, dtype=torch.float32).to(positive.embeds.dtype) * model.cfg.guidance_embeds_scale
    fn = guided_model_fn(model, positive, None, cfg=1.0, guidance=g.float(), timestep_scale=1.0)
    gen = torch.Generator("cpu").manual_seed(seed)
    torch.randn(noise.shape, generator=gen)  # the initial draw
    start = None if opts.denoise >= 1 else scaled.to(noise.device)
    trig = sprint_trig_times(opts.steps, denoise=min(opts.denoise, 1.0))
    return sample_sprint(fn, noise, trig, gen, callback=callback, latent=start, dtype=model.dtype)


def decode_images(vae, raw: torch.Tensor, size: tuple[int, int] | None = None, tiling: str = "auto",
                  space: LatentSpace | None = None, **tiles) -> torch.Tensor:
    """Raw latent (B, 32, h, w) → IMAGE (B, H, W, 3) float 0..1; resized + centre-cropped to ``size`` (H, W).
    ``space``: the space ``raw`` is in (None: the DC-AE's own). ``tiles``: tile_px / stride_px for the DC-AE's tiled
    decode."""
    if not torch.isfinite(raw).all():
        raise SanaError("the latent to decode contains NaN/Inf values, where finite values are expected: the run that "
                        "made it diverged — from NaN/Inf in the transformer's weights or a LoRA applied to it, or from "
                        "an fp16 overflow if the transformer computed in fp16 (then load it in bf16 or fp32)")
    check_latent(raw, "samples", vae.latent_space)
    if space is not None:
        raw = space.convert(raw, vae.latent_space)
    with torch.no_grad():
        img = vae.decode(raw.to(vae.device, vae.dtype), tiling=tiling, **tiles)  # (B, 3, H, W) in [-1, 1]
        if size is not None and tuple(img.shape[-2:]) != tuple(size):
            img = bins.resize_and_crop(img, *size)
        img = (img * 0.5 + 0.5).clamp(0, 1)
    return img.float().permute(0, 2, 3, 1).cpu()


def encode_images(vae, images: torch.Tensor, tiling: str = "auto", space: LatentSpace | None = None) -> torch.Tensor:
    """IMAGE (B, H, W, 3) 0..1 → raw latent (B, 32, H/32, W/32) of ``space`` (None: the DC-AE's own). H, W are
    cropped down to multiples of the compression."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise SanaError(f"image has shape {tuple(images.shape)}, expected [B, H, W, 3]")
    own = vae.latent_space
    c = own.compression
    h, w = images.shape[1] // c * c, images.shape[2] // c * c
    if h == 0 or w == 0:
        raise SanaError(f"image {images.shape[2]}x{images.shape[1]} is smaller than {c}x{c}")
    top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
    x = images[:, top:top + h, left:left + w, :3].permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        raw = vae.encode(x.to(vae.device, vae.dtype), tiling=tiling).float().cpu()
    return raw if space is None else own.convert(raw, space)


def text_to_image(model: SanaTransformer, text_encoder, vae, prompt: str | list[str], negative_prompt: str = "",
                  *, height: int = 1024, width: int = 1024, seed: int = 0, binning: bool = True,
                  opts: SampleOptions = SampleOptions(), batch_size: int = 1, lowercase: bool = False,
                  callback: Callback | None = None, controlnet=None, control_image: torch.Tensor | None = None,
                  control_scale: float = 1.0) -> torch.Tensor:
    """The whole pipeline → IMAGE (B, H, W, 3) 0..1 at the requested size. ``controlnet`` with ``control_image``
    (IMAGE (1 or B, H, W, 3) 0..1, at the binned size) steers it as diffusers' SanaControlNetPipeline does."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if len(prompts) == 1 and batch_size > 1:
        prompts = prompts * batch_size
    bh, bw = binned_size(height, width, model, binning)
    pos = TextCond(*text_encoder.encode(prompts, lowercase=lowercase))
    neg = None
    if opts.cfg > 1 and not model.cfg.guidance_embeds:
        neg = TextCond(*text_encoder.encode_negative([negative_prompt] * len(prompts), lowercase=lowercase))
    space = vae.latent_space
    latent = torch.zeros(len(prompts), space.channels, space.cells(bh), space.cells(bw))
    control = None
    if controlnet is not None:
        from .controlnet import Control, check_pair

        check_pair(controlnet, model)
        control = Control(controlnet, space.scaled(encode_images(vae, control_image)), control_scale)
    raw = denoise(model, pos, neg, latent, seed, opts, callback, control=control, space=space)
    return decode_images(vae, raw, (height, width))
