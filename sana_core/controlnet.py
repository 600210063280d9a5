"""Sana ControlNet (docs/model.md §8), as diffusers' SanaControlNetModel: its own embedders and a few Sana blocks
read the noisy latent plus the encoded control image; after each block a linear projection gives one sample, which
the transformer adds after its block k + 1 (``SanaTransformer.forward``'s ``control``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import speed
from .errors import SanaError
from .layers import Operations
from .loader import DTYPES, detect_config, original_to_diffusers
from .loading import Family, key_summary, locate, read_json, sniff
from .transformer import SanaTransformer, SanaTrunk, caption_bias
from .weights import dominant_dtype, load_into, read_weights, strip_prefix

log = logging.getLogger("sana")
_STEMS = ("diffusion_pytorch_model",)
_PREFIXES = ("controlnet_model.", "model.", "module.", "net.")


class SanaControlNet(SanaTrunk):
    """Embedders and ``cfg.num_layers`` Sana blocks; ``input_block`` adds the control image's patch tokens,
    ``controlnet_blocks.k`` projects block k's output into sample k."""

    def __init__(self, cfg, device=None, dtype=None, operations=Operations):
        super().__init__(cfg, device, dtype, operations)
        d = cfg.dim
        self.input_block = operations.Linear(d, d, device=device, dtype=dtype)
        self.controlnet_blocks = nn.ModuleList(operations.Linear(d, d, device=device, dtype=dtype)
                                               for _ in range(cfg.num_layers))

    @property
    def dtype(self) -> torch.dtype:
        return self.input_block.weight.dtype

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, control: torch.Tensor,
                context_mask: torch.Tensor | None = None, scale: float = 1.0) -> list[torch.Tensor]:
        """x (B, C, H, W): the transformer's input; control (B, C, H, W): the control image's scaled latent;
        timestep, context, context_mask as the transformer's. → one sample (B, N, D) per block, times ``scale``."""
        p = self.cfg.patch_size
        hw = (x.shape[2] // p, x.shape[3] // p)
        bias = caption_bias(context_mask, x.dtype)
        h = self.tokens(x)
        h = h + self.input_block(self.tokens(control.to(h.dtype)))
        t, _ = self.time_embed(timestep, None, h.dtype)
        y = self.caption_features(context)
        samples = []
        for block, project in zip(self.transformer_blocks, self.controlnet_blocks):
            h = block(h, y, bias, t, hw)
            samples.append(project(h) * scale)
        return samples


@dataclass(frozen=True)
class Control:
    """A ControlNet with its control image's scaled latent (1 or B, C, h, w) and scale, for ``guided_model_fn``."""
    net: SanaControlNet
    latent: torch.Tensor
    scale: float = 1.0

    def samples(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The samples for a model call on ``x`` (N, C, h, w): the control latent repeated to N, in the ControlNet's
        dtype; the samples back in ``x``'s dtype."""
        dt = self.net.dtype
        hint = self.latent.to(x.device, dt)
        hint = hint.repeat(-(-x.shape[0] // hint.shape[0]), 1, 1, 1)[:x.shape[0]]
        out = self.net(x.to(dt), t, context.to(dt), hint, context_mask, self.scale)
        return [s.to(x.dtype) for s in out]


def check_pair(controlnet: SanaControlNet, transformer: SanaTransformer, source: str = "the ControlNet") -> None:
    """A ControlNet's samples are added to the transformer's tokens: their widths and depths must fit."""
    a, b = controlnet.cfg, transformer.cfg
    if a.dim != b.dim or a.caption_channels != b.caption_channels:
        raise SanaError(f"{source} has hidden size {a.dim} (caption width {a.caption_channels}); the Sana model it "
                        f"controls has {b.dim} ({b.caption_channels}): use a ControlNet made for this model size")
    if a.num_layers >= b.num_layers:
        raise SanaError(f"{source} has {a.num_layers} blocks; the model has {b.num_layers}, too few to take them")


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


def load_controlnet(path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu",
                    *, config: dict | None = None, operations=None) -> SanaControlNet:
    """Load a Sana ControlNet: a diffusers folder (config.json), a single safetensors file, or an NVlabs ``.pth``.
    The variant is read off the weights (hidden size, number of blocks) as for the transformer. ``operations``: the
    layer classes (``layers.py``; None: the reference)."""
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    where = locate(path, "controlnet")
    file_config = read_json(where.config) if where.config else None
    weights = where.weights(_STEMS, "Sana ControlNet")
    source = str(weights)
    sd = strip_prefix(read_weights(weights), _PREFIXES)
    family = sniff(sd)
    if family is Family.SANA_CONTROLNET_NVLABS:
        sd = nvlabs_to_diffusers(sd)
        sd.pop("pos_embed", None)
    elif family is not Family.SANA_CONTROLNET:
        raise SanaError(f"{source}: not a Sana ControlNet: this is {family.describe()}. Found {key_summary(sd)}; "
                        "expected Sana ControlNet keys such as 'input_block.weight' and 'controlnet_blocks.0.weight' "
                        "(diffusers) or 'controlnet.0.before_proj.weight' (NVlabs)")
    cfg = detect_config(sd, config or file_config, source)
    dtype = dtype or dominant_dtype(sd)
    with torch.device("meta"):
        model = SanaControlNet(cfg, dtype=dtype, operations=operations or Operations)
    load_into(model, sd, dtype, source)
    model = speed.apply(model.to(device).eval().requires_grad_(False))
    model.source = source
    log.info("Sana ControlNet: hidden %d · %d blocks · %s · %s", cfg.dim, cfg.num_layers,
             str(dtype).removeprefix("torch."), source)
    return model
