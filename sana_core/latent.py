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
