"""A tiny SANA-Video pipeline saved by diffusers in its published repo layout (transformer, tiny Gemma-2, a tiny Wan
2.1 VAE in diffusers' names, the flow scheduler), and the same VAE in Wan's own names as ComfyUI's Load VAE reads
``wan_2.1_vae.safetensors``."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from .models import perturb
from .text import TINY_GEMMA_HIDDEN, build_tiny_gemma, build_tokenizer

# sample_size 30: the 480p bin table, as the published 480p model
TINY_VIDEO_TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12,
                              num_layers=3, num_cross_attention_heads=2, cross_attention_head_dim=12,
                              cross_attention_dim=24, caption_channels=TINY_GEMMA_HIDDEN, sample_size=30)
# Wan 2.1's structure (4 stages, 2 residual blocks, temporal downsampling in the last two) with 8 base channels
TINY_WAN_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                    temperal_downsample=[False, True, True])
VIDEO_REPO = "SANA-Video_2B_480p_diffusers"  # the names the video example workflows load
WAN_VAE_FILE = "wan_2.1_vae.safetensors"


def tiny_wan_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return perturb(AutoencoderKLWan(**TINY_WAN_VAE).eval(), seed, std=0.05)


def build_tiny_video_repo(root: Path, seed: int = 0) -> Path:
    """Save a tiny SanaVideoPipeline at ``root``/repo (scheduler: flow DPM-Solver++ with the published shift 8)."""
    from diffusers import DPMSolverMultistepScheduler, SanaVideoPipeline, SanaVideoTransformer3DModel
    from transformers import Gemma2Model, GemmaTokenizerFast

    root = Path(root)
    tiny_text = build_tiny_gemma(root / "gemma", build_tokenizer(root / "tok"), seed=seed)
    torch.manual_seed(seed)
    transformer = perturb(SanaVideoTransformer3DModel(**TINY_VIDEO_TRANSFORMER).eval(), seed, std=0.05)
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=8.0,
                                            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                            lower_order_final=True, final_sigmas_type="zero")
    pipe = SanaVideoPipeline(tokenizer=GemmaTokenizerFast.from_pretrained(tiny_text.sana_repo / "tokenizer"),
                             text_encoder=Gemma2Model.from_pretrained(tiny_text.sana_repo / "text_encoder"),
                             vae=tiny_wan_vae(seed + 1), transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(root / "repo")
    return root / "repo"


def install_video_folders(repo: Path, models: Path) -> None:
    """The whole repo in diffusers/ and diffusion_models/, and its VAE in Wan's names as vae/wan_2.1_vae."""
    import importlib

    from .inprocess import register_package

    register_package()
    read_wan_vae = importlib.import_module("sana_comfy.sana_core.load.wan_vae").read_wan_vae

    for sub in ("diffusers", "diffusion_models"):
        dst = models / sub / VIDEO_REPO
        if not dst.exists():
            shutil.copytree(repo, dst)
    (models / "vae").mkdir(parents=True, exist_ok=True)
    if not (models / "vae" / WAN_VAE_FILE).exists():
        save_file({k: v.contiguous() for k, v in read_wan_vae(repo).items()}, models / "vae" / WAN_VAE_FILE)
