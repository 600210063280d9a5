"""Benchmark: sana_core with its speed layer off and on against diffusers, on the same random weights of the published
configs, alternating in one process.

Cases: one transformer call of the 0.6B model at batch 2 (as with CFG); a sampling step (the caption's cross-attention
keys and values kept from the previous step, as our sampler runs it), and the same with the caption in a new tensor
each step (as ComfyUI passes it); a DC-AE f32c32 decode and encode. Each is timed three ways on the same weights:
diffusers, ours with the speed layer off (``speed.apply(model, False)``: the reference model files) and ours with it
on; one round calls each once, and the table gives the median of ``--repeats`` rounds, the ratios ours-off/diffusers,
ours-on/diffusers and on/off, and each call's peak RSS (VmHWM reset before each call; freed heap memory is not
returned to the system in between, so no call's time includes faulting it in again). Diffusers and the speed-off
model keep nothing between calls: their sampling step is their call, so the step rows repeat the call's measurements
for them. The header names the CPU, the torch threads, the load average and the matmul roofline.
Run: .sana-env/venv/bin/python bench/bench_core.py [--sizes 512 1024] [--dtypes fp32 bf16] [--repeats 4] [--skip-vae]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from common import DIFFUSERS_DCAE, GiB, alternate, call_inputs, diffusers_kwargs, machine, markdown_table, ratio
from sana_comfy.sana_core import caches, speed
from sana_comfy.sana_core.dcae import DCAE
from sana_comfy.sana_core.dcae_blocks import DCAEConfig
from sana_comfy.sana_core.load.tensors import load_into
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer

DT = {"fp32": torch.float32, "bf16": torch.bfloat16}
SIDES = ("diffusers", "off", "on")  # diffusers, ours with the speed layer off, ours with it on
HEAD = ("case", "size", "dtype", "diffusers", "ours, speed off", "ours, speed on", "off / diffusers",
        "on / diffusers", "on / off", "peak RSS GiB (diffusers / off / on)")


def roofline() -> dict[str, float]:
    """The best large torch.mm throughput per dtype: 2048² and 4096², best of 3 each (a small probe first: some CPUs
    emulate bf16 at a few GFLOP/s, and then 1024² is all it measures)."""
    out = {}
    for name, dt in DT.items():
        a = torch.randn(1024, 1024, dtype=dt)
        t0 = time.perf_counter()
        torch.mm(a, a)
        sizes = (2048, 4096) if time.perf_counter() - t0 < 0.2 else (1024,)
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
            torch.mm(a, b)
            for _ in range(3):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
        out[name] = best
    return out


def transformer_flops(cfg, n_tokens: int, batch: int, text_len: int = 300, kept: bool = False) -> float:
    """Multiply-adds ×2 of one call; ``kept``: without the caption's keys and values (a sampling step keeps them)."""
    d, h = cfg.dim, cfg.mlp_hidden
    per_tok = 2 * (4 * d * d + 2 * d * d + 2 * d * 2 * h + d * h) + 2 * 2 * d * cfg.head_dim  # attn1, attn2 q/out, ff
    cross = (0 if kept else 2 * 2 * d * d * text_len) + 2 * 2 * n_tokens * text_len * d  # k/v, scores and values
    return cfg.num_layers * batch * (per_tok * n_tokens + cross)


def switched(model: torch.nn.Module, on: bool, fn: Callable) -> Callable:
    """``fn`` run with the speed layer switched ``on`` or off on ``model`` first (a class swap per module)."""
    def run():
        speed.apply(model, on)
        return fn()
    return run


def one_off(model: torch.nn.Module, fn: Callable) -> Callable:
    """``fn`` as a call that keeps nothing: the caption keys and values ``model`` keeps across calls (its
    ``captions`` cache) are set aside for it and put back after, so that the sampling-step runs still find theirs."""
    def run():
        held = caches.peek(model, "captions")
        caches.drop(model, "captions")
        try:
            return fn()
        finally:
            caches.drop(model, "captions")
            if held is not None:
                caches.kept(model, "captions", lambda: held)
    return run


def spread(name: str, seconds: dict[str, list[float]], sides: dict[str, str]) -> str:
    """``name``: each side's median and range, e.g. ``diffusers 1.20 s (1.18–1.25)``."""
    cells = [f"{label} {statistics.median(seconds[k]):.2f} s ({min(seconds[k]):.2f}–{max(seconds[k]):.2f})"
             for k, label in sides.items()]
    return f"  {name}: " + ", ".join(cells)


def row(case: str, size: int, dtype: str, med: dict[str, float], peak: dict[str, int]) -> tuple:
    d, off, on = (med[k] for k in SIDES)
    return (case, f"{size} px", dtype, f"{d:.2f} s", f"{off:.2f} s", f"{on:.2f} s", ratio(off, d), ratio(on, d),
            ratio(on, off), " / ".join(f"{peak[k] / GiB:.2f}" for k in SIDES))


def transformer_pair(dtype: torch.dtype):
    """diffusers' SanaTransformer2DModel of the 0.6B (random init) and ours holding a copy of its weights."""
    from diffusers import SanaTransformer2DModel

    cfg = PRESETS["Sana_600M_1024px"]
    torch.manual_seed(0)
    ref = SanaTransformer2DModel(**diffusers_kwargs(cfg)).eval().requires_grad_(False).to(dtype)
    with torch.device("meta"):
        ours = SanaTransformer(cfg, dtype=dtype)
    load_into(ours, dict(ref.state_dict()), dtype, "bench")
    return cfg, ref, ours.eval().requires_grad_(False)


def bench_transformer(size: int, dtype: str, repeats: int, peak: dict[str, float]) -> list[tuple]:
    cfg, ref, ours = transformer_pair(DT[dtype])
    x, t, y, mask = call_inputs(size, DT[dtype])
    runs = {
        "diffusers": lambda: ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t,
                                 return_dict=False),
        "off": switched(ours, False, lambda: ours(x, t, y, mask)),
        "on": switched(ours, True, one_off(ours, lambda: ours(x, t, y, mask))),
        "step": switched(ours, True, lambda: ours(x, t, y, mask)),  # the same caption every step, as our sampler
        "host": switched(ours, True, lambda: ours(x, t, y.clone(), mask)),  # a new caption tensor, as ComfyUI
    }
    with torch.no_grad():  # warm-up: the step keeps the caption's keys and values from its second call on
        res = alternate(runs, repeats, warmups={"diffusers": 1, "off": 1, "on": 1, "step": 2}, peaks=True,
                        trim=False)
    gflops = {k: transformer_flops(cfg, (size // 32) ** 2, 2, kept=k == "step") / 1e9
              for k in ("diffusers", "off", "on", "step")}
    med, pk = res.median(), res.peak()
    roof = ", ".join(f"{k} {g / med[k] / peak[dtype]:.1%}" for k, g in gflops.items())
    print(spread(f"transformer 0.6B {size} px {dtype}", res.seconds,
                 {"diffusers": "diffusers", "off": "off", "on": "on", "step": "step", "host": "host step"}), flush=True)
    print(f"  {gflops['on']:.0f} GFLOP a call, {gflops['step']:.0f} a step; of the matmul roofline: {roof}",
          flush=True)
    step = {**med, "on": med["step"]}, {**pk, "on": pk["step"]}
    host = {**med, "on": med["host"]}, {**pk, "on": pk["host"]}
    return [row("transformer call, batch 2", size, dtype, med, pk),
            row("sampling step (caption keys/values kept)", size, dtype, *step),
            row("sampling step, the caption in a new tensor (ComfyUI)", size, dtype, *host)]


def vae_pair(dtype: torch.dtype):
    """diffusers' AutoencoderDC f32c32 (random init) and our DCAE holding a copy of its weights."""
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    ref = AutoencoderDC(**DIFFUSERS_DCAE).eval().requires_grad_(False).to(dtype)
    with torch.device("meta"):
        ours = DCAE(DCAEConfig())
    load_into(ours, dict(ref.state_dict()), dtype, "bench")
    return ref, ours.eval().requires_grad_(False)


def bench_vae(size: int, dtype: str, repeats: int) -> list[tuple]:
    ref, ours = vae_pair(DT[dtype])
    z = torch.randn(1, 32, size // 32, size // 32, dtype=DT[dtype])
    x = torch.rand(1, 3, size, size, dtype=DT[dtype]) * 2 - 1
    calls = {"decode": (lambda: ref.decode(z), lambda: ours.decode(z, tiling="off")),
             "encode": (lambda: ref.encode(x), lambda: ours.encode(x, tiling="off"))}
    rows = []
    for what, (theirs, mine) in calls.items():
        runs = {"diffusers": theirs, "off": switched(ours, False, mine), "on": switched(ours, True, mine)}
        with torch.no_grad():
            res = alternate(runs, repeats, warmups=1, peaks=True, trim=False)
        print(spread(f"dc-ae {what} {size} px {dtype}", res.seconds, {k: k for k in SIDES}), flush=True)
        rows.append(row(f"DC-AE {what}", size, dtype, res.median(), res.peak()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DT))
    ap.add_argument("--repeats", type=int, default=4, help="rounds; each cell is their median (default 4)")
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--skip-transformer", action="store_true")
    ap.add_argument("--force-bf16", action="store_true", help="run bf16 even where this CPU emulates it")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    peak = roofline()
    print(f"machine: {machine()}; matmul roofline fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s",
          flush=True)
    print(f"each cell: the median of {args.repeats} rounds, a round calling diffusers, ours with the speed layer off "
          "and ours with it on, once each, on the same weights", flush=True)
    if "bf16" in args.dtypes and peak["bf16"] < 0.1 * peak["fp32"] and not args.force_bf16:
        print("bf16 skipped: this CPU has no native bf16 matmul (emulated at a few GFLOP/s; a 1024 px step would "
              "take tens of minutes); --force-bf16 runs it anyway", flush=True)
        args.dtypes = [d for d in args.dtypes if d != "bf16"]
    rows = []
    for dtype in args.dtypes:
        for size in args.sizes:
            if not args.skip_transformer:
                rows += bench_transformer(size, dtype, args.repeats, peak)
            if not args.skip_vae:
                rows += bench_vae(size, dtype, args.repeats)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; diffusers and ours with the speed layer off keep "
          "nothing between calls: in the sampling-step rows their cells are their call's")
    print(markdown_table(HEAD, rows), flush=True)


if __name__ == "__main__":
    main()
