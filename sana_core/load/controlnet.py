"""The Sana ControlNet's part in loading (docs/model.md §8): the NVlabs key map and ``load_controlnet``. The variant
is read off the weights as for the transformer."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from .. import speed
from ..controlnet import SanaControlNet
from ..errors import SanaError
from ..layers import Operations
from .families import Family, key_summary
from .files import read_json
from .steps import Component, build, parse_dtype, read_checkpoint
from .tensors import dominant_dtype
from .transformer import detect_config, original_to_diffusers

log = logging.getLogger("sana")


def nvlabs_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs ControlNet names → diffusers' (docs/model.md §7): the embedders as the transformer's,
    ``controlnet.0.before_proj`` → ``input_block``, ``controlnet.k.copied_block`` → ``transformer_blocks.k``,
    ``controlnet.k.after_proj`` → ``controlnet_blocks.k``. The main model's own blocks and head are left out."""
    base, out = {}, {}
    for k, v in sd.items():
        m = re.match(r"controlnet\.(\d+)\.(before_proj|after_proj|copied_block)\.(.+)", k)
        if m is None:
            if not k.startswith(("blocks.", "final_layer.")):
                base[k] = v
            continue
        i, part, rest = m.groups()
        if part == "before_proj":
            out[f"input_block.{rest}"] = v
        elif part == "after_proj":
            out[f"controlnet_blocks.{i}.{rest}"] = v
        else:
            base[f"blocks.{i}.{rest}"] = v  # converted with the transformer's map below
    return {**original_to_diffusers(base), **out}


def _wrong_family(source: str, sd: dict, family: Family) -> SanaError:
    return SanaError(f"{source}: not a Sana ControlNet: this is {family.describe()}. Found {key_summary(sd)}; "
                     "expected Sana ControlNet keys such as 'input_block.weight' and 'controlnet_blocks.0.weight' "
                     "(diffusers) or 'controlnet.0.before_proj.weight' (NVlabs)")


CONTROLNET = Component(
    name="Sana ControlNet", folder="controlnet", stems=("diffusion_pytorch_model",),
    prefixes=("controlnet_model.", "model.", "module.", "net."),
    layouts={Family.SANA_CONTROLNET: None, Family.SANA_CONTROLNET_NVLABS: nvlabs_to_diffusers},
    wrong_family=_wrong_family)


def load_controlnet(path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu",
                    *, config: dict | None = None, operations=None) -> SanaControlNet:
    """Load a Sana ControlNet: a diffusers folder (config.json), a single safetensors file, or an NVlabs ``.pth``.
    The variant is read off the weights (hidden size, number of blocks) as for the transformer. ``operations``: the
    layer classes (``layers.py``; None: the reference)."""
    dtype = parse_dtype(dtype)
    ckpt = read_checkpoint(CONTROLNET, path)
    file_config = read_json(ckpt.where.config) if ckpt.where.config else None
    cfg = detect_config(ckpt.state_dict, config or file_config, ckpt.source)
    dtype = dtype or dominant_dtype(ckpt.state_dict)
    model, _ = build(lambda: SanaControlNet(cfg, dtype=dtype, operations=operations or Operations), ckpt, dtype,
                     device)
    model.source = ckpt.source
    log.info("Sana ControlNet: hidden %d · %d blocks · %s · %s", cfg.dim, cfg.num_layers,
             str(dtype).removeprefix("torch."), ckpt.source)
    return speed.apply(model)
