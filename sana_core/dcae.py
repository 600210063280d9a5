"""DC-AE f32c32 (docs/model.md §2): the model with (tiled) encode/decode; ``load/dcae.py`` loads it from every
published layout.

``encode`` maps an image in [-1, 1], (B, 3, H, W), to the raw latent (B, 32, H/32, W/32); ``decode`` is its inverse.
Neither applies ``scaling_factor``: callers multiply after encode and divide (in the VAE dtype) before decode.
Tiling reproduces diffusers' ``tiled_encode``/``tiled_decode`` exactly for the same tile parameters (§2.5), keeping
only one row of tiles alive. DC-AE runs in bf16 or fp32 only: it overflows in fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dcae_blocks import SANA_F32C32, DCAEConfig, Decoder, Encoder
from .errors import SanaError
from .latent import LatentSpace
from .layers import Operations

TILE_PX = 512  # diffusers' tile_sample_min
STRIDE_PX = 448  # diffusers' tile_sample_stride
AUTO_TILE_ABOVE_AREA = 1024 * 1024  # tiling="auto" tiles images larger than this many pixels: every bin of the
# 512/1024 tables decodes in one pass (as diffusers does), 2K/4K images in tiles
FP16_MESSAGE = "DC-AE overflows in fp16 (docs/model.md §9.1); use torch.bfloat16 or torch.float32"


def check_dtype(dtype: object, source: str, what: str = "requested") -> None:
    if dtype == torch.float16:
        raise SanaError(f"{source}: dtype float16 {what}; {FP16_MESSAGE}")
    if dtype not in (torch.bfloat16, torch.float32):
        raise SanaError(f"{source}: dtype {dtype} {what}; expected torch.bfloat16 or torch.float32")


class DCAE(nn.Module):
    """Encoder and decoder, every layer built from ``operations`` (``layers.py``)."""

    compute_device: torch.device | None = None  # set by a host that keeps some weights on another device

    def __init__(self, config: DCAEConfig = SANA_F32C32, operations=Operations):
        super().__init__()
        c = config.validate()
        self.config = c
        self.operations = operations
        self.encoder = Encoder(c.in_channels, c.latent_channels, c.attention_head_dim, c.encoder_block_types,
                               c.encoder_block_out_channels, c.encoder_layers_per_block, c.encoder_qkv_multiscales,
                               c.downsample_block_type == "pixel_unshuffle", c.encoder_out_shortcut, operations)
        self.decoder = Decoder(c.in_channels, c.latent_channels, c.attention_head_dim, c.decoder_block_types,
                               c.decoder_block_out_channels, c.decoder_layers_per_block, c.decoder_qkv_multiscales,
                               c.decoder_act_fns, c.upsample_block_type == "interpolate", c.decoder_in_shortcut,
                               c.decoder_conv_act_fn, operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the model computes: the device a host that keeps some weights elsewhere runs it on
        (``compute_device``), else where its weights are."""
        return self.compute_device or self.decoder.conv_in.weight.device

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def spatial_compression(self) -> int:
        return self.config.spatial_compression

    @property
    def latent_space(self) -> LatentSpace:
        return self.config.latent_space

    def decode_memory(self, latent_shape: tuple[int, ...], tiling: str = "auto") -> int:
        """About the most bytes a decode of latents (B, C, h, w) holds at once, for a host to free first: a few
        feature maps of the widest full-resolution stage, per tile when it decodes in tiles."""
        b, _, h, w = latent_shape
        r = self.spatial_compression
        hp, wp = h * r, w * r
        if self._use_tiles(tiling, hp, wp, TILE_PX, STRIDE_PX):
            hp = wp = TILE_PX
        return 4 * b * self.config.decoder_block_out_channels[0] * hp * wp * self.dtype.itemsize

    def _use_tiles(self, tiling: str, h_px: int, w_px: int, tile_px: int, stride_px: int) -> bool:
        if tiling not in ("auto", "on", "off"):
            raise SanaError(f"tiling={tiling!r}; expected 'auto', 'on' or 'off'")
        r = self.spatial_compression
        if tile_px % r or stride_px % r or not 0 < stride_px <= tile_px:
            raise SanaError(f"tile_px={tile_px}, stride_px={stride_px}: both must be multiples of the compression "
                            f"{r}, with 0 < stride_px <= tile_px")
        if tiling == "off" or (tiling == "auto" and h_px * w_px <= AUTO_TILE_ABOVE_AREA):
            return False
        return h_px > tile_px or w_px > tile_px  # diffusers' rule once tiling is enabled

    def _prepare(self, x: torch.Tensor, channels: int, what: str) -> torch.Tensor:
        check_dtype(self.dtype, "DCAE", "in use (the model was cast)")
        if x.ndim != 4 or x.shape[1] != channels:
            raise SanaError(f"DCAE.{what}: input has shape {tuple(x.shape)}; expected (B, {channels}, H, W)")
        return x.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode(self, image: torch.Tensor, tiling: str = "auto", tile_px: int = TILE_PX,
               stride_px: int = STRIDE_PX) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → raw latent (B, C_lat, H/r, W/r) in the model dtype. H, W must be multiples of r."""
        x = self._prepare(image, self.config.in_channels, "encode")
        r = self.spatial_compression
        if x.shape[2] % r or x.shape[3] % r:
            raise SanaError(f"DCAE.encode: image size {x.shape[2]}x{x.shape[3]} is not a multiple of the "
                            f"compression {r}; resize or crop it first")
        if self._use_tiles(tiling, x.shape[2], x.shape[3], tile_px, stride_px):
            return self.tiled_encode(x, tile_px, stride_px)
        return self.encoder(x)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tiling: str = "auto", tile_px: int = TILE_PX,
               stride_px: int = STRIDE_PX) -> torch.Tensor:
        """Raw latent (B, C_lat, h, w) → image (B, 3, h·r, w·r) in [-1, 1] (unclamped), in the model dtype."""
        z = self._prepare(latent, self.config.latent_channels, "decode")
        r = self.spatial_compression
        if self._use_tiles(tiling, z.shape[2] * r, z.shape[3] * r, tile_px, stride_px):
            return self.tiled_decode(z, tile_px, stride_px)
        return self.decoder(z)

    @torch.no_grad()
    def tiled_encode(self, image: torch.Tensor, tile_px: int = TILE_PX, stride_px: int = STRIDE_PX) -> torch.Tensor:
        """diffusers ``tiled_encode``: tile_px tiles every stride_px, blended over (tile − stride)/r latent pixels."""
        x = self._prepare(image, self.config.in_channels, "tiled_encode")
        self._use_tiles("off", 0, 0, tile_px, stride_px)  # validates the tile parameters
        r = self.spatial_compression
        tile_lat, stride_lat = tile_px // r, stride_px // r
        blend = tile_lat - stride_lat
        rows, prev = [], None
        for i in range(0, x.shape[2], stride_px):
            row = []
            for j in range(0, x.shape[3], stride_px):
                tile = x[:, :, i:i + tile_px, j:j + tile_px]
                pad_h, pad_w = (r - tile.shape[2]) % r, (r - tile.shape[3]) % r
                if pad_h or pad_w:
                    tile = F.pad(tile, (0, pad_w, 0, pad_h))
                tile = self.encoder(tile)  # (B, C_lat, ≤ tile_lat, ≤ tile_lat)
                if prev is not None:
                    tile = _blend_v(prev[len(row)], tile, blend)
                if row:
                    tile = _blend_h(row[-1], tile, blend)
                row.append(tile)
            rows.append(torch.cat([t[:, :, :stride_lat, :stride_lat] for t in row], dim=3))
            prev = row
        return torch.cat(rows, dim=2)[:, :, :x.shape[2] // r, :x.shape[3] // r]

    @torch.no_grad()
    def tiled_decode(self, latent: torch.Tensor, tile_px: int = TILE_PX, stride_px: int = STRIDE_PX) -> torch.Tensor:
        """diffusers ``tiled_decode``: tile_px/r latent tiles every stride_px/r, blended over tile − stride pixels.

        Blending is in place in diffusers' order (a tile meets its final upper and left neighbours), so keeping only
        the previous row and writing each cropped tile straight into the output gives identical pixels.
        """
        z = self._prepare(latent, self.config.latent_channels, "tiled_decode")
        self._use_tiles("off", 0, 0, tile_px, stride_px)
        r = self.spatial_compression
        b, _, h, w = z.shape
        tile_lat, stride_lat = tile_px // r, stride_px // r
        blend = tile_px - stride_px
        out = None
        prev = None
        for i in range(0, h, stride_lat):
            row = []
            for j in range(0, w, stride_lat):
                tile = self.decoder(z[:, :, i:i + tile_lat, j:j + tile_lat])  # (B, 3, ≤ tile_px, ≤ tile_px)
                if out is None:
                    out = tile.new_empty(b, tile.shape[1], h * r, w * r)
                if prev is not None:
                    tile = _blend_v(prev[len(row)], tile, blend)
                if row:
                    tile = _blend_h(row[-1], tile, blend)
                row.append(tile)
                crop = tile[:, :, :stride_px, :stride_px]
                out[:, :, i * r:i * r + crop.shape[2], j * r:j * r + crop.shape[3]] = crop
            prev = row
        return out


def _blend_v(a: torch.Tensor, b: torch.Tensor, extent: int) -> torch.Tensor:
    """Linear ramp from the tile above into ``b``'s top rows, in place, row by row exactly as diffusers."""
    extent = min(a.shape[2], b.shape[2], extent)
    for y in range(extent):
        b[:, :, y, :] = a[:, :, -extent + y, :] * (1 - y / extent) + b[:, :, y, :] * (y / extent)
    return b


def _blend_h(a: torch.Tensor, b: torch.Tensor, extent: int) -> torch.Tensor:
    extent = min(a.shape[3], b.shape[3], extent)
    for x in range(extent):
        b[:, :, :, x] = a[:, :, :, -extent + x] * (1 - x / extent) + b[:, :, :, x] * (x / extent)
    return b
