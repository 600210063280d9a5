"""Benchmark: what a Sana ControlNet costs per sampling step and in memory, next to the transformer it controls.

Random weights of the published 0.6B config (``Sana_600M_1024px``, 28 blocks) and of its ControlNet as diffusers
publishes it (the same config with 7 blocks), fp32 on the CPU, speed layer on, a caption of 300 tokens. In one process:

- a CFG step (batch 2) through ``guided_model_fn`` on x (1, 32, h, w): plain, and with
  ``control=Control(controlnet, latent, 1.0)``; and the ControlNet's own call (``Control.samples`` on the step's
  batch-2 inputs), the three alternated ``--repeats`` times after a warm-up, best of each. Expectation:
  control / plain ≈ 1 + 7/28 = 1.25 (the ControlNet runs 7 Sana blocks to the model's 28; its embedders, input
  projection and 7 output projections cost little), and the ControlNet alone ≈ 0.25 of a plain step;
- memory: the resident set after building the transformer and after building the ControlNet, and the peak resident
  set (VmHWM, reset through /proc/self/clear_refs before each call) during a plain and a ControlNet step with both
  loaded. Expectation: loading the ControlNet adds about its parameter bytes; a ControlNet step peaks above a plain
  one by about its samples (7 × (2, N, 1152) fp32) and its own activations;
- the ControlNet's parameter count and bytes, checked against the spec's 168,765,696 parameters.

Run: .sana-env/venv/bin/python bench/bench_controlnet.py [--size 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import GiB, MiB, alternate, hwm, machine, random_model, reset_peak
from sana_comfy.sana_core.controlnet import Control, SanaControlNet
from sana_comfy.sana_core.guidance import TextCond, guided_model_fn
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer

SPEC_PARAMS = 168_765_696  # the 600M / 7-block ControlNet's parameter count in the spec
CN_LAYERS = 7
CAPTION = 300


def caption(g: torch.Generator, kept: int) -> TextCond:
    """Caption features (1, 300, 2304) with the first ``kept`` tokens unmasked."""
    mask = torch.zeros(1, CAPTION, dtype=torch.int64)
    mask[:, :kept] = 1
    return TextCond(torch.randn(1, CAPTION, 2304, generator=g), mask)


def load_both(cfg, make_plain, x: torch.Tensor, t: torch.Tensor):
    """The transformer, the ControlNet (random weights) and the plain step's function ``make_plain(net)``, with the
    resident set read around each: ``r0`` at the start, ``r1`` with the transformer, ``r1b`` after its first step
    (the warm-up, timed: ``warm``; its peak: ``alone``), ``r2`` with the ControlNet too."""
    mem = {"r0": reset_peak()}
    net = random_model(SanaTransformer, cfg)
    mem["r1"] = reset_peak()
    plain_fn = make_plain(net)
    with torch.no_grad():  # warm-up, and the peak of a step with the transformer alone loaded
        t0 = time.perf_counter()
        plain_fn(x, t)
        mem["warm"] = time.perf_counter() - t0
    mem["alone"] = hwm()
    mem["r1b"] = reset_peak()  # after the step: what it keeps (the caption, seen once) counts with the transformer
    cn = random_model(SanaControlNet, cfg.replace(num_layers=CN_LAYERS))
    mem["r2"] = reset_peak()
    return net, cn, plain_fn, mem


def time_calls(calls: dict, repeats: int, warm: float):
    """Warm up the calls but the plain step (warmed up while loading), then alternate them ``repeats`` times, each
    call's peak resident set read from a reset VmHWM."""
    def progress(i, res):
        print(f"  repeat {i + 1}: " + "  ".join(f"{k} best so far {v:6.2f} s" for k, v in res.best().items()),
              flush=True)

    with torch.no_grad():
        t0 = time.perf_counter()
        for k, fn in calls.items():  # warm-up; the steps keep the caption's keys and values from here on
            if k != "plain step":
                fn()
        print(f"warm-up (one of each) {warm + time.perf_counter() - t0:.0f} s", flush=True)
        return alternate(calls, repeats, peaks=True, each_round=progress)


def summary(args, cfg, n: int, best: dict, peak: dict, mem: dict, net, cn) -> None:
    p, c, a = best["plain step"], best["controlnet step"], best["controlnet alone"]
    expect = 1 + CN_LAYERS / cfg.num_layers
    n_params = sum(q.numel() for q in cn.parameters())
    n_bytes = sum(q.numel() * q.element_size() for q in cn.parameters())
    t_bytes = sum(q.numel() * q.element_size() for q in net.parameters())
    r0, r1, r1b, r2 = (mem[k] for k in ("r0", "r1", "r1b", "r2"))
    print(flush=True)
    print(f"summary ({args.size} px, batch 2, fp32, best of {args.repeats}):")
    print(f"  plain CFG step          {p:7.2f} s")
    print(f"  ControlNet CFG step     {c:7.2f} s   ratio to plain {c / p:5.3f}   expected ≈ {expect:.3f} "
          f"(1 + {CN_LAYERS}/{cfg.num_layers})")
    print(f"  ControlNet call alone   {a:7.2f} s   ratio to plain {a / p:5.3f}   expected ≈ {CN_LAYERS / cfg.num_layers:.3f}"
          f";  step difference {c - p:6.2f} s = {(c - p) / a:5.3f} × the call alone")
    print(f"  params: transformer {sum(q.numel() for q in net.parameters()):,} ({t_bytes / GiB:.2f} GiB), "
          f"ControlNet {n_params:,} ({n_bytes / GiB:.3f} GiB; spec {SPEC_PARAMS:,}: "
          f"{'match' if n_params == SPEC_PARAMS else 'MISMATCH'})")
    print(f"  RSS: start {r0 / GiB:.2f} GiB, + transformer {r1 / GiB:.2f} GiB (+{(r1 - r0) / GiB:.2f}), "
          f"after a step {r1b / GiB:.2f} GiB, + ControlNet {r2 / GiB:.2f} GiB (+{(r2 - r1b) / GiB:.3f}, "
          f"its params {n_bytes / GiB:.3f})")
    print(f"  peak RSS, both loaded: plain step {peak['plain step'] / GiB:.2f} GiB, ControlNet step "
          f"{peak['controlnet step'] / GiB:.2f} GiB (+{(peak['controlnet step'] - peak['plain step']) / MiB:.0f} "
          f"MiB; its {CN_LAYERS} samples {CN_LAYERS * 2 * n * n * cfg.dim * 4 / MiB:.0f} MiB), "
          f"ControlNet call alone {peak['controlnet alone'] / GiB:.2f} GiB")
    print(f"  peak RSS, transformer alone loaded: plain step {mem['alone'] / GiB:.2f} GiB;  ControlNet step with both "
          f"loaded − this {(peak['controlnet step'] - mem['alone']) / MiB:.0f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="image side in px (latent side = size / 32)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    t_start = time.perf_counter()
    print(f"machine: {machine()}; {args.size} px (latent "
          f"{args.size // 32}×{args.size // 32}), batch 2 (one CFG step), caption {CAPTION} tokens, fp32, speed layer "
          "on", flush=True)

    cfg = PRESETS["Sana_600M_1024px"]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n = args.size // 32
    x = torch.randn(1, 32, n, n, generator=g)
    latent = torch.randn(1, 32, n, n, generator=g)
    t = torch.tensor([500.0])
    cond, uncond = caption(g, 40), caption(g, 8)

    net, cn, plain_fn, mem = load_both(cfg, lambda net: guided_model_fn(net, cond, uncond, cfg=4.5), x, t)
    n_params = sum(p.numel() for p in cn.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in cn.parameters())
    print(f"ControlNet ({CN_LAYERS} blocks): {n_params:,} params, {n_bytes / MiB:.1f} MiB fp32 — spec "
          f"{SPEC_PARAMS:,}: {'matches' if n_params == SPEC_PARAMS else f'DIFFERS by {n_params - SPEC_PARAMS:+,}'}",
          flush=True)

    control = Control(cn, latent, 1.0)
    control_fn = guided_model_fn(net, cond, uncond, cfg=4.5, control=control)
    # the ControlNet's call as the step makes it: the batch-2 latent, timesteps, caption and mask ([uncond, cond])
    ctx = torch.cat([uncond.embeds, cond.embeds])
    ctx_mask = torch.cat([uncond.mask, cond.mask])
    x2, t2 = torch.cat([x, x]), torch.cat([t, t]) * cfg.timestep_scale
    calls = {"plain step": lambda: plain_fn(x, t), "controlnet step": lambda: control_fn(x, t),
             "controlnet alone": lambda: control.samples(x2, t2, ctx, ctx_mask)}
    res = time_calls(calls, args.repeats, mem["warm"])
    summary(args, cfg, n, res.best(), res.peak(), mem, net, cn)
    print(f"  wall time {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
