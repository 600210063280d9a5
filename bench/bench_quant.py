"""Benchmark: 8-bit weight storage (int8; fp8 for the transformer) on the published configs — resident bytes and how
far the image moves.

Random weights of the published configs (common.build_models: Sana 0.6B, DC-AE f32c32, Gemma-2-2B), rounded to
bf16 first, as the published checkpoints are stored. The reference is those bf16 weights computed in fp32 (this CPU
has no native bf16 math, so the reference isolates what int8 storage changes). The int8 run quantizes both the
transformer and the text encoder (per-row scales, dequantized per layer in fp32), samples the same seed with CFG,
and decodes with the same DC-AE. The fp8 runs (``fp8_e4m3fn``, ``fp8_e5m2``, per-row scales) store the transformer
only, as the transformer loader offers them. Prints resident bytes (8-bit / bf16), the text embeddings' relative
error, the latent's, and the decoded image's PSNR against the reference.
Run: .sana-env/venv/bin/python bench/bench_quant.py [--steps 20] [--size 512]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from common import NEG, PROMPT, build_models, rel
from sana_comfy.sana_core import guidance, pipeline, sampling
from sana_comfy.sana_core import text_encoder as te_mod
from sana_comfy.sana_core.quant import quantize
from support.models import resident_bytes


def round_to_bf16_(m: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.bfloat16().float())


def bf16_bytes(m: torch.nn.Module) -> int:
    return sum(p.numel() * 2 for p in m.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net, vae, enc = build_models(Path(tmp), args.size)
    round_to_bf16_(net)
    round_to_bf16_(enc.model)
    sizes = {"transformer": bf16_bytes(net), "text encoder": bf16_bytes(enc.model)}

    def embed():
        with torch.no_grad():
            return (enc.encode([PROMPT], chi=te_mod.DEFAULT_CHI, max_length=300),
                    enc.encode([NEG], chi=None, max_length=300))

    def image(model, text):
        (pe, pm), (ne, nm) = text
        opts = pipeline.SampleOptions(steps=args.steps, cfg=4.5)
        bh, bw = pipeline.binned_size(args.size, args.size, model, True)
        lat = torch.zeros(1, 32, bh // 32, bw // 32)
        noise = sampling.noise_for_seed(0, tuple(lat.shape), None)
        with torch.no_grad():
            raw = pipeline.denoise(model, guidance.TextCond(pe, pm), guidance.TextCond(ne, nm), lat, 0, opts,
                                   noise=noise)
            return raw, pipeline.decode_images(vae, raw, None, "auto")

    text_ref = embed()
    quantize(enc.model, torch.float32, "int8")
    text_q = embed()
    net_q = quantize(copy.deepcopy(net), torch.float32, "int8")
    res_q = {"transformer": resident_bytes(net_q), "text encoder": resident_bytes(enc.model)}
    for k in sizes:
        print(f"{k:12s}: int8 resident {res_q[k] / 2**30:5.2f} GiB, bf16 {sizes[k] / 2**30:5.2f} GiB, "
              f"ratio {res_q[k] / sizes[k]:.3f}", flush=True)
    print(f"text embeddings, int8 vs bf16 weights: relative error prompt {rel(text_q[0][0], text_ref[0][0]):.2e}, "
          f"negative {rel(text_q[1][0], text_ref[1][0]):.2e}", flush=True)
    raw_ref, img_ref = image(net, text_ref)

    def report(what: str, raw_q, img_q) -> None:
        mse = torch.mean((img_q - img_ref) ** 2).item()
        psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-20))).item()
        print(f"{args.size}px, {args.steps} steps, CFG 4.5, seed 0, {what}: latent relative error "
              f"{rel(raw_q, raw_ref):.2e}; image PSNR vs bf16 weights {psnr:.1f} dB (max pixel difference "
              f"{(img_q - img_ref).abs().max().item() * 255:.1f}/255)", flush=True)

    report("int8 transformer and text encoder", *image(net_q, text_q))
    del net_q
    for storage in ("fp8_e4m3fn", "fp8_e5m2"):
        net_f = quantize(copy.deepcopy(net), torch.float32, storage)
        print(f"transformer : {storage} resident {resident_bytes(net_f) / 2**30:5.2f} GiB, ratio to bf16 "
              f"{resident_bytes(net_f) / sizes['transformer']:.3f}", flush=True)
        report(f"{storage} transformer", *image(net_f, text_ref))
        del net_f


if __name__ == "__main__":
    main()
