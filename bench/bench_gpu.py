"""Benchmark for a GPU machine: the whole text-to-image, ours against diffusers' SanaPipeline, same weights, one run.

Random weights of the published configs (Sana 0.6B at 1024 px, DC-AE f32c32, Gemma-2-2B with a small stand-in
vocabulary), bf16 on the GPU, 1024×1024, 20 steps of Flow-DPM-Solver, CFG 4.5, one prompt with the complex human
instruction. Both pipelines share the same Gemma module and get copies of the same transformer and DC-AE weights;
each is warmed up, then they alternate and the best time of each is kept. Prints the card's name, both times and
the ratio (issue 6: ours < 0.4 s on an H100 and ≤ 0.7× diffusers).
Run: .sana-env/venv/bin/python bench/bench_gpu.py [--repeats 5] [--size 1024] [--steps 20]
     CPU smoke test of the script itself: --device cpu --dtype fp32 --size 256 --steps 2 --text-layers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _package  # noqa: F401  (registers sana_comfy; puts tests/ on the path)
import torch
from fixtures_text import build_tokenizer
from sana_comfy.sana_core import pipeline
from sana_comfy.sana_core.dcae import DCAE, DCAEConfig
from sana_comfy.sana_core.text_encoder import SanaTextEncoder
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer
from sana_comfy.sana_core.weights import load_into

PROMPT = "a cyberpunk cat with a neon sign that says 'Sana', highly detailed, 8k"
DT = {"bf16": torch.bfloat16, "fp32": torch.float32}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=list(DT))
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--text-layers", type=int, default=26, help="Gemma-2 layers (26 in the published 2B)")
    args = ap.parse_args()
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

    dev, dt = args.device, DT[args.dtype]
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "CPU"
    print(f"device: {name}, torch {torch.__version__}, {args.dtype}", flush=True)
    torch.manual_seed(0)
    ref_tr = SanaTransformer2DModel(num_attention_heads=36, attention_head_dim=32, num_layers=28,
                                    num_cross_attention_heads=16, cross_attention_head_dim=72,
                                    cross_attention_dim=1152, sample_size=32).eval().requires_grad_(False)
    ref_vae = AutoencoderDC(encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                            decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                            encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                            decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                            encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3,) * 6,
                            encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                            decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), upsample_block_type="interpolate",
                            downsample_block_type="Conv", decoder_norm_types="rms_norm", decoder_act_fns="silu",
                            scaling_factor=0.41407).eval().requires_grad_(False)
    with torch.device("meta"):
        net, vae = SanaTransformer(PRESETS["Sana_600M_1024px"], dtype=dt), DCAE(DCAEConfig())
    load_into(net, dict(ref_tr.state_dict()), dt, "bench")
    load_into(vae, dict(ref_vae.state_dict()), dt, "bench")
    net, vae = net.eval().requires_grad_(False).to(dev), vae.eval().requires_grad_(False).to(dev)
    ref_tr, ref_vae = ref_tr.to(dev, dt), ref_vae.to(dev, dt)
    with tempfile.TemporaryDirectory() as tmp:
        tok = GemmaTokenizerFast.from_pretrained(build_tokenizer(Path(tmp) / "tok"))
    gemma = Gemma2Model(Gemma2Config(
        vocab_size=len(tok), hidden_size=2304, intermediate_size=9216, num_hidden_layers=args.text_layers,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6)).eval().requires_grad_(False).to(dev, dt)
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0,
                                            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                            lower_order_final=True, final_sigmas_type="zero")
    ref = SanaPipeline(tokenizer=tok, text_encoder=gemma, vae=ref_vae, transformer=ref_tr, scheduler=scheduler)
    ref.set_progress_bar_config(disable=True)
    enc = SanaTextEncoder(gemma, tok, "random Gemma-2-2B")
    opts = pipeline.SampleOptions(steps=args.steps, cfg=4.5)

    def ours():
        return pipeline.text_to_image(net, enc, vae, PROMPT, height=args.size, width=args.size, seed=0, opts=opts)

    def theirs():
        return ref(prompt=PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps,
                   guidance_scale=4.5, generator=torch.Generator(dev).manual_seed(0), output_type="pt").images

    best = {"ours": float("inf"), "diffusers": float("inf")}
    with torch.inference_mode():
        a, b = ours(), theirs()  # warm-up (kernels, allocator), and a sanity check that both made the same image
        diff = (a.float().cpu() - b.float().cpu().permute(0, 2, 3, 1)).abs().max().item() * 255
        for _ in range(args.repeats):
            for k, fn in (("ours", ours), ("diffusers", theirs)):
                sync(dev)
                t0 = time.perf_counter()
                fn()
                sync(dev)
                best[k] = min(best[k], time.perf_counter() - t0)
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB" if dev.startswith("cuda") else ""
    print(f"text-to-image {args.size}px, {args.steps} steps, CFG, 0.6B, {args.dtype} on {name}: ours "
          f"{best['ours']:.3f} s, diffusers {best['diffusers']:.3f} s, ratio {best['ours'] / best['diffusers']:.2f}"
          f"{peak}; max pixel difference between the two images {diff:.1f}/255", flush=True)


if __name__ == "__main__":
    main()
