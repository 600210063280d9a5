"""The latent space the Sana models work in, described once: the DC-AE's latent channels, how many pixels one latent
cell covers on each side, and the factor sampling scales raw latents by. A loaded DC-AE states its own
(``DCAEConfig.latent_space``); ``SANA`` is the published f32c32's (DC-AE 1.0 and 1.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SanaError


@dataclass(frozen=True)
class LatentSpace:
    channels: int
    compression: int  # pixels per latent cell, on each side
    scaling_factor: float  # sampling runs on raw latents × this

    def scaled(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.scaling_factor

    def raw(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled / self.scaling_factor

    def convert(self, raw: torch.Tensor, to: LatentSpace) -> torch.Tensor:
        """Raw latents of this space as raw latents of ``to``: the same scaled latent."""
        return raw if to.scaling_factor == self.scaling_factor else to.raw(self.scaled(raw))

    def cells(self, pixels: int) -> int:
        return pixels // self.compression

    def check(self, latent: torch.Tensor, what: str = "latent") -> None:
        if latent.ndim == 5:
            raise SanaError(f"{what} has shape {tuple(latent.shape)}: a video latent; Sana image models take "
                            f"[B, {self.channels}, H/{self.compression}, W/{self.compression}] DC-AE latents (video "
                            "latents take a SANA-Video model and the Wan VAE)")
        if latent.ndim != 4 or latent.shape[1] != self.channels:
            shape = tuple(latent.shape)
            c = self.compression
            raise SanaError(f"{what} has shape {shape} ({shape[1] if latent.ndim > 1 else '?'} channels); Sana expects "
                            f"[B, {self.channels}, H/{c}, W/{c}] DC-AE latents — this latent comes from another model "
                            "(e.g. SD's 4-channel /8 latents); make it with Sana Empty Latent or Sana Encode Image")


SANA = LatentSpace(channels=32, compression=32, scaling_factor=0.41407)


@dataclass(frozen=True)
class VideoLatentSpace:
    """A video autoencoder's latents: channels, pixels per latent cell on each side, video frames per latent frame
    after the first (which is kept whole), and the per-channel statistics raw latents are normalised with for
    sampling, ``(z - mean) / std``."""

    channels: int
    compression: int
    temporal: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def frames(self, length: int) -> int:
        """Latent frames for ``length`` video frames; a SanaError for a count the VAE cannot represent."""
        t = self.temporal
        if length < 1 or (length - 1) % t:
            lo = max(1, (length - 1) // t * t + 1)
            raise SanaError(f"{length} frames: the Wan VAE represents 4k+1 frames (1, 5, 9, …, 81); use {lo} or "
                            f"{lo + t}")
        return (length - 1) // t + 1


# The Wan 2.1 VAE's (SANA-Video 480p), with its published statistics (ComfyUI's Wan 2.1 latent format holds the same)
WAN21 = VideoLatentSpace(
    channels=16, compression=8, temporal=4,
    mean=(-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632,
          -0.1922, -0.9497, 0.2503, -0.2921),
    std=(2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382,
         1.1253, 2.8251, 1.9160))
