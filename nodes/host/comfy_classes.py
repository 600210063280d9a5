"""The pack's ComfyUI subclasses: Sana and SANA-Video as native MODELs (latent format, flow sampling, model config,
the transformer behind ComfyUI's calling convention) and the DC-AE as a native VAE. Imported only inside ComfyUI."""

from __future__ import annotations

import inspect

import comfy.conds
import comfy.controlnet
import comfy.latent_formats
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.sd
import comfy.supported_models_base
import torch

from ...sana_core.errors import SanaError
from ...sana_core.guidance import TextCond
from ...sana_core.latent import SANA
from ...sana_core.pipeline import check_cond, decode_images, encode_images
from . import comfy_layers
from .constants import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, PAG_KEY, START_KEY


class SanaLatentFormat(comfy.latent_formats.LatentFormat):
    latent_channels = SANA.channels
    spacial_downscale_ratio = SANA.compression  # a host resizes an empty latent tagged with another ratio
    temporal_downscale_ratio = 1
    scale_factor = SANA.scaling_factor
    latent_rgb_factors = LATENT_RGB_FACTORS
    latent_rgb_factors_bias = LATENT_RGB_BIAS
    taesd_decoder_name = None  # ComfyUI's TAESD cannot hold TAESANA (32× upscale); SanaSample previews it


class SanaModelSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """Flow sampling as diffusers' Sana scheduler: σ spans shift(0.999·t/1000), so the 'simple' scheduler gives
    the reference sigmas; model timesteps are truncated integers; full denoise starts from pure noise."""

    def set_parameters(self, shift=1.0, timesteps=1000, multiplier=1000):
        self.shift = shift
        self.multiplier = multiplier
        self.register_buffer("sigmas", self.sigma(torch.arange(1, timesteps + 1) / timesteps * 0.999 * multiplier))

    truncate = True  # Flow-DPM-Solver's model timesteps are whole numbers; Flow-Euler's are not

    def timestep(self, sigma):
        if not self.truncate:
            return sigma * self.multiplier
        return (sigma.double() * self.multiplier).floor().to(sigma.dtype)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        if max_denoise:
            return noise
        return super().noise_scaling(sigma, noise, latent_image, max_denoise)


class SanaSupported(comfy.supported_models_base.BASE):
    latent_format = SanaLatentFormat
    sampling_settings = {"shift": 3.0}
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]


class _Around(torch.nn.Module):
    """A host calling convention around one of the pack's modules (``net``), whose dtype it reports."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    @property
    def dtype(self):
        return self.net.dtype


class SanaNet(_Around):
    """ComfyUI's calling convention around the Sana transformer: (x, t, context, **conds)."""

    def forward(self, x, timesteps, context=None, attention_mask=None, control=None, transformer_options=None,
                **kwargs):
        if x.ndim != 4:
            raise SanaError(f"a Sana image model got a {x.ndim}-D latent {tuple(x.shape)}: video latents take a "
                            "SANA-Video model; make image latents with Sana Empty Latent")
        blocks = (transformer_options or {}).get(PAG_KEY, frozenset())
        samples = (control or {}).get("input") or None  # a Sana ControlNet's, through ComfyUI's ControlNet
        if samples is not None:
            if samples[0].shape[-1] != self.net.cfg.dim:
                raise SanaError(f"the ControlNet's samples are {samples[0].shape[-1]} wide; this Sana model's hidden "
                                f"size is {self.net.cfg.dim}: use a ControlNet made for this model size")
            samples = [s.to(x.dtype) for s in samples]
        return self.net(x, timesteps, context, attention_mask, identity_blocks=blocks,
                        n_identity=x.shape[0] if blocks else 0, control=samples)


class SanaVideoNet(_Around):
    """ComfyUI's calling convention around the SANA-Video transformer. ``sana_start`` (from Sana Image to Video):
    the normalised latent frames that are held: they replace the first frames of ``x`` and their tokens get
    timestep 0, as the reference image-to-video pipeline holds its start frame."""

    def forward(self, x, timesteps, context=None, attention_mask=None, control=None, transformer_options=None,
                sana_start=None, **kwargs):
        if x.ndim != 5:
            raise SanaError(f"a SANA-Video model got a {x.ndim}-D latent {tuple(x.shape)}; it samples video latents "
                            "[B, 16, frames, H/8, W/8] (Sana Empty Video Latent, EmptyHunyuanLatentVideo)")
        if control:
            raise SanaError("ControlNet is not available for SANA-Video models (no SANA-Video ControlNet exists)")
        if self.net.cfg.guidance_embeds:
            raise SanaError("this SANA-Video model embeds its guidance scale (a distilled model); no such model is "
                            "published and its sampler is not implemented")
        if (transformer_options or {}).get(PAG_KEY):
            raise SanaError("PAG is not available for SANA-Video models (their reference pipeline has none)")
        if sana_start is not None:
            held = sana_start.shape[2]
            x = torch.cat([sana_start.to(x), x[:, :, held:]], dim=2)
            pt, ph, pw = self.net.cfg.patch_size
            grid = (x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw)
            timesteps = timesteps.reshape(-1, 1, 1, 1).expand(x.shape[0], *grid).clone()
            timesteps[:, :held // pt] = 0
        return self.net(x, timesteps, context, attention_mask)


class SanaControlModel(_Around):
    """ComfyUI's ControlNet calling convention around the Sana ControlNet: (x, hint, timesteps, context, **conds)
    → {"input": one sample per block}, which the host scales by strength and merges with a chained ControlNet."""

    def forward(self, x, hint, timesteps, context, attention_mask=None, **kwargs):
        return {"input": self.net(x, timesteps, context, hint, attention_mask)}


class SanaControlNetPatch(comfy.controlnet.ControlNet):
    """ComfyUI's generic ControlNet (hint resized to the latent, DC-AE-encoded through the apply node's VAE, start/end
    range, strength, chaining) with a Sana ControlNet inside; it says which VAE to connect when none is."""

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        if self.vae is None:
            raise SanaError("a Sana ControlNet encodes its control image with the DC-AE: connect Sana to VAE's VAE to "
                            "the vae input of the Apply ControlNet node")
        return super().get_control(x_noisy, t, cond, batched_number, transformer_options)

    def copy(self):
        c = super().copy()
        c.__class__ = SanaControlNetPatch
        return c


class SanaBaseModel(comfy.model_base.BaseModel):
    supported = SanaSupported
    net = SanaNet

    def __init__(self, net, device):
        config = self.supported({"disable_unet_model_creation": True})
        config.sampling_settings = {"shift": net.cfg.flow_shift}
        super().__init__(config, comfy.model_base.ModelType.FLOW, device=device)
        self.model_sampling = SanaModelSampling(config)
        self.diffusion_model = self.net(net)

    @property
    def inner(self):
        return self.diffusion_model.net

    def get_dtype(self):
        return self.inner.dtype

    def extra_conds(self, **kwargs):
        out = {}
        cross = kwargs.get("cross_attn")
        if cross is not None:
            check_cond(self.inner, TextCond(cross, torch.ones(cross.shape[:2])), "a")
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross)
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones(cross.shape[:2])
            out["attention_mask"] = comfy.conds.CONDRegular(mask.reshape(cross.shape[:2]).float())
        return out


class SanaVideoSupported(SanaSupported):
    latent_format = comfy.latent_formats.Wan21  # the Wan 2.1 VAE's normalisation, previews and TAEHV name


class SanaVideoBaseModel(SanaBaseModel):
    """A SANA-Video transformer as a ComfyUI model: flow sampling as the image models, Wan 2.1 latents, and the
    held start frames of image-to-video as the ``sana_start`` condition."""

    supported = SanaVideoSupported
    net = SanaVideoNet

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        start = kwargs.get(START_KEY)
        if start is not None:
            out["sana_start"] = comfy.conds.CONDRegular(self.process_latent_in(start))
        return out


class SanaVAEAdapter(comfy.sd.VAE):
    """A ComfyUI VAE over a SANA_VAE handle (same patcher, same weights) for VAEDecode/VAEEncode/…Tiled. It does not
    call ``VAE.__init__`` (which builds a model from a state dict) and sets every attribute that sets, with the
    DC-AE's values, for the host code that reads them (``vae_encode_crop_pixels``, ``spacial_compression_encode``
    for a ControlNet's hint size, ``memory_used_*``)."""

    def __init__(self, handle):
        self.patcher = handle
        self.first_stage_model = handle.model.inner
        self.device, self.output_device = handle.load_device, mm.intermediate_device()
        self.vae_dtype = self.first_stage_model.dtype
        self.working_dtypes = [torch.bfloat16, torch.float32]
        space = self.first_stage_model.latent_space
        self.latent_channels, self.latent_dim, self.output_channels = space.channels, 2, 3
        self.downscale_ratio = self.upscale_ratio = space.compression
        self.upscale_index_formula = self.downscale_index_formula = None
        self.extra_1d_channel = None
        self.pad_channel_value = None  # RGB: the host cuts an RGBA image to 3 channels
        self.crop_input = True  # centre-cropped to multiples of the compression, as encode_images does
        self.handles_tiling = False  # decode_tiled / encode_tiled below are the DC-AE's; the host's tilers are unused
        self.format_encoded = None
        self.disable_offload = False
        self.not_video = True
        self.audio_sample_rate = 44100  # the host's value for every VAE
        self.size = handle.size

    def memory_used_encode(self, shape, dtype) -> int:
        """About the most bytes an encode of pixels (B, 3, H, W) holds at once: a few feature maps of the encoder's
        full-resolution stage."""
        width = self.first_stage_model.config.encoder_block_out_channels[0]
        return 4 * shape[0] * width * shape[-2] * shape[-1] * mm.dtype_size(dtype)

    def memory_used_decode(self, shape, dtype) -> int:
        return self.first_stage_model.decode_memory(shape)

    def process_input(self, image: torch.Tensor) -> torch.Tensor:
        """0..1 → the DC-AE's -1..1."""
        return image * 2.0 - 1.0

    def process_output(self, image: torch.Tensor) -> torch.Tensor:
        """The DC-AE's -1..1 → 0..1, in place: a host may use the result or the tensor it passed."""
        return image.add_(1.0).div_(2.0).clamp_(0.0, 1.0)

    def _dcae(self, shape=None):
        return comfy_layers.load(self.patcher, 0 if shape is None else self.memory_used_decode(shape, self.vae_dtype))

    def decode(self, samples_in, vae_options=None):
        return decode_images(self._dcae(samples_in.shape), samples_in, space=SANA).to(self.output_device)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        tile = max(tile_x or 16, tile_y or 16)
        stride = max(1, tile - (overlap if overlap is not None else 2))
        return decode_images(self._dcae(), samples, tiling="on", space=SANA, tile_px=tile * self.downscale_ratio,
                             stride_px=stride * self.downscale_ratio).to(self.output_device)

    def encode(self, pixel_samples):
        return encode_images(self._dcae(), pixel_samples, space=SANA).to(self.output_device)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        return encode_images(self._dcae(), pixel_samples, tiling="on", space=SANA).to(self.output_device)

    def get_sd(self):
        return self.first_stage_model.state_dict()

    def temporal_compression_decode(self):
        return None


def new_patcher(model: torch.nn.Module, load_device: torch.device, offload_device: torch.device, size: int = 0):
    """A patcher around one of the pack's models, of the class the host builds its own with: ``CoreModelPatcher``
    where the host has it (its dynamic-VRAM patcher when that is on), else ``ModelPatcher``; given only the keyword
    arguments its signature takes."""
    cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"load_device": load_device, "offload_device": offload_device, "size": size}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return cls(model, **kwargs)
