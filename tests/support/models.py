"""Tiny random Sana transformers, built with diffusers (the reference) and saved in the published layouts."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY = dict(num_attention_heads=2, attention_head_dim=8, num_layers=3, num_cross_attention_heads=2,
            cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=64, sample_size=8,
            in_channels=32, out_channels=32)


# The transformer variants the tests build, as diffusers SanaTransformer2DModel arguments over TINY.
VARIANTS = {
    "base": {},
    "qk_norm": dict(qk_norm="rms_norm_across_heads"),
    "guidance": dict(qk_norm="rms_norm_across_heads", guidance_embeds=True),
    "pos_embed": dict(interpolation_scale=1.0),
}


def transformer_inputs(batch=2, h=6, w=10, seed=1, length=12):
    """(x, caption, caption mask, timesteps) for a TINY transformer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 32, h, w, generator=g)
    y = torch.randn(batch, length, TINY["caption_channels"], generator=g)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, 5:] = 0  # padded caption for sample 0; sample 1 keeps its own (full) mask
    t = torch.tensor([999.0, 417.0])[:batch]
    return x, y, mask, t


def count_params(cfg) -> int:
    """Parameters of a sana_core transformer config, counted on the meta device."""
    from sana_comfy.sana_core.transformer import SanaTransformer

    with torch.device("meta"):
        return sum(p.numel() for p in SanaTransformer(cfg).parameters())


def resident_bytes(module: torch.nn.Module) -> int:
    """Bytes the module holds in parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def perturb(module: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Random weights give washed-out outputs; noise on every parameter gives a real dynamic range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def tiny_diffusers_transformer(seed: int = 0, **overrides):
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(seed)
    cfg = {**TINY, **overrides}
    return perturb(SanaTransformer2DModel(**cfg).eval(), seed)


def diffusers_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the NVlabs → diffusers map, written independently from docs/model.md §7.2 (fuses q/k/v, k/v)."""
    sprint = any(k.startswith("time_embed.guidance_embedder") for k in sd)
    t = "time_embed.timestep_embedder" if sprint else "time_embed.emb.timestep_embedder"
    top = {f"{t}.linear_1.": "t_embedder.mlp.0.", f"{t}.linear_2.": "t_embedder.mlp.2.",
           "time_embed.guidance_embedder.linear_1.": "cfg_embedder.mlp.0.",
           "time_embed.guidance_embedder.linear_2.": "cfg_embedder.mlp.2.",
           "patch_embed.proj.": "x_embedder.proj.", "time_embed.linear.": "t_block.1.",
           "caption_projection.linear_1.": "y_embedder.y_proj.fc1.",
           "caption_projection.linear_2.": "y_embedder.y_proj.fc2.", "caption_norm.": "attention_y_norm.",
           "proj_out.": "final_layer.linear.", "scale_shift_table": "final_layer.scale_shift_table"}
    blk = {"attn1.to_out.0.": "attn.proj.", "attn1.norm_q.": "attn.q_norm.", "attn1.norm_k.": "attn.k_norm.",
           "attn2.to_q.": "cross_attn.q_linear.", "attn2.to_out.0.": "cross_attn.proj.",
           "attn2.norm_q.": "cross_attn.q_norm.", "attn2.norm_k.": "cross_attn.k_norm.",
           "ff.conv_inverted.": "mlp.inverted_conv.conv.", "ff.conv_depth.": "mlp.depth_conv.conv.",
           "ff.conv_point.": "mlp.point_conv.conv.", "scale_shift_table": "scale_shift_table"}
    out = {}
    for k, v in sd.items():
        m = re.match(r"transformer_blocks\.(\d+)\.(.+)", k)
        if m:
            i, rest = m.groups()
            if rest in ("attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"):
                if rest.endswith("to_q.weight"):
                    out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
                        [sd[f"transformer_blocks.{i}.attn1.to_{c}.weight"] for c in "qkv"])
                continue
            if rest.startswith(("attn2.to_k.", "attn2.to_v.")):
                if rest.startswith("attn2.to_k."):
                    s = rest.rsplit(".", 1)[1]
                    out[f"blocks.{i}.cross_attn.kv_linear.{s}"] = torch.cat(
                        [sd[f"transformer_blocks.{i}.attn2.to_k.{s}"], sd[f"transformer_blocks.{i}.attn2.to_v.{s}"]])
                continue
            a = next(a for a in blk if rest.startswith(a))
            out[f"blocks.{i}.{blk[a]}{rest[len(a):]}"] = v
            continue
        a = next(a for a in top if k.startswith(a))
        out[top[a] + k[len(a):]] = v
    return out


def save_layouts(model, root: Path) -> dict[str, Path]:
    """Save one diffusers model in every transformer layout we load."""
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root / "folder")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, root / "single_diffusers.safetensors")
    orig = diffusers_to_original(sd)
    orig["y_embedder.y_embedding"] = torch.zeros(300, model.config.caption_channels)
    orig["pos_embed"] = torch.zeros(1, model.config.sample_size ** 2, model.config.num_attention_heads
                                    * model.config.attention_head_dim)
    save_file({k: v.contiguous() for k, v in orig.items()}, root / "single_original.safetensors")
    torch.save({"state_dict": orig}, root / "original.pth")
    return {"folder": root / "folder", "single_diffusers": root / "single_diffusers.safetensors",
            "single_original": root / "single_original.safetensors", "pth": root / "original.pth"}
