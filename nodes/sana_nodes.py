"""The Sana nodes (classic API). Thin: read widgets, call one sana_core function, wrap outputs in ComfyUI types."""

from __future__ import annotations

import torch

from ..sana_core import bins, pipeline
from ..sana_core.controlnet import load_controlnet
from ..sana_core.dcae import load_dcae
from ..sana_core.errors import SanaError
from ..sana_core.loader import DTYPES, load_transformer
from ..sana_core.quant import STORAGE
from ..sana_core.sampling import SAMPLERS, noise_for_seed
from . import conditioning, host
from .models import SanaModel, SanaTextEncoderHandle, SanaVAE
from .widgets import (
    DENOISE_TIP,
    FLOW_SHIFT,
    PAG_ADAPTIVE_SCALE,
    PAG_LAYERS,
    PAG_SCALE_TIP,
    SAMPLER_TIP,
    SANA_MODEL,
    SANA_TEXT_ENCODER,
    SANA_VAE,
    STEPS,
    check_model,
    model_input,
)

CATEGORY = "Sana"
BINNING_KEY = "sana_binning"  # LATENT extra: {"target": [H, W], "latent": [h, w]} recorded at binning time

WEIGHT_DTYPES = ["auto", "bf16", "fp16", "fp32", "int8", "fp8_e4m3fn", "fp8_e5m2"]


def _transformer(path, weight_dtype: str) -> SanaModel:
    fp8 = weight_dtype.startswith("fp8")  # fp8 storage computes in bf16; int8 in the file's dtype
    model = load_transformer(path, torch.bfloat16 if fp8 else DTYPES.get(weight_dtype), device="cpu",
                             storage=weight_dtype if weight_dtype in STORAGE else None, operations=host.operations())
    return SanaModel(host.wrap(model, "diffusion"), str(path))


def _text_encoder_module():
    """The text encoder needs transformers; without it only the nodes that encode text fail, with the fix."""
    try:
        from ..sana_core import text_encoder
    except ImportError as e:
        raise SanaError(f"the Sana text encoder needs the '{e.name}' package, which is not installed: run "
                        "`pip install -r requirements.txt` in this node pack's folder (inside ComfyUI's Python)") from e
    return text_encoder


def _text_encoder(path, dtype: str) -> SanaTextEncoderHandle:
    enc = _text_encoder_module().load_text_encoder(path, DTYPES.get(dtype), device="cpu", int8=dtype == "int8")
    return SanaTextEncoderHandle(host.wrap(enc.model, "text_encoder"), enc, str(path))


def _vae(path, dtype: str) -> SanaVAE:
    vae = load_dcae(path, DTYPES[dtype], device="cpu", operations=host.operations())
    return SanaVAE(host.wrap(vae, "vae"), str(path))


class SanaLoadTextEncoder:
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads Gemma-2-2B(-it) from a gemma folder or a Sana diffusers repo in models/text_encoders."
    RETURN_TYPES = ("SANA_TEXT_ENCODER",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": model_input("text_encoders", files=False),
            "dtype": (["auto", "bf16", "fp32", "int8"], {"default": "auto", "tooltip": "Gemma-2 overflows in fp16; "
                                                      "int8 stores weights in 8 bits (about half of bf16)"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, text_encoder):
        return check_model("text_encoders", text_encoder, files=False)

    def load(self, text_encoder, dtype):
        _text_encoder_module()  # a missing dependency is named before anything else
        te = _text_encoder(host.resolve_model("text_encoders", text_encoder), dtype)
        return {"ui": {"text": [te.info]}, "result": (te,)}


class SanaEncodePrompt:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encodes a prompt with Gemma-2. use_chi prepends Sana's complex human instruction (on for the "
                   "positive prompt, off for the negative, as the reference pipeline does).")
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": SANA_TEXT_ENCODER,
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "the prompt"}),
            "use_chi": ("BOOLEAN", {"default": True, "tooltip": "prepend Sana's complex human instruction, which "
                                    "rewrites the prompt in the model's head: on for the positive, off for the "
                                    "negative"}),
            "max_length": ("INT", {"default": 300, "min": 2, "max": 4096,
                                   "tooltip": "tokens kept of the prompt (the reference pipeline keeps 300); the "
                                              "instruction's tokens come on top"}),
        }, "optional": {
            "chi": ("STRING", {"multiline": True, "default": "", "tooltip": "your own instruction, one line per "
                                                                           "line, in place of the default one"}),
            "clean_caption": ("BOOLEAN", {"default": False, "tooltip": (
                "clean the prompt as Sana's training captions were: lowercased, URLs, HTML, @handles, hashtags, "
                "dates and ids, file names, CJK ideographs, 'free shipping'-style boilerplate and stray punctuation "
                "removed (needs beautifulsoup4 and ftfy). Off: the prompt is used as written, case kept")}),
        }}

    def encode(self, text_encoder: SanaTextEncoderHandle, text, use_chi, max_length, chi="", clean_caption=False):
        if clean_caption:  # a missing optional package is named before Gemma-2 is loaded
            from ..sana_core.captions import clean

            text = clean(text)
        enc = text_encoder.get()
        instruction = (chi.split("\n") if chi.strip() else _text_encoder_module().DEFAULT_CHI) if use_chi else None
        emb, mask = enc.encode([text], chi=instruction, max_length=max_length)
        text_encoder.release()
        dev = host.intermediate_device()
        return ([[emb.to(dev), {"attention_mask": mask.to(dev)}]],)


_SIZE_TIP = "in pixels; with resolution binning off, a multiple of 32"


class SanaEmptyLatent:
    CATEGORY = CATEGORY
    DESCRIPTION = ("An empty Sana latent [B, 32, H/32, W/32]. With resolution binning on, the latent is made at the "
                   "nearest trained aspect-ratio bin and Sana Decode resizes and crops back to width x height.")
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 1024, "min": 32, "max": 8192, "step": 8, "tooltip": _SIZE_TIP}),
            "height": ("INT", {"default": 1024, "min": 32, "max": 8192, "step": 8, "tooltip": _SIZE_TIP}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "images per run"}),
            "resolution_binning": ("BOOLEAN", {"default": True, "tooltip": (
                "on: sample at the nearest aspect-ratio bin the model was trained on, then Sana Decode resizes and "
                "crops back to width × height (as the reference pipeline); off: exactly width × height")}),
        }, "optional": {
            "model": ("SANA_MODEL", {"tooltip": "picks the bin table of the model's training resolution"}),
        }}

    def make(self, width, height, batch_size, resolution_binning, model: SanaModel | None = None):
        plan = bins.plan(width, height, resolution_binning, model.cfg.resolution if model is not None else None)
        samples = torch.zeros(batch_size, pipeline.LATENT_CHANNELS, *plan["latent"], device=host.intermediate_device())
        out = {"samples": samples}
        if plan["crop"]:
            out[BINNING_KEY] = {"target": plan["crop"], "latent": plan["latent"]}
        return (out,)


class SanaSample:
    CATEGORY = CATEGORY
    DESCRIPTION = "Samples a Sana latent with Flow-DPM-Solver or Flow-Euler, CFG and optional PAG."
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": SANA_MODEL,
            "positive": ("CONDITIONING", {"tooltip": "what the image shows (Sana Encode Prompt with use_chi on)"}),
            "negative": ("CONDITIONING", {"tooltip": "what to steer away from (used when cfg > 1)"}),
            "latent": ("LATENT", {"tooltip": "Sana Empty Latent, or an encoded image for image-to-image"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "the noise seed"}),
            "steps": STEPS,
            "cfg": ("FLOAT", {"default": 4.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "classifier-free guidance scale; 1 or less = off"}),
            "sampler": (list(SAMPLERS), {"default": "flow_dpm_solver", "tooltip": SAMPLER_TIP}),
            "flow_shift": FLOW_SHIFT,
            "pag_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": PAG_SCALE_TIP}),
            "pag_adaptive_scale": PAG_ADAPTIVE_SCALE,
            "pag_layers": PAG_LAYERS,
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": DENOISE_TIP}),
        }, "optional": {
            "patched_model": ("MODEL", {"tooltip": "optional: SanaToModel's MODEL of this same model after "
                                                   "ComfyUI's model patches (DifferentialDiffusion, LoRA loaders, "
                                                   "…); sampling then carries its patches"}),
        }}

    def sample(self, model: SanaModel, positive, negative, latent, seed, steps, cfg, sampler, flow_shift, pag_scale,
               pag_adaptive_scale, pag_layers, denoise, patched_model=None):
        opts = pipeline.SampleOptions(steps=steps, cfg=cfg, sampler=sampler, flow_shift=flow_shift,
                                      pag_scale=pag_scale, pag_adaptive_scale=pag_adaptive_scale,
                                      pag_layers=pag_layers, denoise=denoise)
        progress = host.Progress(steps)
        if host.native_sampling(model.cfg):  # inside ComfyUI: the host's own sampling, as KSampler
            out = host.sample_native(model.handle, positive, negative, latent, seed, opts, progress, patched_model)
        elif patched_model is not None:
            raise SanaError("patched_model needs ComfyUI's sampling; Sana-Sprint, and any model outside ComfyUI, "
                            "runs the pack's own sampler: disconnect patched_model")
        else:  # the pack's sampler; the inputs are checked where they enter the core (pipeline.denoise)
            samples = latent["samples"]
            noise = noise_for_seed(seed, tuple(samples.shape), latent.get("batch_index"))
            own = "Sana Sample's own sampler"
            out = pipeline.denoise(model.get(), conditioning.side(positive, "positive", own),
                                   conditioning.side(negative, "negative", own) if cfg > 1 else None, samples, seed,
                                   opts, callback=lambda i, n, x, x0: progress.step(i + 1, x0), noise=noise,
                                   noise_mask=latent.get("noise_mask"))
        result = dict(latent)  # keep extra keys (batch_index, binning record); never mutate the input
        result["samples"] = out.to(host.intermediate_device())
        return (result,)


class SanaDecode:
    CATEGORY = CATEGORY
    DESCRIPTION = "Decodes a Sana latent with DC-AE; crops back to the requested size when binning was used."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": SANA_VAE,
            "samples": ("LATENT", {"tooltip": "a Sana latent"}),
            "tiling": (["auto", "on", "off"], {"default": "auto", "tooltip": (
                "decode in 512 px tiles to save memory: auto tiles images above 1024 × 1024 pixels")}),
        }}

    def decode(self, vae: SanaVAE, samples, tiling):
        raw = samples["samples"]
        size = None
        record = samples.get(BINNING_KEY)
        if record:  # the target scales with any resize since binning (e.g. LatentUpscaleBy)
            (th, tw), (lh, lw) = record["target"], record["latent"]
            size = (round(th * raw.shape[-2] / lh), round(tw * raw.shape[-1] / lw))
        img = pipeline.decode_images(vae.get(vae.module.decode_memory(raw.shape, tiling)), raw, size, tiling)
        return (img.to(host.intermediate_device()),)


class SanaEncodeImage:
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes an image into a Sana latent (for image-to-image with denoise < 1)."
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": SANA_VAE, "image": ("IMAGE", {"tooltip": "cropped to multiples of 32"})}}

    def encode(self, vae: SanaVAE, image):
        return ({"samples": pipeline.encode_images(vae.get(), image).to(host.intermediate_device())},)


class SanaLoadTransformer:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a Sana transformer: a single file, a transformer folder or a whole Sana repo from "
                   "models/diffusion_models. The variant is detected from the weights.")
    RETURN_TYPES = ("SANA_MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_input("diffusion_models"),
            "weight_dtype": (WEIGHT_DTYPES, {
                "default": "auto", "tooltip": "int8 and fp8 store weights in 8 bits (about half of bf16); int8 "
                "computes in the file's dtype, fp8 in bf16"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return check_model("diffusion_models", model_name)

    def load(self, model_name, weight_dtype):
        m = _transformer(host.resolve_model("diffusion_models", model_name), weight_dtype)
        return {"ui": {"text": [m.info], "sana_model": [m.summary]}, "result": (m,)}


class SanaLoadDCAE:
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the DC-AE f32c32 autoencoder: a single file, a vae folder or a whole Sana repo in models/vae."
    RETURN_TYPES = ("SANA_VAE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": model_input("vae"),
            "dtype": (["auto", "bf16", "fp32"], {"default": "auto", "tooltip": "DC-AE overflows in fp16"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return check_model("vae", vae_name)

    def load(self, vae_name, dtype):
        v = _vae(host.resolve_model("vae", vae_name), dtype)
        return {"ui": {"text": [v.info]}, "result": (v,)}


class SanaLoadPipeline:
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads transformer, text encoder and DC-AE from one Sana diffusers repo in models/diffusers."
    RETURN_TYPES = ("SANA_MODEL", "SANA_TEXT_ENCODER", "SANA_VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pipeline": model_input("diffusers", files=False),
            "weight_dtype": (WEIGHT_DTYPES, {
                "default": "auto", "tooltip": "for the transformer; the text encoder and DC-AE stay in bf16/fp32 "
                "(int8 also stores the text encoder in 8 bits)"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, pipeline):
        return check_model("diffusers", pipeline, files=False)

    def load(self, pipeline, weight_dtype):
        root = host.resolve_model("diffusers", pipeline)
        side = "fp32" if weight_dtype == "fp32" else "auto"
        m = _transformer(root, weight_dtype)
        te = _text_encoder(root, "int8" if weight_dtype == "int8" else side)
        v = _vae(root, side)
        return {"ui": {"text": [m.info, te.info, v.info], "sana_model": [m.summary]}, "result": (m, te, v)}


class SanaLoadControlNet:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a Sana ControlNet (diffusers folder, single safetensors or NVlabs .pth) from models/controlnet "
                   "for ComfyUI's Apply ControlNet nodes; connect Sana to VAE's VAE to their vae input.")
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control_net_name": model_input("controlnet")}}

    @classmethod
    def VALIDATE_INPUTS(cls, control_net_name):
        return check_model("controlnet", control_net_name)

    def load(self, control_net_name):
        net = load_controlnet(host.resolve_model("controlnet", control_net_name), operations=host.operations())
        info = f"Sana ControlNet · hidden {net.cfg.dim} · {net.cfg.num_layers} blocks · " \
               f"{str(net.dtype).removeprefix('torch.')}"
        return {"ui": {"text": [info]}, "result": (host.control_net(net),)}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (
    SanaLoadTextEncoder, SanaEncodePrompt, SanaLoadTransformer, SanaLoadDCAE, SanaLoadPipeline, SanaEmptyLatent,
    SanaSample, SanaDecode, SanaEncodeImage, SanaLoadControlNet)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SanaLoadTextEncoder": "Sana Load Text Encoder (Gemma-2)",
    "SanaEncodePrompt": "Sana Encode Prompt",
    "SanaLoadTransformer": "Sana Load Transformer",
    "SanaLoadDCAE": "Sana Load DC-AE",
    "SanaLoadPipeline": "Sana Load Pipeline (diffusers repo)",
    "SanaEmptyLatent": "Sana Empty Latent",
    "SanaSample": "Sana Sample",
    "SanaDecode": "Sana Decode",
    "SanaEncodeImage": "Sana Encode Image",
    "SanaLoadControlNet": "Sana Load ControlNet",
}
