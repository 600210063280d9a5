"""The Wan 2.1 VAE of a SANA-Video repo, as the state dict ComfyUI's own Wan VAE reads.

A SANA-Video diffusers repo holds the VAE as diffusers' ``AutoencoderKLWan`` (``vae/``); ComfyUI's Load VAE reads
Wan's original names. ``diffusers_to_wan`` renames one to the other (no tensor changes). The model itself is the
host's: nothing here builds a VAE. ``read_wan_vae`` locates, reads, checks and converts.

The two layouts, per part (diffusers → Wan):
- ``conv_in`` → ``conv1``; ``norm_out`` / ``conv_out`` → ``head.0`` / ``head.2``; ``quant_conv`` / ``post_quant_conv``
  → ``conv1`` / ``conv2`` at the top level;
- a residual block's ``norm1, conv1, norm2, conv2, conv_shortcut`` → ``residual.0, .2, .3, .6``, ``shortcut``;
- the middle: ``mid_block.resnets.0``, ``attentions.0``, ``resnets.1`` → ``middle.0, .1, .2``;
- the encoder's ``down_blocks.i`` → ``downsamples.i`` (one flat list in both);
- the decoder's ``up_blocks.i.resnets.j`` and ``up_blocks.i.upsamplers.0`` → one flat ``upsamples.k`` list: each up
  block is its resnets then its upsampler.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import SanaError
from ..latent import WAN21
from .families import Family, key_summary, sniff
from .files import locate, read_json
from .tensors import read_weights

CLASS_NAME = "AutoencoderKLWan"

_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_ENDS = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}


def _resnet(rest: str) -> str:
    """'norm1.gamma' → 'residual.0.gamma'."""
    part, _, tail = rest.partition(".")
    return f"{_RESIDUAL.get(part, part)}.{tail}"


def diffusers_to_wan(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' ``AutoencoderKLWan`` names → Wan's own (ComfyUI's Wan VAE); the tensors are the same objects."""
    per_block = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k))),
                        default=-1)
    out = {}
    for key, t in sd.items():
        side, _, rest = key.partition(".")
        if side in _TOP:
            out[f"{_TOP[side]}.{rest}"] = t
            continue
        head, _, tail = rest.partition(".")
        if head in _ENDS:
            new = f"{_ENDS[head]}.{tail}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest):
            kind, i, tail = m.groups()
            new = "middle.1." + tail if kind == "attentions" else f"middle.{2 * int(i)}.{_resnet(tail)}"
        elif m := re.match(r"down_blocks\.(\d+)\.(.*)", rest):
            new = f"downsamples.{m.group(1)}.{_resnet(m.group(2))}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
            new = f"upsamples.{int(m.group(1)) * (per_block + 1) + int(m.group(2))}.{_resnet(m.group(3))}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest):
            new = f"upsamples.{int(m.group(1)) * (per_block + 1) + per_block}.{m.group(2)}"
        else:
            raise SanaError(f"an AutoencoderKLWan tensor this converter does not know: {key!r}")
        out[f"{side}.{new}"] = t
    return out


def read_wan_vae(path: str | Path) -> dict[str, torch.Tensor]:
    """The Wan 2.1 VAE of a repo (its ``vae/``), a vae folder or a weight file, in Wan's own names, for ComfyUI's
    VAE. A SanaError names a Wan 2.2 (48-channel) VAE, another family, or latent statistics other than Wan 2.1's."""
    where = locate(path, "vae")
    weights = where.weights(("diffusion_pytorch_model",), "Wan VAE")
    config = read_json(where.config) if where.config else {}
    if config.get("_class_name", CLASS_NAME) != CLASS_NAME:
        raise SanaError(f"{where.path}: the VAE is a {config['_class_name']}; SANA-Video in ComfyUI takes the Wan 2.1 "
                        "VAE (AutoencoderKLWan, 16 channels)")
    sd = read_weights(weights)
    if sniff(sd) is not Family.WAN_VAE:
        raise SanaError(f"{weights}: not a Wan VAE (found {key_summary(sd)}); SANA-Video takes the Wan 2.1 VAE")
    if "decoder.mid_block.resnets.0.norm1.gamma" in sd:
        sd = diffusers_to_wan(sd)
    channels = sd["conv2.weight"].shape[0]
    if channels != WAN21.channels:
        raise SanaError(f"{weights}: a VAE with {channels} latent channels (Wan 2.2's has 48); SANA-Video takes the "
                        f"Wan 2.1 VAE ({WAN21.channels} channels)")
    for name, want in (("latents_mean", WAN21.mean), ("latents_std", WAN21.std)):  # what SANA-Video was trained on
        got = config.get(name)
        if got is not None and torch.tensor(got).sub(torch.tensor(want)).abs().max() > 1e-4:
            raise SanaError(f"{where.config}: {name} differs from Wan 2.1's; this VAE's latents are not the ones "
                            "SANA-Video was trained on")
    return sd
