"""DC-AE f32c32 (docs/model.md §2): the model with (tiled) encode/decode, and loading from every published layout.

``encode`` maps an image in [-1, 1], (B, 3, H, W), to the raw latent (B, 32, H/32, W/32); ``decode`` is its inverse.
Neither applies ``scaling_factor``: callers multiply after encode and divide (in the VAE dtype) before decode.
Tiling reproduces diffusers' ``tiled_encode``/``tiled_decode`` exactly for the same tile parameters (§2.5), keeping
only one row of tiles alive. DC-AE runs in bf16 or fp32 only: it overflows in fp16.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import speed
from .dcae_blocks import SANA_F32C32, DCAEConfig, Decoder, Encoder
from .errors import SanaError
from .layers import Operations
from .loading import Family, locate, read_json, sniff, wrong_family
from .weights import dominant_dtype, load_into, read_weights, strip_prefix

log = logging.getLogger(__name__)

TILE_PX = 512  # diffusers' tile_sample_min
STRIDE_PX = 448  # diffusers' tile_sample_stride
AUTO_TILE_ABOVE_AREA = 1024 * 1024  # tiling="auto" tiles images larger than this many pixels: every bin of the
# 512/1024 tables decodes in one pass (as diffusers does), 2K/4K images in tiles
FP16_MESSAGE = "DC-AE overflows in fp16 (docs/model.md §9.1); use torch.bfloat16 or torch.float32"


def _check_dtype(dtype: object, source: str, what: str = "requested") -> None:
    if dtype == torch.float16:
        raise SanaError(f"{source}: dtype float16 {what}; {FP16_MESSAGE}")
    if dtype not in (torch.bfloat16, torch.float32):
        raise SanaError(f"{source}: dtype {dtype} {what}; expected torch.bfloat16 or torch.float32")


class DCAE(nn.Module):
    """Encoder and decoder, every layer built from ``operations`` (``layers.py``)."""

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
        return self.__dict__.get("compute_device") or self.decoder.conv_in.weight.device

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def spatial_compression(self) -> int:
        return self.config.spatial_compression

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
        _check_dtype(self.dtype, "DCAE", "in use (the model was cast)")
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


# ---------------------------------------------------------------------------------------------------------------- #
# Loading


def convert_original_dcae(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mit-han-lab ``model.safetensors`` keys → diffusers keys (docs/model.md §7.3), substitutions applied in order
    to every key."""
    subs = [("main.", ""), ("op_list.", ""), ("context_module", "attn"), ("local_module", "conv_out"),
            ("depth_conv.conv", "conv_depth"), ("inverted_conv.conv", "conv_inverted"),
            ("point_conv.conv", "conv_point"), ("point_conv.norm", "norm"), ("conv.conv.", "conv."),
            ("conv1.conv", "conv1"), ("conv2.conv", "conv2"), ("conv2.norm", "norm"), ("proj.norm", "norm_out"),
            ("encoder.project_in.conv", "encoder.conv_in"), ("encoder.project_out.0.conv", "encoder.conv_out"),
            ("encoder.stages", "encoder.down_blocks"), ("decoder.project_in.conv", "decoder.conv_in"),
            ("decoder.project_out.0", "decoder.norm_out"), ("decoder.project_out.2.conv", "decoder.conv_out"),
            ("decoder.stages", "decoder.up_blocks")]
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        k = key
        for old, new in subs[:4]:
            k = k.replace(old, new)
        # aggreg.{s}.0 / .1 → to_qkv_multiscale.{s}.proj_in / proj_out (diffusers spells out s = 0 only)
        k = re.sub(r"aggreg\.(\d+)\.0", r"to_qkv_multiscale.\1.proj_in", k)
        k = re.sub(r"aggreg\.(\d+)\.1", r"to_qkv_multiscale.\1.proj_out", k)
        for old, new in subs[4:]:
            k = k.replace(old, new)
        if k.endswith(".qkv.conv.weight"):  # (3D, C, 1, 1) fused 1×1 conv → three (D, C) linears
            parent = k[: -len(".qkv.conv.weight")]
            for name, part in zip(("to_q", "to_k", "to_v"), torch.chunk(t, 3, dim=0)):
                out[f"{parent}.{name}.weight"] = part.reshape(part.shape[0], part.shape[1])
        elif k.endswith(".proj.conv.weight"):  # (C, 2D, 1, 1) → (C, 2D)
            out[k[: -len(".proj.conv.weight")] + ".to_out.weight"] = t.reshape(t.shape[0], t.shape[1])
        else:
            out[k] = t
    return out


def _shape(sd: dict[str, torch.Tensor], key: str, source: str) -> torch.Size:
    if key not in sd:
        raise SanaError(f"{source}: DC-AE tensor {key!r} is missing")
    return sd[key].shape


def _side_layout(sd: dict[str, torch.Tensor], side: str, n: int, source: str) -> tuple[dict, dict, set[int]]:
    """One side's per-stage widths, block types, depths and multiscale kernels; its resampling type; head dims."""
    pre = "encoder.down_blocks" if side == "encoder" else "decoder.up_blocks"
    stages: dict[int, dict[int, set[str]]] = {}  # {stage: {index: {param names}}}
    for k in sd:
        if m := re.fullmatch(rf"{pre}\.(\d+)\.(\d+)\.(.+)", k):
            stages.setdefault(int(m[1]), {}).setdefault(int(m[2]), set()).add(m[3])
    if sorted(stages) != list(range(n)):
        raise SanaError(f"{source}: {pre} has stages {sorted(stages)}; expected 0..{n - 1} like the encoder, every "
                        "stage populated")
    widths, types, layers, scales, head_dims, resampling = [], [], [], [], set(), {}
    for i in range(n):
        idx = sorted(stages[i])
        resample = None if i == n - 1 else (idx[-1] if side == "encoder" else idx[0])  # Down last / Up first
        blocks = [j for j in idx if j != resample]
        kinds = {"ResBlock" if "conv1.weight" in stages[i][j] else
                 "EfficientViTBlock" if "attn.to_q.weight" in stages[i][j] else "?" for j in blocks}
        if len(kinds) != 1 or "?" in kinds or (resample is not None and "conv.weight" not in stages[i][resample]):
            raise SanaError(f"{source}: {pre}.{i} holds {len(idx)} modules of kinds {sorted(kinds)}; expected "
                            "ResBlocks or EfficientViT blocks plus one resampling conv")
        p = f"{pre}.{i}.{blocks[0]}."
        if "ResBlock" in kinds:
            widths.append(_shape(sd, p + "conv1.weight", source)[0])
            ks: tuple[int, ...] = ()
        else:
            widths.append(_shape(sd, p + "attn.to_q.weight", source)[1])
            ms = sorted(int(m[1]) for name in stages[i][blocks[0]]
                        if (m := re.fullmatch(r"attn\.to_qkv_multiscale\.(\d+)\.proj_in\.weight", name)))
            ks = tuple(_shape(sd, p + f"attn.to_qkv_multiscale.{s}.proj_in.weight", source)[-1] for s in ms)
            # proj_out groups = 3·heads, so its weight is (3D, D/heads = head_dim, 1, 1)
            head_dims |= {_shape(sd, p + f"attn.to_qkv_multiscale.{s}.proj_out.weight", source)[1] for s in ms}
        types.append(kinds.pop())
        layers.append(len(blocks))
        scales.append(ks)
    for i in range(n - 1):
        j = max(stages[i]) if side == "encoder" else 0
        c = _shape(sd, f"{pre}.{i}.{j}.conv.weight", source)[0]
        if side == "encoder":  # strided conv keeps C_out; pixel_unshuffle's conv makes C_out/4
            resampling["downsample_block_type"] = "Conv" if c == widths[i + 1] else "pixel_unshuffle"
        else:  # interpolate's conv makes C_out; pixel_shuffle's 4·C_out
            resampling["upsample_block_type"] = "interpolate" if c == widths[i] else "pixel_shuffle"
    fields_ = {f"{side}_block_out_channels": tuple(widths), f"{side}_block_types": tuple(types),
               f"{side}_layers_per_block": tuple(layers), f"{side}_qkv_multiscales": tuple(scales)}
    return fields_, resampling, head_dims


def detect_dcae_config(sd: dict[str, torch.Tensor], source: str = "weights") -> DCAEConfig:
    """Read a DC-AE config off diffusers-named tensors: widths from conv shapes, depths from block indices, stage
    types from key names. Fields without weights (shortcuts, activations, scaling factor) take the Sana preset's."""
    n = 1 + max((int(m[1]) for k in sd if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))), default=-1)
    if n < 1:
        raise SanaError(f"{source}: no encoder.down_blocks.* tensors; expected a DC-AE")
    enc, enc_resample, enc_heads = _side_layout(sd, "encoder", n, source)
    dec, dec_resample, dec_heads = _side_layout(sd, "decoder", n, source)
    head_dims = enc_heads | dec_heads
    if len(head_dims) > 1:
        raise SanaError(f"{source}: attention head dims {sorted(head_dims)} differ between stages; expected one")
    in_ch, lat = _shape(sd, "encoder.conv_in.weight", source)[1], _shape(sd, "encoder.conv_out.weight", source)[0]
    out_ch = _shape(sd, "decoder.conv_out.weight", source)[0]
    if out_ch != in_ch:
        raise SanaError(f"{source}: the encoder takes {in_ch} image channels but the decoder makes {out_ch}")
    cfg = DCAEConfig(in_channels=in_ch, latent_channels=lat, attention_head_dim=head_dims.pop() if head_dims else 32,
                     decoder_norm_types=("rms_norm",) * n, decoder_act_fns=("silu",) * n, **enc, **dec,
                     **enc_resample, **dec_resample)
    return cfg.validate(source)


_STEMS = ("diffusion_pytorch_model", "model")  # diffusers' name, then mit-han-lab's
_EXPECTED_KEYS = ("DC-AE keys 'encoder.conv_in.weight', 'decoder.conv_in.weight' (diffusers) or "
                  "'encoder.project_in.conv.bias' (original mit-han-lab)")


def load_dcae(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
              operations=None) -> DCAE:
    """Load a DC-AE from a Sana repo folder, a vae folder, a diffusers or mit-han-lab single file, or a ``.pth``.

    dtype None keeps the file's dominant dtype, except fp16 files, which load as fp32 (DC-AE overflows in fp16).
    ``operations``: the layer classes (``layers.py``; None: the reference).
    """
    path = Path(path)
    if dtype is not None:
        _check_dtype(dtype, str(path))
    where = locate(path, "vae")
    weights = where.weights(_STEMS, "DC-AE")
    cfg_path = where.config
    if where.is_file and path.name.startswith(_STEMS[0]) and (path.parent / "config.json").is_file():
        cfg_path = path.parent / "config.json"  # a diffusers-named file keeps its folder's config
    source = str(weights)
    sd = strip_prefix(read_weights(weights), ("vae.", "first_stage_model."))
    family = sniff(sd)
    if family is Family.DCAE_ORIGINAL:
        sd = convert_original_dcae(sd)
    elif family is not Family.DCAE_DIFFUSERS:
        raise wrong_family(source, sd, family, "a DC-AE", _EXPECTED_KEYS)
    cfg_dict = read_json(cfg_path) if cfg_path is not None else None
    if cfg_dict is not None and "_class_name" not in cfg_dict and "encoder_block_out_channels" not in cfg_dict:
        cfg_dict = None  # not a diffusers config (e.g. mit-han-lab's own): detect from the tensors
    config = DCAEConfig.from_diffusers(cfg_dict, str(cfg_path)) if cfg_dict else detect_dcae_config(sd, source)
    file_dtype = dominant_dtype(sd)
    if dtype is None:
        dtype = file_dtype if file_dtype in (torch.bfloat16, torch.float32) else torch.float32
        if file_dtype == torch.float16:
            log.warning("%s: fp16 weights; loading them as fp32 because %s", source, FP16_MESSAGE)
    with torch.device("meta"):
        model = DCAE(config, operations or Operations)
    load_into(model, sd, dtype, source)
    speed.apply(model.requires_grad_(False).eval().to(device))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("DC-AE from %s (%s layout, config %s): widths %s, f%dc%d, %.1fM params, %s on %s", source, family.layout,
             "config.json" if cfg_dict else "detected", list(config.encoder_block_out_channels),
             config.spatial_compression, config.latent_channels, n_params / 1e6, str(dtype).removeprefix("torch."),
             device)
    return model
