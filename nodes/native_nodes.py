"""Sana as a native ComfyUI citizen: MODEL and VAE views of the Sana objects, the Flow-DPM-Solver as a SAMPLER,
reference SIGMAS, and PAG as a model patch. Every node returns a new object (clone); inputs are never changed."""

from __future__ import annotations

from ..sana_core.errors import SanaError
from ..sana_core.guidance import parse_pag_layers
from ..sana_core.sampling import SAMPLERS, partial_schedule
from . import host
from . import widgets as w
from .models import SanaModel, SanaVAE

CATEGORY = "Sana/native"


class SanaToModel:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Exposes a SANA_MODEL as a ComfyUI MODEL (flow sampling with the model's shift, 32-channel DC-AE "
                   "latent format, previews) for KSampler, SamplerCustomAdvanced and model-patch nodes. Choose the "
                   "'sana_flow_dpm_solver' sampler with the 'simple' scheduler for the reference results.")
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": w.SANA_MODEL}, "optional": {"flow_shift": w.FLOW_SHIFT}}

    def convert(self, model: SanaModel, flow_shift=0.0):
        if model.cfg.guidance_embeds:  # Sprint is not a flow model: KSampler's samplers would give a wrong image
            raise SanaError("this is a Sana-Sprint model: it samples with its own SCM sampler, which ComfyUI's "
                            "KSampler and SamplerCustom do not have; use Sana Sample instead of Sana to MODEL")
        return (host.native_model(model.handle, flow_shift or None),)


class SanaToVAE:
    CATEGORY = CATEGORY
    DESCRIPTION = "Exposes a SANA_VAE as a ComfyUI VAE for VAEDecode, VAEEncode and VAEDecodeTiled."
    RETURN_TYPES = ("VAE",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": w.SANA_VAE}}

    def convert(self, vae: SanaVAE):
        return (host.vae_adapter(vae.handle),)


class SanaFlowDPMSolverSampler:
    CATEGORY = CATEGORY
    DESCRIPTION = "Flow-DPM-Solver (DPM-Solver++ 2M on flow sigmas) as a SAMPLER for SamplerCustom(Advanced)."
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get(self):
        return (host.sampler_object(),)


class SanaScheduler:
    CATEGORY = CATEGORY
    DESCRIPTION = "The reference Sana sigmas (diffusers' flow schedule) for SamplerCustom(Advanced)."
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": w.SANA_MODEL,
            "sampler": (list(SAMPLERS), {"default": "flow_dpm_solver", "tooltip": w.SAMPLER_TIP}),
            "steps": w.STEPS,
            "flow_shift": w.FLOW_SHIFT,
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": w.DENOISE_TIP}),
        }}

    def get(self, model: SanaModel, sampler, steps, flow_shift, denoise):
        sched = partial_schedule(sampler, steps, flow_shift or model.cfg.flow_shift, denoise)
        return (sched.sigmas.clone(),)


class SanaPAG:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Perturbed-attention guidance for a Sana MODEL (usable with KSampler): the chosen blocks get "
                   "identity self-attention in an extra conditional pass.")
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Sana to MODEL's MODEL"}),
            "pag_scale": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": w.PAG_SCALE_TIP}),
            "pag_adaptive_scale": w.PAG_ADAPTIVE_SCALE,
            "pag_layers": w.PAG_LAYERS,
        }}

    def patch(self, model, pag_scale, pag_adaptive_scale, pag_layers):
        net = model.model.diffusion_model
        if not hasattr(net, "net") or not hasattr(net.net, "cfg"):
            raise SanaError("Sana PAG needs a Sana MODEL (from Sana to MODEL)")
        if pag_scale <= 0:
            return (model.clone(),)
        blocks = parse_pag_layers(pag_layers, net.net.cfg.num_layers)
        return (host.pag_model(model, pag_scale, pag_adaptive_scale, blocks),)


NATIVE_NODES = {c.__name__: c for c in (SanaToModel, SanaToVAE, SanaFlowDPMSolverSampler, SanaScheduler, SanaPAG)}
NATIVE_DISPLAY_NAMES = {
    "SanaToModel": "Sana to MODEL",
    "SanaToVAE": "Sana to VAE",
    "SanaFlowDPMSolverSampler": "Sana Flow-DPM-Solver (SAMPLER)",
    "SanaScheduler": "Sana Scheduler (SIGMAS)",
    "SanaPAG": "Sana PAG (model patch)",
}
