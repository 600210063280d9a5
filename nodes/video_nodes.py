"""The SANA-Video nodes: an empty video latent with the reference's resolution binning, image-to-video in the style
of ComfyUI's WanImageToVideo, and a decode that crops back to the requested size. Sampling is SanaSample's (or
KSampler's through Sana to MODEL); the VAE is ComfyUI's own Wan 2.1 VAE."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..sana_core import bins
from ..sana_core.errors import SanaError
from ..sana_core.latent import WAN21
from ..sana_core.video import is_video
from . import conditioning, host
from . import widgets as w
from .models import SanaModel
from .sana_nodes import binned_latent, requested_size  # the same binning record as Sana Empty Latent's

CATEGORY = "Sana/video"


def _video_model(model: SanaModel | None, node: str) -> int | None:
    """The model's bin-table resolution; a SanaError for an image model."""
    if model is None:
        return None
    if not is_video(model.cfg):
        raise SanaError(f"{node} makes video latents, but the connected model is a Sana image model: connect a "
                        "SANA-Video model, or use Sana Empty Latent for images")
    return model.cfg.resolution


def _check_vae(vae) -> None:
    """The host VAE must be the Wan 2.1 VAE (16 channels, 3-D latents)."""
    if getattr(vae, "latent_dim", None) != 3 or getattr(vae, "latent_channels", None) != WAN21.channels:
        raise SanaError(f"this VAE makes {getattr(vae, 'latent_channels', '?')}-channel "
                        f"{getattr(vae, 'latent_dim', '?')}-D latents; SANA-Video takes the Wan 2.1 VAE (16-channel "
                        "video latents): load wan_2.1_vae.safetensors with Load VAE, or a SANA-Video repo with Sana "
                        "Load Pipeline (a Wan 2.2 VAE has 48 channels, an SD/Flux VAE is an image VAE)")


def _size_inputs(width=832, height=480) -> list:
    tip = "in pixels; with resolution binning off, a multiple of 16"
    return [io.Int.Input("width", default=width, min=16, max=4096, step=16, tooltip=tip),
            io.Int.Input("height", default=height, min=16, max=4096, step=16, tooltip=tip),
            io.Int.Input("length", default=81, min=1, max=1025, step=4, tooltip=(
                "frames; the Wan VAE represents 4k+1 (1, 5, …, 81)")),
            io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="videos per run"),
            io.Boolean.Input("resolution_binning", default=True, tooltip=(
                "on: sample at the nearest 480p/720p aspect-ratio bin the model was trained on, then Sana Decode "
                "Video resizes and crops back to width × height (as the reference pipeline); off: exactly width × "
                "height")),
            w.SanaModelType.Input("model", optional=True, tooltip=(
                "picks the bin table of the model's training resolution (480p or 720p)"))]


def _latent(plan: dict, batch_size: int) -> dict:
    return binned_latent(torch.zeros(batch_size, WAN21.channels, *plan["latent"], device=host.intermediate_device()),
                         plan)


class SanaEmptyVideoLatent(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaEmptyVideoLatent", "Sana Empty Video Latent", CATEGORY,
            "An empty SANA-Video latent [B, 16, (length-1)/4+1, H/8, W/8] (Wan 2.1 VAE). With resolution binning on, "
            "the latent is made at the nearest 480p/720p bin and Sana Decode Video crops back to width x height.",
            _size_inputs(), [io.Latent.Output()],
            aliases=("empty latent video", "EmptyHunyuanLatentVideo", "video", "frames"))

    @classmethod
    def execute(cls, width, height, length, batch_size, resolution_binning, model=None) -> io.NodeOutput:
        plan = bins.video_plan(width, height, length, resolution_binning, _video_model(model, "Sana Empty Video Latent"))
        return io.NodeOutput(_latent(plan, batch_size))


class SanaImageToVideo(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaImageToVideo", "Sana Image to Video", CATEGORY,
            "Starts a SANA-Video from an image: the image, encoded with the Wan VAE, is the first latent frame and "
            "stays fixed through sampling (as the reference image-to-video pipeline holds it). An image of another "
            "aspect ratio is centre-cropped to the video's, then resized.",
            [io.Conditioning.Input("positive", tooltip="Sana Encode Prompt with the video instruction"),
             io.Conditioning.Input("negative", tooltip="the negative prompt (used when cfg > 1)"),
             io.Vae.Input("vae", tooltip="the Wan 2.1 VAE"),
             io.Image.Input("start_image", tooltip="the first frame"),
             *_size_inputs()],
            [io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
             io.Latent.Output(display_name="latent")],
            aliases=("WanImageToVideo", "image to video", "i2v", "start frame"))

    @classmethod
    def execute(cls, positive, negative, vae, start_image, width, height, length, batch_size, resolution_binning,
                model=None) -> io.NodeOutput:
        _check_vae(vae)
        plan = bins.video_plan(width, height, length, resolution_binning, _video_model(model, "Sana Image to Video"))
        bh, bw = plan["bin"]
        image = start_image[:1, :, :, :3]
        if tuple(image.shape[1:3]) != (bh, bw):
            image = host.fit_image(image, bw, bh)
        start = vae.encode(image).to(host.intermediate_device())  # (1, 16, 1, h, w), raw
        out = _latent(plan, batch_size)
        out["samples"][:, :, :1] = start
        mask = torch.ones(1, 1, *plan["latent"], device=out["samples"].device)
        mask[:, :, :1] = 0.0  # the host's noise mask: the start frame is kept as it is
        out["noise_mask"] = mask
        held = {host.START_KEY: start}
        return io.NodeOutput(conditioning.with_values(positive, held), conditioning.with_values(negative, held), out)


class SanaDecodeVideo(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaDecodeVideo", "Sana Decode Video", CATEGORY,
            "Decodes a SANA-Video latent with the Wan 2.1 VAE into frames; crops back to the requested size when "
            "resolution binning was used (VAE Decode gives the binned size).",
            [io.Vae.Input("vae", tooltip="the Wan 2.1 VAE"),
             io.Latent.Input("samples", tooltip="a SANA-Video latent"),
             io.Boolean.Input("tiled", default=False, tooltip=(
                 "decode in 512 px tiles and 64-frame chunks (as VAE Decode (Tiled)) to save memory"))],
            [io.Image.Output()],
            aliases=("VAE decode", "video decode", "Wan VAE"))

    @classmethod
    def execute(cls, vae, samples, tiled) -> io.NodeOutput:
        _check_vae(vae)
        raw = samples["samples"]
        if raw.ndim != 5:
            raise SanaError(f"samples has shape {tuple(raw.shape)}: not a video latent [B, 16, frames, H/8, W/8]")
        frames = host.decode_video(vae, raw, tiled)  # (B·F, H, W, 3)
        size = requested_size(samples)
        if size:
            frames = bins.resize_and_crop(frames.movedim(-1, 1), *size).movedim(1, -1)
        return io.NodeOutput(frames.to(host.intermediate_device()))


NODES = (SanaEmptyVideoLatent, SanaImageToVideo, SanaDecodeVideo)
