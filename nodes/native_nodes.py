"""Sana as a native ComfyUI citizen: MODEL and VAE views of the Sana objects, the Flow-DPM-Solver as a SAMPLER,
reference SIGMAS, and PAG as a model patch. Every node returns a new object (clone); inputs are never changed."""

from __future__ import annotations

from comfy_api.latest import io

from ..sana_core.errors import SanaError
from ..sana_core.guidance import parse_pag_layers
from ..sana_core.sampling import SAMPLERS, partial_schedule
from ..sana_core.video import is_video
from . import host
from . import widgets as w
from .models import SanaModel, SanaVAE

CATEGORY = "Sana/native"


class SanaToModel(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaToModel", "Sana to MODEL", CATEGORY,
            "Exposes a SANA_MODEL as a ComfyUI MODEL (flow sampling with the model's shift, 32-channel DC-AE latent "
            "format, previews) for KSampler, SamplerCustomAdvanced and model-patch nodes. Choose the "
            "'sana_flow_dpm_solver' sampler with the 'simple' scheduler for the reference results.",
            [w.sana_model(), w.flow_shift(optional=True)],
            [io.Model.Output()],
            aliases=("KSampler", "MODEL", "convert"))

    @classmethod
    def execute(cls, model: SanaModel, flow_shift=0.0) -> io.NodeOutput:
        if model.cfg.guidance_embeds:  # Sprint is not a flow model: KSampler's samplers would give a wrong image
            raise SanaError("this is a Sana-Sprint model: it samples with its own SCM sampler, which ComfyUI's "
                            "KSampler and SamplerCustom do not have; use Sana Sample instead of Sana to MODEL")
        return io.NodeOutput(host.native_model(model.handle, flow_shift or None))


class SanaToVAE(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaToVAE", "Sana to VAE", CATEGORY,
            "Exposes a SANA_VAE as a ComfyUI VAE for VAEDecode, VAEEncode and VAEDecodeTiled.",
            [w.sana_vae()], [io.Vae.Output()], aliases=("VAE", "DC-AE", "convert"))

    @classmethod
    def execute(cls, vae: SanaVAE) -> io.NodeOutput:
        return io.NodeOutput(vae.native())


class SanaFlowDPMSolverSampler(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaFlowDPMSolverSampler", "Sana Flow-DPM-Solver (SAMPLER)", CATEGORY,
            "Flow-DPM-Solver (DPM-Solver++ 2M on flow sigmas) as a SAMPLER for SamplerCustom(Advanced).",
            [], [io.Sampler.Output()], aliases=("KSamplerSelect", "sampler", "DPM-Solver"))

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(host.sampler_object())


class SanaScheduler(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaScheduler", "Sana Scheduler (SIGMAS)", CATEGORY,
            "The reference Sana sigmas (diffusers' flow schedule) for SamplerCustom(Advanced).",
            [w.sana_model(), w.sampler(SAMPLERS), w.steps(), w.flow_shift(), w.denoise(0.01)],
            [io.Sigmas.Output()], aliases=("scheduler", "sigmas", "BasicScheduler"))

    @classmethod
    def execute(cls, model: SanaModel, sampler, steps, flow_shift, denoise) -> io.NodeOutput:
        sched = partial_schedule(sampler, steps, flow_shift or model.cfg.flow_shift, denoise)
        return io.NodeOutput(sched.sigmas.clone())


class SanaPAG(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaPAG", "Sana PAG (model patch)", CATEGORY,
            "Perturbed-attention guidance for a Sana MODEL (usable with KSampler): the chosen blocks get identity "
            "self-attention in an extra conditional pass.",
            [io.Model.Input("model", tooltip="Sana to MODEL's MODEL"), w.pag_scale(2.0), w.pag_adaptive_scale(),
             w.pag_layers()],
            [io.Model.Output()], aliases=("perturbed attention guidance", "PAG", "guidance"))

    @classmethod
    def execute(cls, model, pag_scale, pag_adaptive_scale, pag_layers) -> io.NodeOutput:
        net = model.model.diffusion_model
        if not hasattr(net, "net") or not hasattr(net.net, "cfg"):
            raise SanaError("Sana PAG needs a Sana MODEL (from Sana to MODEL)")
        if is_video(net.net.cfg):
            raise SanaError("PAG is not available for SANA-Video models (their reference pipeline has none)")
        if pag_scale <= 0:
            return io.NodeOutput(model.clone())
        blocks = parse_pag_layers(pag_layers, net.net.cfg.num_layers)
        return io.NodeOutput(host.pag_model(model, pag_scale, pag_adaptive_scale, blocks))


NODES = (SanaToModel, SanaToVAE, SanaFlowDPMSolverSampler, SanaScheduler, SanaPAG)
