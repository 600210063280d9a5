"""SANA-Video on the host's own video machinery: its Wan 2.1 VAE (built from a state dict in Wan's names), its
decode (tiled in space and time when asked) and its image resize."""

from __future__ import annotations

import comfy.sd
import comfy.utils
import torch


def wan_vae(state_dict: dict[str, torch.Tensor]):
    """ComfyUI's VAE for a Wan VAE state dict in Wan's own names (what Load VAE builds from wan_2.1_vae)."""
    return comfy.sd.VAE(sd=state_dict)


def decode_video(vae, latent: torch.Tensor, tiled: bool) -> torch.Tensor:
    """Frames (B·F, H, W, 3) in 0..1, as VAE Decode gives them; ``tiled``: as VAE Decode (Tiled) with its defaults
    (512 px tiles, 64 px overlap, 64-frame chunks overlapping by 8)."""
    if tiled:
        c, t = vae.spacial_compression_decode(), vae.temporal_compression_decode()
        images = vae.decode_tiled(latent, tile_x=512 // c, tile_y=512 // c, overlap=64 // c, tile_t=max(2, 64 // t),
                                  overlap_t=max(1, 8 // t))
    else:
        images = vae.decode(latent)
    return images.reshape(-1, *images.shape[-3:])


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(B, H, W, C) → (B, height, width, C): centre-cropped to the aspect ratio, then resized (bilinear), as
    WanImageToVideo fits its start image."""
    return comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
