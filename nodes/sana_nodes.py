"""The Sana nodes. Thin: read inputs, call one sana_core function, wrap outputs in ComfyUI's types."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..sana_core import bins, pipeline
from ..sana_core.errors import SanaError
from ..sana_core.latent import SANA
from ..sana_core.load import (
    DTYPES,
    is_video_transformer,
    load_controlnet,
    load_dcae,
    load_transformer,
    load_video_transformer,
)
from ..sana_core.load.wan_vae import read_wan_vae
from ..sana_core.quant import STORAGE
from ..sana_core.sampling import SAMPLERS, noise_for_seed
from ..sana_core.video import VIDEO_CHI, is_video, with_motion_score
from . import conditioning, host
from . import widgets as w
from .models import SanaModel, SanaTextEncoderHandle, SanaVAE, SanaWanVAE

CATEGORY = "Sana"
BINNING_KEY = "sana_binning"  # LATENT extra: {"target": [H, W], "latent": [h, w]} recorded at binning time

def binned_latent(samples: torch.Tensor, plan: dict) -> dict:
    """A LATENT of ``samples``; when binning changed the size (``plan``'s crop, from ``bins``), it records the size
    asked for against the latent's height and width."""
    out = {"samples": samples}
    if plan["crop"]:
        out[BINNING_KEY] = {"target": plan["crop"], "latent": list(samples.shape[-2:])}
    return out


def requested_size(latent: dict) -> tuple[int, int] | None:
    """The size asked for when the latent was binned, scaled with any resize since (e.g. LatentUpscaleBy); None
    when it was not binned."""
    record = latent.get(BINNING_KEY)
    if not record:
        return None
    (th, tw), (lh, lw), raw = record["target"], record["latent"], latent["samples"]
    return round(th * raw.shape[-2] / lh), round(tw * raw.shape[-1] / lw)


WEIGHT_DTYPES = ["auto", "bf16", "fp16", "fp32", "int8", "fp8_e4m3fn", "fp8_e5m2"]


def _transformer(path, weight_dtype: str) -> SanaModel:
    """A Sana or SANA-Video transformer, whichever the weights hold."""
    fp8 = weight_dtype.startswith("fp8")  # fp8 storage computes in bf16; int8 in the file's dtype
    load = load_video_transformer if is_video_transformer(path) else load_transformer
    model = load(path, torch.bfloat16 if fp8 else DTYPES.get(weight_dtype), device="cpu",
                 storage=weight_dtype if weight_dtype in STORAGE else None, operations=host.operations())
    return SanaModel(host.wrap(model, "diffusion"), str(path))


def _text_encoder_module():
    """(the text encoder's module, its loader's module). They need a transformers with Gemma-2; without it only the
    nodes that encode text fail, with the fix."""
    try:
        from ..sana_core import text_encoder
        from ..sana_core.load import text_encoder as loading
    except ImportError as e:
        raise SanaError(f"the Sana text encoder could not be imported ({e}): it needs transformers>=4.44 (Gemma-2); "
                        "run `pip install -r requirements.txt` in this node pack's folder (inside ComfyUI's "
                        "Python)") from e
    return text_encoder, loading


def _text_encoder(path, dtype: str) -> SanaTextEncoderHandle:
    enc = _text_encoder_module()[1].load_text_encoder(path, DTYPES.get(dtype), device="cpu", int8=dtype == "int8")
    return SanaTextEncoderHandle(host.wrap(enc.model, "text_encoder"), enc, str(path))


def _vae(path, dtype: str) -> SanaVAE:
    vae = load_dcae(path, DTYPES[dtype], device="cpu", operations=host.operations())
    return SanaVAE(host.wrap(vae, "vae"), str(path))


class SanaLoadTextEncoder(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoadTextEncoder", "Sana Load Text Encoder (Gemma-2)", CATEGORY,
            "Loads Gemma-2-2B(-it) from a gemma folder or a Sana diffusers repo in models/text_encoders.",
            [w.model_input("text_encoder", "text_encoders", files=False),
             io.Combo.Input("dtype", options=["auto", "bf16", "fp32", "int8"], default="auto", tooltip=(
                 "Gemma-2 overflows in fp16; int8 stores weights in 8 bits (about half of bf16)"))],
            [w.SanaTextEncoderType.Output()],
            aliases=("Gemma", "Gemma-2", "text encoder", "CLIP loader"))

    validate_inputs = w.model_check("text_encoders", "text_encoder", files=False)

    @classmethod
    def execute(cls, text_encoder, dtype) -> io.NodeOutput:
        _text_encoder_module()  # a missing dependency is named before anything else
        te = _text_encoder(host.resolve_model("text_encoders", text_encoder), dtype)
        return io.NodeOutput(te, ui={"text": [te.info]})


class SanaEncodePrompt(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaEncodePrompt", "Sana Encode Prompt", CATEGORY,
            "Encodes a prompt with Gemma-2. use_chi prepends Sana's complex human instruction (on for the positive "
            "prompt, off for the negative, as the reference pipeline does).",
            [w.sana_text_encoder(),
             io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="the prompt"),
             io.Boolean.Input("use_chi", default=True, tooltip=(
                 "prepend Sana's complex human instruction, which rewrites the prompt in the model's head: on for "
                 "the positive, off for the negative")),
             io.Int.Input("max_length", default=300, min=2, max=4096, tooltip=(
                 "tokens kept of the prompt (the reference pipeline keeps 300); the instruction's tokens come on "
                 "top")),
             io.String.Input("chi", multiline=True, default="", optional=True, tooltip=(
                 "your own instruction, one line per line, in place of the default one")),
             io.Boolean.Input("clean_caption", default=False, optional=True, tooltip=(
                 "clean the prompt as Sana's training captions were: lowercased, URLs, HTML, @handles, hashtags, "
                 "dates and ids, file names, CJK ideographs, 'free shipping'-style boilerplate and stray punctuation "
                 "removed (needs beautifulsoup4 and ftfy). Off: the prompt is used as written, case kept")),
             io.Combo.Input("instruction", options=["image", "video"], default="image", optional=True, tooltip=(
                 "which built-in instruction use_chi prepends: the image models' or SANA-Video's (it asks for "
                 "motion and temporal detail)")),
             io.Int.Input("motion_score", default=-1, min=-1, max=100, optional=True, tooltip=(
                 "SANA-Video: appends ' motion score: N.' to the prompt as the published examples do (about 30; "
                 "higher asks for more motion); -1: nothing appended"))],
            [io.Conditioning.Output()],
            aliases=("text encode", "prompt", "CLIP text encode", "CHI"))

    @classmethod
    def execute(cls, text_encoder: SanaTextEncoderHandle, text, use_chi, max_length, chi="",
                clean_caption=False, instruction="image", motion_score=-1) -> io.NodeOutput:
        text = with_motion_score(text, motion_score)
        if clean_caption:  # a missing optional package is named before Gemma-2 is loaded
            from ..sana_core.captions import clean

            text = clean(text)
        enc = text_encoder.get()
        default = VIDEO_CHI if instruction == "video" else _text_encoder_module()[0].DEFAULT_CHI
        lines = (chi.split("\n") if chi.strip() else default) if use_chi else None
        emb, mask = enc.encode([text], chi=lines, max_length=max_length)
        text_encoder.release()
        dev = host.intermediate_device()
        return io.NodeOutput([[emb.to(dev), {"attention_mask": mask.to(dev)}]])


_SIZE_TIP = "in pixels; with resolution binning off, a multiple of 32"


class SanaEmptyLatent(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaEmptyLatent", "Sana Empty Latent", CATEGORY,
            "An empty Sana latent [B, 32, H/32, W/32]. With resolution binning on, the latent is made at the nearest "
            "trained aspect-ratio bin and Sana Decode resizes and crops back to width x height.",
            [io.Int.Input("width", default=1024, min=32, max=8192, step=8, tooltip=_SIZE_TIP),
             io.Int.Input("height", default=1024, min=32, max=8192, step=8, tooltip=_SIZE_TIP),
             io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="images per run"),
             io.Boolean.Input("resolution_binning", default=True, tooltip=(
                 "on: sample at the nearest aspect-ratio bin the model was trained on, then Sana Decode resizes and "
                 "crops back to width × height (as the reference pipeline); off: exactly width × height")),
             w.SanaModelType.Input("model", optional=True,
                                   tooltip="picks the bin table of the model's training resolution")],
            [io.Latent.Output()],
            aliases=("empty latent image", "resolution", "aspect ratio", "bins"))

    @classmethod
    def execute(cls, width, height, batch_size, resolution_binning, model: SanaModel | None = None) -> io.NodeOutput:
        if model is not None and is_video(model.cfg):
            raise SanaError("the connected model is a SANA-Video model, which samples video latents: use Sana Empty "
                            "Video Latent (or Sana Image to Video) instead of Sana Empty Latent")
        plan = bins.plan(width, height, resolution_binning, model.cfg.resolution if model is not None else None)
        samples = torch.zeros(batch_size, SANA.channels, *plan["latent"], device=host.intermediate_device())
        return io.NodeOutput(binned_latent(samples, plan))


class SanaSample(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaSample", "Sana Sample", CATEGORY,
            "Samples a Sana or SANA-Video latent with Flow-DPM-Solver or Flow-Euler, CFG and optional PAG (images). "
            "Flow models ride ComfyUI's own sampling (as KSampler: masks, regional prompts, ControlNet, model "
            "patches); Sana-Sprint runs its own SCM sampler.",
            [w.sana_model(),
             io.Conditioning.Input("positive", tooltip="what the image shows (Sana Encode Prompt with use_chi on)"),
             io.Conditioning.Input("negative", tooltip="what to steer away from (used when cfg > 1)"),
             io.Latent.Input("latent", tooltip=(
                 "Sana Empty Latent, or an encoded image for image-to-image; for SANA-Video, Sana Empty Video Latent "
                 "or Sana Image to Video")),
             io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                          tooltip="the noise seed"),
             w.steps(),
             io.Float.Input("cfg", default=4.5, min=0.0, max=100.0, step=0.1, round=0.01,
                            tooltip="classifier-free guidance scale; 1 or less = off"),
             w.sampler(SAMPLERS),
             w.flow_shift(),
             w.pag_scale(0.0),
             w.pag_adaptive_scale(),
             w.pag_layers(),
             w.denoise(0.0),
             io.Model.Input("patched_model", optional=True, tooltip=(
                 "optional: SanaToModel's MODEL of this same model after ComfyUI's model patches "
                 "(DifferentialDiffusion, LoRA loaders, …); sampling then carries its patches"))],
            [io.Latent.Output()],
            aliases=("KSampler", "sampler", "text to image", "DiT", "Flow-DPM-Solver", "PAG"))

    @classmethod
    def execute(cls, model: SanaModel, positive, negative, latent, seed, steps, cfg, sampler, flow_shift, pag_scale,
                pag_adaptive_scale, pag_layers, denoise, patched_model=None) -> io.NodeOutput:
        opts = pipeline.SampleOptions(steps=steps, cfg=cfg, sampler=sampler, flow_shift=flow_shift,
                                      pag_scale=pag_scale, pag_adaptive_scale=pag_adaptive_scale,
                                      pag_layers=pag_layers, denoise=denoise)
        progress = host.Progress(steps, video=is_video(model.cfg))
        if host.native_sampling(model.cfg):  # flow models: the host's own sampling, as KSampler
            out = host.sample_native(model.handle, positive, negative, latent, seed, opts, progress, patched_model)
        else:  # Sana-Sprint: its own SCM sampler, one prompt, no negative
            if patched_model is not None:
                raise SanaError("patched_model needs ComfyUI's sampling, which a Sana-Sprint model does not take (it "
                                "samples with its own SCM sampler): disconnect patched_model")
            if latent.get("noise_mask") is not None:
                raise SanaError("noise masks are not supported with Sana-Sprint models; use a flow model")
            samples = latent["samples"]
            noise = noise_for_seed(seed, tuple(samples.shape), latent.get("batch_index"))
            out = pipeline.denoise(model.get(), conditioning.single(positive, "positive", "a Sana-Sprint model"),
                                   None, samples, seed, opts, noise=noise,
                                   callback=lambda i, n, x, x0: progress.step(i + 1, x0))
        result = dict(latent)  # keep extra keys (batch_index, binning record); never mutate the input
        result["samples"] = out.to(host.intermediate_device())
        return io.NodeOutput(result)


class SanaDecode(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaDecode", "Sana Decode", CATEGORY,
            "Decodes a Sana latent with DC-AE; crops back to the requested size when binning was used.",
            [w.sana_vae(),
             io.Latent.Input("samples", tooltip="a Sana latent"),
             io.Combo.Input("tiling", options=["auto", "on", "off"], default="auto", tooltip=(
                 "decode in 512 px tiles to save memory: auto tiles images above 1024 × 1024 pixels"))],
            [io.Image.Output()],
            aliases=("VAE decode", "DC-AE decode"))

    @classmethod
    def execute(cls, vae: SanaVAE, samples, tiling) -> io.NodeOutput:
        vae.check_dcae("Sana Decode", "Sana Decode Video or VAE Decode")
        raw = samples["samples"]
        img = pipeline.decode_images(vae.get(vae.module.decode_memory(raw.shape, tiling)), raw, requested_size(samples),
                                     tiling, SANA)
        return io.NodeOutput(img.to(host.intermediate_device()))


class SanaEncodeImage(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaEncodeImage", "Sana Encode Image", CATEGORY,
            "Encodes an image into a Sana latent (for image-to-image with denoise < 1).",
            [w.sana_vae(), io.Image.Input("image", tooltip="cropped to multiples of 32")],
            [io.Latent.Output()],
            aliases=("VAE encode", "DC-AE encode", "image to image"))

    @classmethod
    def execute(cls, vae: SanaVAE, image) -> io.NodeOutput:
        vae.check_dcae("Sana Encode Image", "VAE Encode or Sana Image to Video")
        latent = pipeline.encode_images(vae.get(), image, space=SANA)
        return io.NodeOutput({"samples": latent.to(host.intermediate_device())})


_WEIGHT_DTYPE_TIP = "int8 and fp8 store weights in 8 bits (about half of bf16); int8 computes in the file's dtype, " \
                    "fp8 in bf16"


class SanaLoadTransformer(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoadTransformer", "Sana Load Transformer", CATEGORY,
            "Loads a Sana or SANA-Video transformer: a single file, a transformer folder or a whole repo from "
            "models/diffusion_models. The variant is detected from the weights.",
            [w.model_input("model_name", "diffusion_models"),
             io.Combo.Input("weight_dtype", options=WEIGHT_DTYPES, default="auto", tooltip=_WEIGHT_DTYPE_TIP)],
            [w.SanaModelType.Output()],
            aliases=("load diffusion model", "UNET loader", "DiT", "Linear DiT", "Sana-Sprint", "checkpoint"))

    validate_inputs = w.model_check("diffusion_models", "model_name")

    @classmethod
    def execute(cls, model_name, weight_dtype) -> io.NodeOutput:
        m = _transformer(host.resolve_model("diffusion_models", model_name), weight_dtype)
        return io.NodeOutput(m, ui={"text": [m.info], "sana_model": [m.summary]})


class SanaLoadDCAE(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoadDCAE", "Sana Load DC-AE", CATEGORY,
            "Loads the DC-AE f32c32 autoencoder: a single file, a vae folder or a whole Sana repo in models/vae.",
            [w.model_input("vae_name", "vae"),
             io.Combo.Input("dtype", options=["auto", "bf16", "fp32"], default="auto",
                            tooltip="DC-AE overflows in fp16")],
            [w.SanaVAEType.Output()],
            aliases=("VAE loader", "DC-AE", "autoencoder"))

    validate_inputs = w.model_check("vae", "vae_name")

    @classmethod
    def execute(cls, vae_name, dtype) -> io.NodeOutput:
        v = _vae(host.resolve_model("vae", vae_name), dtype)
        return io.NodeOutput(v, ui={"text": [v.info]})


class SanaLoadPipeline(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoadPipeline", "Sana Load Pipeline (diffusers repo)", CATEGORY,
            "Loads transformer, text encoder and autoencoder from one Sana or SANA-Video diffusers repo in "
            "models/diffusers. VAE: the autoencoder as ComfyUI's VAE (for a SANA-Video repo, its Wan 2.1 VAE).",
            [w.model_input("pipeline", "diffusers", files=False),
             io.Combo.Input("weight_dtype", options=WEIGHT_DTYPES, default="auto", tooltip=(
                 "for the transformer; the text encoder and DC-AE stay in bf16/fp32 (int8 also stores the text "
                 "encoder in 8 bits)"))],
            [w.SanaModelType.Output(), w.SanaTextEncoderType.Output(), w.SanaVAEType.Output(), io.Vae.Output()],
            aliases=("load checkpoint", "diffusers", "text to image", "DiT", "DC-AE", "Gemma", "SANA-Video"))

    validate_inputs = w.model_check("diffusers", "pipeline", files=False)

    @classmethod
    def execute(cls, pipeline, weight_dtype) -> io.NodeOutput:
        root = host.resolve_model("diffusers", pipeline)
        side = "fp32" if weight_dtype == "fp32" else "auto"
        m = _transformer(root, weight_dtype)
        te = _text_encoder(root, "int8" if weight_dtype == "int8" else side)
        v = SanaWanVAE(host.wan_vae(read_wan_vae(root)), str(root / "vae")) if is_video(m.cfg) else _vae(root, side)
        return io.NodeOutput(m, te, v, v.native(), ui={"text": [m.info, te.info, v.info], "sana_model": [m.summary]})


class SanaLoadControlNet(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoadControlNet", "Sana Load ControlNet", CATEGORY,
            "Loads a Sana ControlNet (diffusers folder, single safetensors or NVlabs .pth) from models/controlnet for "
            "ComfyUI's Apply ControlNet nodes; connect Sana to VAE's VAE to their vae input.",
            [w.model_input("control_net_name", "controlnet")],
            [io.ControlNet.Output()],
            aliases=("ControlNet loader", "HED", "control"))

    validate_inputs = w.model_check("controlnet", "control_net_name")

    @classmethod
    def execute(cls, control_net_name) -> io.NodeOutput:
        net = load_controlnet(host.resolve_model("controlnet", control_net_name), operations=host.operations())
        info = f"Sana ControlNet · hidden {net.cfg.dim} · {net.cfg.num_layers} blocks · " \
               f"{str(net.dtype).removeprefix('torch.')}"
        return io.NodeOutput(host.control_net(net), ui={"text": [info]})


NODES = (SanaLoadTextEncoder, SanaEncodePrompt, SanaLoadTransformer, SanaLoadDCAE, SanaLoadPipeline, SanaEmptyLatent,
         SanaSample, SanaDecode, SanaEncodeImage, SanaLoadControlNet)
