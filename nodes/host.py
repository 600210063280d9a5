"""The one adapter between the nodes and the host. Inside ComfyUI it uses folder_paths, model_management,
ModelPatcher, ProgressBar and the interrupt flag; outside (unit tests, scripts) plain stand-ins: the models root is
$SANA_MODELS_DIR with the same subfolders, everything runs on the CPU, progress is logged."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from ..sana_core.errors import SanaError
from ..sana_core.pipeline import SCALING_FACTOR, decode_images, encode_images
from ..sana_core.sampling import flow_dpm_solver

log = logging.getLogger(__name__)

try:  # the host is present only inside a running ComfyUI
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import folder_paths
    IN_COMFY = True
except ImportError:
    mm = folder_paths = None
    IN_COMFY = False

WEIGHT_EXT = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
_MARKERS = ("config.json", "model_index.json", "transformer", "vae", "text_encoder")


# --- model folders ---------------------------------------------------------------------------------------------------

def model_roots(key: str) -> list[Path]:
    if IN_COMFY:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(key)]
        except KeyError:
            return []
    root = os.environ.get("SANA_MODELS_DIR")
    return [Path(root) / key] if root else []


def _is_model_folder(p: Path) -> bool:
    return any((p / m).exists() for m in _MARKERS)


def list_models(key: str, folders: bool = True, files: bool = True) -> list[str]:
    """Weight files and diffusers model folders under the ``key`` model folders, as relative names."""
    out: set[str] = set()
    for root in model_roots(key):
        if not root.is_dir():
            continue
        model_dirs = [d for d in root.rglob("*") if d.is_dir() and _is_model_folder(d)
                      and not any(_is_model_folder(a) for a in d.parents if root in a.parents)]
        if folders:
            out.update(d.relative_to(root).as_posix() for d in model_dirs)
        if files:
            for f in root.rglob("*"):
                if f.is_file() and f.name.endswith(WEIGHT_EXT) and not any(d in f.parents for d in model_dirs):
                    out.add(f.relative_to(root).as_posix())
    return sorted(out)


def resolve_model(key: str, name: str) -> Path:
    """The path of ``name`` inside the ``key`` model folders; names that escape them are refused."""
    if not name or "\x00" in name:
        raise SanaError(f"no model selected for {key!r}")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise SanaError(f"model name {name!r} must be relative to the {key} model folder and stay inside it")
    roots = model_roots(key)
    for root in roots:
        p = (root / name)
        if p.exists():
            real, base = p.resolve(), root.resolve()
            if base != real and base not in real.parents and not p.is_symlink():
                raise SanaError(f"model name {name!r} resolves outside the {key} folder {root}")
            return p
    where = ", ".join(str(r) for r in roots) or "(no folder configured: set SANA_MODELS_DIR)"
    raise SanaError(f"{name!r} not found in the {key} model folder(s): {where}")


# --- devices and memory ------------------------------------------------------------------------------------------------

def devices(kind: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for 'diffusion' | 'text_encoder' | 'vae'."""
    if not IN_COMFY:
        return torch.device("cpu"), torch.device("cpu")
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


def wrap(module: torch.nn.Module, kind: str):
    """A handle the host can evict: a ModelPatcher in ComfyUI, the module itself outside. A Sana transformer is
    wrapped as a native ComfyUI model from the start, so SANA_MODEL and MODEL share one patcher and one copy."""
    if not IN_COMFY:
        return module
    load, offload = devices(kind)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    inner = native().SanaBaseModel(module, offload) if kind == "diffusion" else _Holder(module, offload)
    return comfy.model_patcher.ModelPatcher(inner, load_device=load, offload_device=offload, size=size)


def unwrap(handle) -> torch.nn.Module:
    return handle.model.inner if IN_COMFY else handle


def load(handle) -> torch.nn.Module:
    """Make sure the module is on its compute device (evicting others if needed); return it."""
    if IN_COMFY:
        mm.load_models_gpu([handle], force_full_load=True)
    return unwrap(handle)


def release(handle) -> None:
    """Move a module off the compute device now (used for the text encoder after encoding)."""
    if not IN_COMFY or handle.load_device == handle.offload_device:
        return
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is handle:
            mm.current_loaded_models.pop(i).model_unload()


def intermediate_device() -> torch.device:
    return mm.intermediate_device() if IN_COMFY else torch.device("cpu")


# --- progress and interrupt --------------------------------------------------------------------------------------------

class Progress:
    """One update per step, with a live preview when the host asks for previews; each update is also an
    interruption point (ComfyUI's hook checks the flag)."""

    def __init__(self, total: int):
        self.total = total
        self.bar = comfy.utils.ProgressBar(total) if IN_COMFY else None
        self.preview = previewer() if IN_COMFY else None

    def step(self, done: int, x0: torch.Tensor | None = None) -> None:
        if IN_COMFY:
            mm.throw_exception_if_processing_interrupted()
            image = None
            if self.preview is not None and x0 is not None:
                image = self.preview.decode_latent_to_preview_image("JPEG", x0)
            self.bar.update_absolute(done, self.total, image)
        else:
            log.debug("step %d/%d", done, self.total)


class _TaesanaPreview:
    """TAESANA behind ComfyUI's TAESD previewer interface: decode(x0) → image in [-1, 1]."""

    def __init__(self, path, device):
        from ..sana_core.taesana import load_taesana_decoder

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


# --- native ComfyUI citizens: MODEL, VAE, SAMPLER, latent format, previews ---------------------------------------------

# Latent → RGB factors for the DC-AE f32c32 space (rows: the 32 channels of the scaled latent; columns R, G, B), as
# published by city96/ComfyUI_ExtraModels (branch `rewrite`, Sana/loader.py). scripts/fit_latent_rgb.py refits them.
LATENT_RGB_FACTORS = [
    [-2.0022e-03, -6.0736e-03, -1.7096e-03], [1.4221e-03, 3.6703e-03, 4.1083e-03],
    [1.0081e-02, 2.6456e-04, -1.4333e-02], [-2.4253e-03, 3.0967e-03, -1.0301e-03],
    [2.2158e-03, 7.7274e-03, -1.3151e-02], [1.1235e-02, 5.7630e-03, 3.6146e-03],
    [-7.2899e-02, 1.1062e-02, 3.6103e-02], [3.2346e-02, 2.8678e-02, 2.5014e-02],
    [1.6469e-03, -1.1364e-03, 2.8366e-03], [-3.5597e-02, -2.3447e-02, -3.1172e-03],
    [-1.9985e-04, -2.0647e-03, -1.2702e-02], [2.1318e-04, 1.2196e-03, -8.3461e-04],
    [1.3766e-02, 2.7559e-03, 7.3567e-03], [1.3027e-02, 2.6365e-03, 3.0405e-03],
    [1.5335e-02, 9.4682e-03, 6.7312e-03], [5.1827e-03, -9.4865e-03, 8.5080e-03],
    [1.4365e-02, -3.2867e-03, 9.5108e-03], [-4.1216e-03, -1.9177e-03, -3.3726e-03],
    [-2.4757e-03, 5.1739e-04, 2.0280e-03], [-3.5950e-03, 1.0720e-03, 5.3043e-03],
    [-5.1758e-03, 8.1040e-03, -3.7564e-02], [-3.8555e-03, -1.5529e-03, -3.5799e-03],
    [-6.6175e-03, -6.8484e-03, -9.9609e-03], [-2.1656e-03, 5.5770e-05, 1.4936e-03],
    [-9.2857e-02, -1.1379e-01, -1.0919e-01], [7.7044e-04, 5.5594e-03, 3.4755e-02],
    [1.2714e-02, 2.9729e-02, 3.1989e-03], [-1.1805e-03, 9.0548e-03, -4.1063e-04],
    [8.3309e-04, 4.9694e-03, 2.3087e-03], [7.8456e-03, 3.9750e-03, 3.5655e-03],
    [-1.7552e-03, 4.9306e-03, 1.4210e-02], [-1.4790e-03, 2.8837e-03, -4.5687e-03],
]
LATENT_RGB_BIAS = [0.4358, 0.3814, 0.3388]
SAMPLER_NAME = "sana_flow_dpm_solver"
PAG_KEY = "sana_pag_blocks"  # transformer_options entry: blocks whose self-attention is the identity


@functools.cache
def native():
    """The ComfyUI subclasses, built on first use (they need the host's modules)."""
    import types

    import comfy.conds
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_sampling
    import comfy.supported_models_base

    class SanaLatentFormat(comfy.latent_formats.LatentFormat):
        latent_channels = 32
        scale_factor = SCALING_FACTOR
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

        def timestep(self, sigma):
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

    class SanaNet(torch.nn.Module):
        """ComfyUI's calling convention around the Sana transformer: (x, t, context, **conds)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        @property
        def dtype(self):
            return self.net.dtype

        def forward(self, x, timesteps, context=None, attention_mask=None, transformer_options=None, **kwargs):
            blocks = (transformer_options or {}).get(PAG_KEY, frozenset())
            return self.net(x, timesteps, context, attention_mask, identity_blocks=blocks,
                            n_identity=x.shape[0] if blocks else 0)

    class SanaBaseModel(comfy.model_base.BaseModel):
        def __init__(self, net, device):
            config = SanaSupported({"disable_unet_model_creation": True})
            config.sampling_settings = {"shift": net.cfg.flow_shift}
            super().__init__(config, comfy.model_base.ModelType.FLOW, device=device)
            self.model_sampling = SanaModelSampling(config)
            self.diffusion_model = SanaNet(net)

        @property
        def inner(self):
            return self.diffusion_model.net

        def get_dtype(self):
            return self.inner.dtype

        def extra_conds(self, **kwargs):
            out = {}
            cross = kwargs.get("cross_attn")
            if cross is not None:
                out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross)
                mask = kwargs.get("attention_mask")
                if mask is None:
                    mask = torch.ones(cross.shape[:2])
                out["attention_mask"] = comfy.conds.CONDRegular(mask.reshape(cross.shape[:2]).float())
            return out

    import comfy.sd

    class SanaVAEAdapter(comfy.sd.VAE):
        """A ComfyUI VAE over a SANA_VAE handle (same patcher, same weights) for VAEDecode/VAEEncode/…Tiled."""

        def __init__(self, handle):  # deliberately not calling VAE.__init__: it builds a model from a state dict
            self.patcher = handle
            self.first_stage_model = handle.model.inner
            self.device, self.output_device = handle.load_device, mm.intermediate_device()
            self.vae_dtype = self.first_stage_model.dtype
            self.working_dtypes = [torch.bfloat16, torch.float32]
            self.latent_channels, self.latent_dim, self.output_channels = 32, 2, 3
            self.downscale_ratio = self.upscale_ratio = 32
            self.upscale_index_formula = self.downscale_index_formula = None
            self.extra_1d_channel = None
            self.disable_offload = False
            self.not_video = True
            self.size = handle.size

        def _dcae(self):
            mm.load_models_gpu([self.patcher], force_full_load=True)
            return self.patcher.model.inner

        def decode(self, samples_in, vae_options=None):
            return decode_images(self._dcae(), samples_in).to(self.output_device)

        def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
            tile = max(tile_x or 16, tile_y or 16)
            stride = max(1, tile - (overlap if overlap is not None else 2))
            return decode_images(self._dcae(), samples, tiling="on", tile_px=tile * 32,
                                 stride_px=stride * 32).to(self.output_device)

        def encode(self, pixel_samples):
            return encode_images(self._dcae(), pixel_samples).to(self.output_device)

        def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
            return encode_images(self._dcae(), pixel_samples, tiling="on").to(self.output_device)

        def get_sd(self):
            return self.first_stage_model.state_dict()

        def temporal_compression_decode(self):
            return None

    return types.SimpleNamespace(**{k: v for k, v in locals().items() if isinstance(v, type)})


def native_model(handle, shift: float | None = None):
    """A MODEL (ModelPatcher clone) over a SANA_MODEL's handle; ``shift`` replaces the flow shift."""
    m = handle.clone()
    if shift:
        sampling = native().SanaModelSampling(m.model.model_config)
        sampling.set_parameters(shift=shift)
        m.add_object_patch("model_sampling", sampling)
    return m


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


def register_native() -> None:
    """Make the Flow-DPM-Solver selectable in KSampler (adds a name; changes nothing for other models)."""
    if not IN_COMFY:
        return
    import comfy.k_diffusion.sampling as kds
    import comfy.samplers

    setattr(kds, f"sample_{SAMPLER_NAME}", sample_sana_flow_dpm_solver)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)


def sampler_object():
    import comfy.samplers

    return comfy.samplers.KSAMPLER(sample_sana_flow_dpm_solver)


def pag_model(model, scale: float, adaptive: float, blocks: frozenset[int]):
    """Clone of a Sana MODEL that adds PAG after CFG: x0 += s·(x0_cond − x0_perturbed), with identity
    self-attention in ``blocks`` for the perturbed pass (equal to PAG on velocities, being linear)."""
    import comfy.samplers

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
