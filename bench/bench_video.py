"""Benchmark: SANA-Video on the CPU, in one run.

1. One denoising step of the SANA-Video 2B transformer (the published config: diffusers' SanaVideoTransformer3DModel
   defaults, 20 layers of 20 heads × 112) with random weights at a trained-like scale: our SanaVideoTransformer, as
   the loader returns it, against diffusers' on the same weights (ours is filled with diffusers' own tensors, so the
   two share their storage and fit at once), fp32 then bf16, one dtype's pair built and freed at a time. A round
   calls each once (in the other order every other round); the table gives the median of ``--repeats`` rounds after
   one warm-up each, and the best (the least disturbed by other work on the cores), their ratios diffusers / ours and
   the outputs' largest absolute difference.
2. ComfyUI's own Wan 2.1 VAE (its published size, random weights) decoding a 16-channel latent through the host:
   ComfyUI's VAEDecodeTiled node against the untiled ``VAE.decode``, under ``torch.inference_mode`` as ComfyUI runs
   nodes; one call each, its time and its peak resident-set growth (VmHWM reset to the resident set just before the
   call, freed heap memory returned to the system first; the growth is VmHWM after the call minus that resident set).
   The random VAE decodes to flat grey: this part measures time and memory, not pixels.

The header names the CPU, the torch threads and the load average; each part ends with a markdown table.
Run: .sana-env/venv/bin/python bench/bench_video.py [--layers 20] [--latent 3x16x28] [--dtypes fp32 bf16]
     [--repeats 5] [--pixels 9x240x416] [--tile 256] [--skip-transformer] [--skip-vae]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time

import torch
from common import GiB, alternate, comfy_in_process, hwm, machine, markdown_table, ratio, reset_peak, trained_like_
from sana_comfy.sana_core import speed
from sana_comfy.sana_core.load.tensors import load_into
from sana_comfy.sana_core.load.video_transformer import _from_config
from sana_comfy.sana_core.video_transformer import SanaVideoTransformer

DT = {"fp32": torch.float32, "bf16": torch.bfloat16}
CAPTION_TOKENS = 300  # the caption's padded length
PROMPT_TOKENS = 80  # of them, the prompt's own (the mask's ones)
# ComfyUI's Wan 2.1 VAE at its published size (comfy/sd.py builds it so from such a state dict)
WAN21 = dict(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], dropout=0.0)


def triple(text: str) -> tuple[int, int, int]:
    """'3x16x28' → (3, 16, 28)."""
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected frames x height x width, e.g. 3x16x28; got {text!r}")
    return parts


def free() -> None:
    """Collect garbage and return freed heap memory to the system (so the next dtype's pair starts clean)."""
    gc.collect()
    reset_peak(trim=True)


# ---------------------------------------------------------------------------------------------------------------
# 1. The transformer step


def video_pair(layers: int, dtype: torch.dtype):
    """diffusers' SanaVideoTransformer3DModel of the 2B config (``layers`` deep) with trained-like random weights,
    and ours holding the same tensors. Both are built on the meta device, so no weights are made twice."""
    from diffusers import SanaVideoTransformer3DModel
    from diffusers.models.transformers.transformer_sana_video import WanRotaryPosEmbed
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # .to(dtype) warns that no module is kept in fp32 (none is)
    with torch.device("meta"):
        ref = SanaVideoTransformer3DModel(num_layers=layers).to(dtype)
    ref.to_empty(device="cpu")
    torch.manual_seed(0)
    trained_like_(ref)
    c = ref.config  # to_empty left the rotary tables (buffers, not weights) empty: built again, cast as .to() would
    ref.rope = WanRotaryPosEmbed(c.attention_head_dim, c.patch_size, c.rope_max_seq_len).to(dtype)
    cfg = _from_config({"num_layers": layers}, "bench")
    with torch.device("meta"):
        ours = SanaVideoTransformer(cfg, dtype=dtype)
    load_into(ours, dict(ref.state_dict()), dtype, "bench")
    return cfg, ref.eval().requires_grad_(False), speed.apply(ours.eval().requires_grad_(False))


def step_inputs(latent: tuple[int, int, int], dtype: torch.dtype):
    """One step at batch 1: x (1, 16, F, H, W), t (1,), caption (1, 300, 2304) and its mask, 80 tokens long."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, *latent, generator=g, dtype=dtype)
    y = torch.randn(1, CAPTION_TOKENS, 2304, generator=g, dtype=dtype)
    mask = torch.zeros(1, CAPTION_TOKENS, dtype=torch.int64)
    mask[:, :PROMPT_TOKENS] = 1
    return x, torch.tensor([700.0]), y, mask


def bench_step(layers: int, latent: tuple[int, int, int], dtype: str, repeats: int) -> tuple:
    t0 = time.perf_counter()
    cfg, ref, ours = video_pair(layers, DT[dtype])
    weights = sum(p.numel() * p.element_size() for p in ours.parameters())
    print(f"  built the {dtype} pair in {time.perf_counter() - t0:.0f} s: {weights / GiB:.2f} GiB of weights, shared",
          flush=True)
    x, t, y, mask = step_inputs(latent, DT[dtype])
    runs = {"diffusers": lambda: ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t,
                                     return_dict=False)[0],
            "ours": lambda: ours(x, t, y, mask)}
    with torch.no_grad():
        res = alternate(runs, repeats, warmups=1, keep=True, swap=True)
    want, got = res.outputs["diffusers"].float(), res.outputs["ours"].float()
    assert got.shape == want.shape == x.shape, (got.shape, want.shape, x.shape)
    med, best = res.median(), res.best()
    cells = ", ".join(f"{k} {med[k]:.2f} s ({min(v):.2f}–{max(v):.2f})" for k, v in res.seconds.items())
    print(f"  step {dtype}: {cells}", flush=True)
    tokens = math.prod(n // p for n, p in zip(latent, cfg.patch_size, strict=True))
    diff = (got - want).abs().max().item()
    return (f"{layers} of 20", "×".join(map(str, latent)), tokens, dtype,
            *(f"{med[k]:.2f} s ({best[k]:.2f})" for k in runs),
            f"{ratio(med['diffusers'], med['ours'])} ({ratio(best['diffusers'], best['ours'])})",
            f"{diff:.1e}" if diff else "0 (bit-identical)", f"{want.abs().max().item():.2f}")


# ---------------------------------------------------------------------------------------------------------------
# 2. The host's Wan 2.1 VAE decode


def wan_vae():
    """ComfyUI's VAE built from a random state dict in its Wan 2.1 layout, as its loaders build one from a file."""
    comfy_in_process()
    import comfy.sd
    from comfy.ldm.wan.vae import WanVAE

    torch.manual_seed(0)
    sd = WanVAE(**WAN21).state_dict()
    return comfy.sd.VAE(sd=sd)


def measured(fn) -> tuple[float, int, object]:
    """(seconds, peak resident-set growth in bytes, output) of one call."""
    base = reset_peak(trim=True)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, hwm() - base, out


def bench_decode(pixels: tuple[int, int, int], tile: int, overlap: int, temporal: int,
                 temporal_overlap: int) -> list[tuple]:
    vae = wan_vae()
    from nodes import VAEDecodeTiled  # ComfyUI's own nodes module, importable once wan_vae() has set ComfyUI up

    frames, h, w = pixels
    z = torch.randn(1, 16, (frames - 1) // 4 + 1, h // 8, w // 8, generator=torch.Generator().manual_seed(2))
    print(f"  Wan 2.1 VAE in {vae.vae_dtype} on {vae.device}; latent {tuple(z.shape)}; VAEDecodeTiled tile {tile} px, "
          f"overlap {overlap} px, {temporal} frames, temporal overlap {temporal_overlap}", flush=True)
    calls = {"tiled (VAEDecodeTiled)": lambda: VAEDecodeTiled().decode(vae, {"samples": z}, tile, overlap, temporal,
                                                                      temporal_overlap)[0],
             "untiled (VAE.decode)": lambda: vae.decode(z)[0]}
    rows = []
    with torch.inference_mode():
        for name, fn in calls.items():
            seconds, grew, out = measured(fn)
            assert out.shape == (frames, h, w, 3), out.shape  # (F, H, W, RGB)
            del out
            print(f"  {name}: {seconds:.1f} s, peak RSS growth {grew / GiB:.2f} GiB", flush=True)
            rows.append((name, f"{frames}×{h}×{w}", f"{seconds:.1f} s", f"{grew / GiB:.2f}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=20, help="transformer layers (the published model has 20)")
    ap.add_argument("--latent", type=triple, default=(3, 16, 28), help="latent frames x height x width")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DT))
    ap.add_argument("--repeats", type=int, default=5, help="rounds; each cell is their median (default 5)")
    ap.add_argument("--pixels", type=triple, default=(9, 240, 416), help="decoded frames x height x width")
    ap.add_argument("--tile", type=int, default=256, help="VAEDecodeTiled tile_size, px")
    ap.add_argument("--overlap", type=int, default=64, help="VAEDecodeTiled overlap, px")
    ap.add_argument("--temporal", type=int, default=64, help="VAEDecodeTiled temporal_size, frames")
    ap.add_argument("--temporal-overlap", type=int, default=8, help="VAEDecodeTiled temporal_overlap, frames")
    ap.add_argument("--skip-transformer", action="store_true")
    ap.add_argument("--skip-vae", action="store_true")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    f, h, w = args.pixels
    if (f - 1) % 4 or h % 8 or w % 8:
        ap.error(f"--pixels {f}x{h}x{w}: the Wan VAE decodes 4k+1 frames of multiples of 8 px")
    start = time.perf_counter()
    print(f"machine: {machine()}", flush=True)
    if not args.skip_transformer:
        print(f"SANA-Video transformer, {args.layers} of its 20 layers, one step at batch 1, caption "
              f"{CAPTION_TOKENS} tokens ({PROMPT_TOKENS} unmasked); median of {args.repeats} rounds after one "
              "warm-up", flush=True)
        rows = []
        for dtype in args.dtypes:
            rows.append(bench_step(args.layers, args.latent, dtype, args.repeats))
            free()
        print(markdown_table(("layers", "latent F×H×W", "tokens", "dtype", "diffusers, median (best)",
                              "ours, median (best)", "diffusers / ours, medians (bests)", "max abs diff",
                              "max abs output"), rows), flush=True)
    if not args.skip_vae:
        print("ComfyUI's Wan 2.1 VAE decode, one call each; peak RSS growth: VmHWM after the call minus the "
              "resident set before it (VmHWM reset, heap trimmed)", flush=True)
        rows = bench_decode(args.pixels, args.tile, args.overlap, args.temporal, args.temporal_overlap)
        print(markdown_table(("decode", "pixels F×H×W", "time", "peak RSS growth GiB"), rows), flush=True)
    print(f"total {time.perf_counter() - start:.0f} s; load average at the end {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
