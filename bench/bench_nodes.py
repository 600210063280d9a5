"""Benchmark: a whole text-to-image through the nodes against the sum of its parts, and what PAG costs.

Random weights of the published configs (Sana 0.6B transformer, DC-AE f32c32, Gemma-2-2B with a small stand-in
vocabulary for the tokenizer), fp32 on the CPU, 512 px, 20 steps, CFG 4.5, in one process:

- parts: the core calls the nodes make (``SanaTextEncoder.encode`` for the prompt and the negative,
  ``pipeline.denoise``, ``pipeline.decode_images``), each timed alone;
- whole: the nodes in a row (SanaEncodePrompt ×2 → SanaEmptyLatent → SanaSample → SanaDecode), each called as
  ComfyUI's executor calls it (``execute`` under ``torch.inference_mode``), in-process with ComfyUI's own modules on
  the CPU (``common.comfy_in_process``) and the models in the host's patchers, as the loaders give them. SanaSample
  samples on ComfyUI's own path (KSampler's, with the host's CFG guider), so the difference from the parts is the
  host's sampling and model management; the executor's scheduling between nodes is not counted;
- PAG: one CFG step (batch 2) and one CFG+PAG step (batch 3) through the guidance wrapper, against a plain model
  call at batch 3: the perturbed branch should cost no more than one extra batch item.

The two are run alternately (parts, whole, parts, whole …) and the best of each is compared.
Run: .sana-env/venv/bin/python bench/bench_nodes.py [--steps 20] [--size 512] [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import NEG, PROMPT, alternate, build_models, comfy_in_process, machine, timed

comfy_in_process()  # before the nodes are imported: they are ComfyUI nodes (comfy_api), run on the CPU here

import comfy.model_management as mm  # noqa: E402
from comfyui_version import __version__ as comfy_version  # noqa: E402
from sana_comfy.nodes import NODES, host, models  # noqa: E402
from sana_comfy.sana_core import guidance, pipeline, sampling  # noqa: E402
from sana_comfy.sana_core import text_encoder as te_mod  # noqa: E402


def parts(net, vae, enc, size: int, steps: int) -> dict[str, float]:
    opts = pipeline.SampleOptions(steps=steps, cfg=4.5)
    res = {}
    with torch.no_grad():
        res["encode prompt"], (pe, pm) = timed(lambda: enc.encode([PROMPT], chi=te_mod.DEFAULT_CHI, max_length=300))
        res["encode negative"], (ne, nm) = timed(lambda: enc.encode([NEG], chi=None, max_length=300))
        bh, bw = pipeline.binned_size(size, size, net, True)  # what SanaEmptyLatent makes with binning on
        lat = torch.zeros(1, 32, bh // 32, bw // 32)
        noise = sampling.noise_for_seed(0, tuple(lat.shape), None)
        res["denoise"], raw = timed(lambda: pipeline.denoise(net, guidance.TextCond(pe, pm),
                                                            guidance.TextCond(ne, nm), lat, 0, opts, noise=noise))
        res["decode"], _ = timed(lambda: pipeline.decode_images(vae, raw, None if (bh, bw) == (size, size) else
                                                                (size, size), "auto"))
    return res


def whole(model, te, vae, size: int, steps: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        pos = NODES["SanaEncodePrompt"].execute(te, PROMPT, True, 300)[0]
        neg = NODES["SanaEncodePrompt"].execute(te, NEG, False, 300)[0]
        lat = NODES["SanaEmptyLatent"].execute(size, size, 1, True, model)[0]
        out = NODES["SanaSample"].execute(model, pos, neg, lat, seed=0, steps=steps, cfg=4.5, sampler="flow_dpm_solver",
                                          flow_shift=0.0, pag_scale=0.0, pag_adaptive_scale=0.0, pag_layers="8",
                                          denoise=1.0)[0]
        img = NODES["SanaDecode"].execute(vae, out, "auto")[0]
    dt = time.perf_counter() - t0
    assert img.shape == (1, size, size, 3) and torch.isfinite(img).all()
    return dt


def pag_cost(net, enc, size: int, repeats: int = 3) -> None:
    with torch.no_grad():
        pe, pm = enc.encode([PROMPT], max_length=300)
        ne, nm = enc.encode([NEG], chi=None, max_length=300)
    pos, neg = guidance.TextCond(pe, pm), guidance.TextCond(ne, nm)
    x = torch.randn(1, 32, size // 32, size // 32)
    t = torch.tensor([500.0])
    cfg_fn = guidance.guided_model_fn(net, pos, neg, cfg=4.5)
    pag_fn = guidance.guided_model_fn(net, pos, neg, cfg=4.5, pag_scale=3.0, pag_layers=frozenset({8}))
    # The guided steps keep the caption's keys and values from their second call on (speed/transformer.py); so
    # does the plain batch-3 call it is compared with (the same caption tensors every call).
    caption3 = torch.cat([ne, pe, pe]), torch.cat([nm, pm, pm])
    calls = {"cfg step (batch 2)": lambda: cfg_fn(x, t), "cfg+pag step (batch 3)": lambda: pag_fn(x, t),
             "plain model call, batch 3": lambda: net(x.repeat(3, 1, 1, 1), t.repeat(3), *caption3)}
    with torch.no_grad():
        best = alternate(calls, repeats, warmups=1).best()
    for k, v in best.items():
        print(f"  {k:28s} {v:6.2f} s", flush=True)
    extra, item = best["cfg+pag step (batch 3)"] - best["cfg step (batch 2)"], \
        best["plain model call, batch 3"] - best["cfg step (batch 2)"]
    print(f"PAG: the perturbed branch adds {extra:.2f} s a step; one extra batch item costs {item:.2f} s "
          f"(ratio {extra / item:.2f}); CFG+PAG step / plain batch-3 call = "
          f"{best['cfg+pag step (batch 3)'] / best['plain model call, batch 3']:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-pag", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}; ComfyUI {comfy_version} in-process (--cpu, device {mm.get_torch_device()})",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        net, vae, enc = build_models(Path(tmp), args.size)
    model = models.SanaModel(host.wrap(net, "diffusion"), "random 0.6B")
    te = models.SanaTextEncoderHandle(host.wrap(enc.model, "text_encoder"), enc, "random Gemma-2-2B")
    vh = models.SanaVAE(host.wrap(vae, "vae"), "random DC-AE")
    with torch.no_grad():  # warm-up: first-call allocations and oneDNN primitive creation out of the timings
        enc.encode(["warm up"], max_length=300)
        net(torch.zeros(2, 32, 4, 4), torch.tensor([1.0, 1.0]), torch.zeros(2, 300, 2304), torch.ones(2, 300))
    best_parts, best_whole = None, float("inf")
    for _ in range(args.repeats):
        p = parts(net, vae, enc, args.size, args.steps)
        if best_parts is None or sum(p.values()) < sum(best_parts.values()):
            best_parts = p
        best_whole = min(best_whole, whole(model, te, vh, args.size, args.steps))
    total = sum(best_parts.values())
    for k, v in best_parts.items():
        print(f"  {k:28s} {v:7.2f} s", flush=True)
    print(f"text-to-image {args.size}px, {args.steps} steps, CFG, fp32: sum of parts {total:.2f} s, through the "
          f"nodes {best_whole:.2f} s, overhead {best_whole / total - 1:+.2%}", flush=True)
    if not args.skip_pag:
        pag_cost(net, enc, args.size)


if __name__ == "__main__":
    main()
