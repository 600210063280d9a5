"""A whole tiny Sana pipeline saved by diffusers in its published repo layout, plus the per-component folders the
ComfyUI model folders hold. Shared by the end-to-end tests, the real-host tests and scripts/run_example.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .models import TINY, perturb
from .text import TINY_GEMMA_HIDDEN, build_tiny_gemma, build_tokenizer

# A 6-stage DC-AE: the real 32× compression with tiny widths, so latents are [B, 32, H/32, W/32] as in production.
TINY_DCAE32 = dict(in_channels=3, latent_channels=32, attention_head_dim=8,
                   encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                   decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                   encoder_block_out_channels=(8, 8, 16, 16, 32, 32), decoder_block_out_channels=(8, 8, 16, 16, 32, 32),
                   encoder_layers_per_block=(1, 1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
                   encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                   decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), upsample_block_type="interpolate",
                   downsample_block_type="Conv", decoder_norm_types="rms_norm", decoder_act_fns="silu",
                   scaling_factor=0.41407)
TINY_TRANSFORMER = {**TINY, "caption_channels": TINY_GEMMA_HIDDEN, "sample_size": 32, "num_layers": 10}
# 2 blocks wide enough (layers of at least 4096 weights) that 8-bit storage takes the attention and FFN layers
WIDE_TRANSFORMER = {**TINY_TRANSFORMER, "num_layers": 2, "num_attention_heads": 4, "attention_head_dim": 32,
                    "num_cross_attention_heads": 4, "cross_attention_head_dim": 32, "cross_attention_dim": 128}


def build_tiny_repo(root: Path, seed: int = 0, sprint: bool = False) -> Path:
    """Save a tiny SanaPipeline (1024 px training size, so the 1024 bin table applies) at ``root``/repo; with
    ``sprint``, a SanaSprintPipeline (qk-norm + guidance embedding, SCM scheduler)."""
    import diffusers
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaTransformer2DModel
    from transformers import Gemma2Model, GemmaTokenizerFast

    root = Path(root)
    tiny_text = build_tiny_gemma(root / "gemma", build_tokenizer(root / "tok"), seed=seed)
    torch.manual_seed(seed)
    extra = dict(qk_norm="rms_norm_across_heads", guidance_embeds=True) if sprint else {}
    transformer = perturb(SanaTransformer2DModel(**TINY_TRANSFORMER, **extra).eval(), seed)
    vae = perturb(AutoencoderDC(**TINY_DCAE32).eval(), seed + 1, std=0.05)
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0,
                                            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                            lower_order_final=True, final_sigmas_type="zero")
    if sprint:
        scheduler = diffusers.SCMScheduler(prediction_type="trigflow", sigma_data=0.5)
    pipeline_class = getattr(diffusers, "SanaSprintPipeline" if sprint else "SanaPipeline")
    pipe = pipeline_class(tokenizer=GemmaTokenizerFast.from_pretrained(tiny_text.sana_repo / "tokenizer"),
                          text_encoder=Gemma2Model.from_pretrained(tiny_text.sana_repo / "text_encoder"),
                          vae=vae, transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(root / "repo")
    shutil.copytree(tiny_text.gemma_dir, root / "gemma-plain")
    return root / "repo"


def wide_transformer(seed: int = 7):
    """A diffusers SanaTransformer2DModel of WIDE_TRANSFORMER's config, its random weights perturbed with ``seed``."""
    from diffusers import SanaTransformer2DModel

    return perturb(SanaTransformer2DModel(**WIDE_TRANSFORMER).eval(), seed)


def install_model_folders(repo: Path, models: Path, name: str = "Sana_600M_1024px_diffusers",
                          gemma: str = "gemma-2-2b-it", dcae: str = "dc-ae-f32c32-sana-1.1-diffusers",
                          video: Path | None = None) -> None:
    """Lay the tiny repo out as a ComfyUI user would: the whole repo in diffusers/ and diffusion_models/, a plain
    gemma folder in text_encoders/, the vae folder in vae/ — under the names the example workflows use; ``video``, a
    tiny SANA-Video repo, as the video examples load it (``video.install_video_folders``)."""
    for sub, src in (("diffusers", repo), ("diffusion_models", repo), ("text_encoders", repo.parent / "gemma-plain"),
                     ("vae", repo / "vae")):
        dst = models / sub / {"diffusers": name, "diffusion_models": name, "text_encoders": gemma, "vae": dcae}[sub]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copytree(src, dst)
    install_example_loras(repo, models / "loras")
    install_example_controlnet(repo, models / "controlnet")
    if video is not None:
        from .video import install_video_folders

        install_video_folders(video, models)


EXAMPLE_LORAS = ("sana_lora_style.safetensors", "sana_lora_detail.safetensors")  # the LoRA example's file names


def install_example_loras(repo: Path, folder: Path) -> None:
    """Two tiny random LoRAs for the repo's transformer (PEFT layout, alpha in the metadata), under the names the
    LoRA example workflow loads."""
    from diffusers import SanaTransformer2DModel

    from .lora import peft_lora, save_layout

    folder.mkdir(parents=True, exist_ok=True)
    if all((folder / n).exists() for n in EXAMPLE_LORAS):
        return
    net = SanaTransformer2DModel.from_pretrained(repo / "transformer")
    for seed, name in enumerate(EXAMPLE_LORAS):
        save_layout(peft_lora(net, rank=4, seed=20 + seed), folder / name, "peft", alpha=8.0)


EXAMPLE_CONTROLNET = "Sana_600M_1024px_ControlNet_HED_diffusers"  # the ControlNet example's folder name


def install_example_controlnet(repo: Path, folder: Path) -> None:
    """A tiny random 2-block ControlNet for the repo's transformer (diffusers folder), under the name the ControlNet
    example workflow loads."""
    from diffusers import SanaTransformer2DModel

    from .controlnet import tiny_controlnet

    if (folder / EXAMPLE_CONTROLNET / "config.json").exists():
        return
    net = SanaTransformer2DModel.from_pretrained(repo / "transformer")
    tiny_controlnet(net, num_layers=2, seed=30).save_pretrained(folder / EXAMPLE_CONTROLNET)
