"""Benchmark for a GPU machine: Sana ours against diffusers, same random weights in the published shapes, one run
of every case below, ending in a markdown table (card, torch version, date) of the results against their targets.
Starts with the card's name and its bf16 matmul rate.

Cases (``--cases``, a comma list; all by default, in this order; a case that fails prints its error and the run goes
on):
- ``0.6b``: the whole text-to-image at 1024×1024, 20 steps of Flow-DPM-Solver, CFG 4.5, bf16, one prompt with the
  complex human instruction, against diffusers' SanaPipeline. Both share one Gemma module and get copies of the same
  transformer and DC-AE weights; each is warmed up, then they alternate and the best time of each is kept. Ours runs
  three ways: as shipped (CUDA graphs, fused-layout blocks), with the blocks in diffusers' op order, and without
  graphs. Prints the times and ratios, the PNG encode ComfyUI's SaveImage adds (target: text → PNG ≤ 0.20 s, images
  within 4/255 of diffusers), a per-stage breakdown, parity stage by stage (bf16, and fp32 for one call and a whole
  denoise), how much a 0.1 % change of the noise moves the image, and the top kernels of one eager run of ours
  (--profile).
- ``1.6b``: the same pipeline with the Sana_1600M_1024px model (target ≤ 0.5× diffusers).
- ``batch16``: the 0.6B at 1024², one prompt, a batch of 16 images (diffusers: num_images_per_prompt=16), images/s
  (target ≥ 10).
- ``4k``: the Sana_1600M_4Kpx model at 4096² with a tiled decode (512 px tiles every 448 px on both sides; diffusers
  with ``vae.enable_tiling()``): whole-pipeline time and peak memory above the resident weights, and the decode
  alone (target ≤ 0.6× diffusers' time). ``--steps-4k`` takes fewer steps if the time budget needs it.
- ``8gib``: 1.6B + Gemma-2 + DC-AE with the card capped at 8 GiB (``torch.cuda.set_per_process_memory_fraction``),
  each model on the card only while it runs (text encoder → transformer → DC-AE); diffusers with
  ``enable_model_cpu_offload`` under the same cap. Peak allocated memory of one run after a warm-up.
- ``4.8b``: SANA 1.5 4.8B, its bf16 weights built on the CPU and stored as fp8_e4m3fn (``sana_core.quant``), with the
  card capped at 12 GiB, offloaded as above; diffusers with ``enable_layerwise_casting`` (fp8) and model offload.
The capped cases run last, each from an emptied cache and reset peak statistics; the cap is lifted afterwards.
Default repeats keep the whole run near 6 minutes on an H100 (each case prints its estimate and its time).
Run: .sana-env/venv/bin/python bench/bench_gpu.py [--cases all] [--repeats 5] [--size 1024] [--steps 20]
     [--batch 16] [--size-4k 4096] [--steps-4k 20] [--profile FILE]
     CPU smoke test of the script itself: --device cpu --dtype fp32 --tiny --cases all (every model shrunk to 2
     narrow layers and a narrow Gemma-2 / DC-AE, 128 px, 2 steps, one thread; about a minute); the 0.6b case alone
     at its full width:
     --device cpu --dtype fp32 --size 256 --steps 2 --text-layers 2 --cases 0.6b
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import gpu_cases as cases
import torch
from common import PROMPT, GiB, alternate, rel, sync, timed
from gpu_cases import TABLE_HEAD, Ctx, Row, free_memory, png_seconds, preset, transformer_pair, vae_pair
from sana_comfy.sana_core import pipeline, speed
from sana_comfy.sana_core.dcae import DCAE
from sana_comfy.sana_core.guidance import TextCond
from sana_comfy.sana_core.load.tensors import load_into
from sana_comfy.sana_core.speed import policy
from sana_comfy.sana_core.transformer import SanaConfig, SanaTransformer
from support.text import build_tokenizer

DT = {"bf16": torch.bfloat16, "fp32": torch.float32}


def matmul_rate(dev: str, dt: torch.dtype, n: int = 8192) -> float:
    if not dev.startswith("cuda"):
        return float("nan")
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    for _ in range(3):
        a @ b
    t = min(timed(lambda: a @ b, dev)[0] for _ in range(10))
    return 2 * n**3 / t / 1e12


@dataclass
class Models06:
    """The 0.6B case's models: ours and diffusers' on the same weights."""

    net: SanaTransformer
    ref_tr: torch.nn.Module  # diffusers' SanaTransformer2DModel
    vae: DCAE
    ref_vae: torch.nn.Module  # diffusers' AutoencoderDC
    enc: object  # our SanaTextEncoder
    ref: object  # diffusers' SanaPipeline, sharing the Gemma module with ``enc``
    net_cfg: SanaConfig
    tr_config: dict  # diffusers' config of ``ref_tr``
    sd32: dict  # an fp32 copy of the transformer's weights, for the fp32 parity check


def build_06b(ctx: Ctx) -> Models06:
    dev = ctx.dev
    torch.manual_seed(0)
    net_cfg, sd32 = preset(ctx, "Sana_600M_1024px"), {}
    net, ref_tr = transformer_pair(ctx, net_cfg, dev, keep_fp32=sd32)
    vae, ref_vae = vae_pair(ctx, dev)
    tr_config = dict(ref_tr.config)
    gemma = cases.gemma(ctx, dev)
    ref = cases.diffusers_pipeline(ctx, gemma, ref_vae, ref_tr)
    enc = cases.encoder(ctx, gemma)
    return Models06(net, ref_tr, vae, ref_vae, enc, ref, net_cfg, tr_config, sd32)


def whole_runs(models: Models06, args: argparse.Namespace, opts) -> dict:
    """Text → image: ours as shipped, with the blocks in their plain forms, without CUDA graphs; and diffusers."""
    def ours():
        return pipeline.text_to_image(models.net, models.enc, models.vae, PROMPT, height=args.size, width=args.size,
                                      seed=0, opts=opts, binning=False, lowercase=True)  # as diffusers does

    def ours_eager():  # no CUDA graphs anywhere
        with policy.forced(cuda_graphs=False):
            return ours()

    def ours_plain():  # graphs, but the blocks in their plain (diffusers-layout) forms
        with policy.forced(fused_blocks=False):
            return ours()

    def theirs():
        return cases.theirs_images(models.ref, args.size, args.steps)

    return {"ours": ours, "ours, plain blocks": ours_plain, "ours, eager": ours_eager, "diffusers": theirs}


def time_whole(runs: dict, dev: str, repeats: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Two warm-ups of each run, then ``repeats`` alternated rounds: the best time of each, and the images of the
    second warm-up on the CPU, all (B, H, W, 3)."""
    imgs = {k: fn() for k, fn in runs.items()}  # warm-up (kernels, allocator)
    imgs = {k: fn() for k, fn in runs.items()}  # graphs are captured on a signature's second call
    imgs = {k: v.float().cpu() for k, v in imgs.items()}
    imgs["diffusers"] = imgs["diffusers"].permute(0, 2, 3, 1)
    return alternate(runs, repeats, dev).best(), imgs


def stage_times(ctx: Ctx, models: Models06, opts, png: float) -> dict:
    """Where the time goes: each stage of ours timed alone, and diffusers' text encoding and decode. Returns what it
    built (the parity checks reuse ``pos``, ``neg``, ``latent``, ``z`` and ``vae_cl``)."""
    dev, dt, enc, vae, ref = ctx.dev, ctx.dt, models.enc, models.vae, models.ref
    bh = bw = ctx.args.size
    pos = TextCond(*enc.encode([PROMPT], lowercase=True))
    neg = TextCond(*enc.encode_negative([""]))
    latent = torch.zeros(1, 32, bh // 32, bw // 32)
    raw = pipeline.denoise(models.net, pos, neg, latent, 0, opts)
    with torch.device("meta"):
        vae_cl = DCAE(vae.config)
    load_into(vae_cl, {k: v.clone() for k, v in vae.state_dict().items()}, dt, "bench")
    vae_cl = speed.apply(vae_cl.eval().to(dev).to(memory_format=torch.channels_last), True)
    z = raw.to(dev, dt)
    stages = {
        "text (prompt + negative)": lambda: (enc.encode([PROMPT], lowercase=True), enc.encode_negative([""])),
        "denoise (graphs)": lambda: pipeline.denoise(models.net, pos, neg, latent, 0, opts),
        "decode": lambda: pipeline.decode_images(vae, raw),
        "decode, DC-AE alone": lambda: vae.decode(z, tiling="off"),
        "decode, DC-AE alone, channels-last": lambda: vae_cl.decode(z.contiguous(memory_format=torch.channels_last),
                                                                    tiling="off"),
        "diffusers text": lambda: ref.encode_prompt(PROMPT, do_classifier_free_guidance=True, device=dev,
                                                    complex_human_instruction=ref_chi(ref)),
        "diffusers decode": lambda: models.ref_vae.decode(z).sample,
    }
    for k, fn in stages.items():
        fn(), fn()
        print(f"  {k}: {min(timed(fn, dev)[0] for _ in range(3)) * 1000:.1f} ms", flush=True)
    print(f"  PNG encode of one image (ComfyUI's SaveImage: uint8, compress level 4): {png * 1000:.1f} ms",
          flush=True)
    return dict(pos=pos, neg=neg, latent=latent, raw=raw, vae_cl=vae_cl, z=z, stages=stages)


def parity_bf16(ctx: Ctx, models: Models06, opts, st: dict) -> dict:
    """Parity stage by stage (bf16 on both sides; diffusers is the reference), and how far a 0.1 % change of the
    noise moves the image. ``st``: what ``stage_times`` built. Returns what it computed (the fp32 check reuses the
    call's inputs ``x``, ``t``, ``y``, ``m`` and the ``noise``)."""
    dev, dt, net, ref, ref_tr, vae = ctx.dev, ctx.dt, models.net, models.ref, models.ref_tr, models.vae
    pos, neg, latent, z, vae_cl = st["pos"], st["neg"], st["latent"], st["z"], st["vae_cl"]
    bh = bw = ctx.args.size
    pe, pm, ne, nm = ref.encode_prompt(PROMPT, do_classifier_free_guidance=True, device=dev,
                                       complex_human_instruction=ref_chi(ref))
    print(f"  parity: text embeddings {rel(pos.embeds, pe):.2e} (masks equal: "
          f"{bool((pos.mask.to(dev) == pm).all())}), negative {rel(neg.embeds, ne):.2e}", flush=True)
    x = torch.randn(2, 32, bh // 32, bw // 32, generator=torch.Generator().manual_seed(1)).to(dev, dt)
    t = torch.full((2,), 999.0, device=dev)
    y, m = torch.cat([ne, pe]), torch.cat([nm, pm])
    want = ref_tr(x, encoder_hidden_states=y, encoder_attention_mask=m, timestep=t, return_dict=False)[0]
    # How far a random-weight model amplifies a tiny change: the same run with the noise moved by 0.1 %.
    noise = torch.randn(1, 32, bh // 32, bw // 32, generator=torch.Generator().manual_seed(0))
    a = pipeline.decode_images(vae, pipeline.denoise(net, pos, neg, latent, 0, opts, noise=noise))
    b = pipeline.decode_images(vae, pipeline.denoise(net, pos, neg, latent, 0, opts, noise=noise * 1.001))
    d = (a - b).abs() * 255
    print(f"  sensitivity: noise × 1.001 moves the image by max {d.max().item():.1f}, mean {d.mean().item():.2f} "
          "/255", flush=True)
    img = vae.decode(z, tiling="off")
    img_cl = vae_cl.decode(z.contiguous(memory_format=torch.channels_last), tiling="off")
    print(f"  parity: one transformer call {rel(net(x, t, y, m), want):.2e}; decode "
          f"{rel(img, models.ref_vae.decode(z).sample):.2e}; channels-last decode {rel(img_cl, img):.2e}", flush=True)
    out = dict(pe=pe, pm=pm, ne=ne, nm=nm, x=x, t=t, y=y, m=m, want=want, noise=noise, a=a, b=b, d=d, img=img,
               img_cl=img_cl)
    if ctx.cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        speed.apply(net, False)
        out["plain"] = plain = net(x, t, y, m)
        with sdpa_kernel([SDPBackend.MATH]):
            same_kernel = rel(net(x, t, y, m), ref_tr(x, encoder_hidden_states=y, encoder_attention_mask=m,
                                                      timestep=t, return_dict=False)[0])
        speed.apply(net, True)
        print(f"  parity: one call, plain blocks {rel(plain, want):.2e}; both on the math SDPA kernel "
              f"{same_kernel:.2e}", flush=True)
    return out


def write_profile(ctx: Ctx, run, path: str) -> None:
    """The top kernels of one call of ``run`` (one eager run of ours), written to ``path``."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=acts) as prof:
        run()
        sync(ctx.dev)
    key = "self_cuda_time_total" if ctx.cuda else "self_cpu_time_total"
    Path(path).write_text(prof.key_averages().table(sort_by=key, row_limit=60))
    print(f"  profile written to {path}", flush=True)


def summary_06b(ctx: Ctx, best: dict[str, float], imgs: dict[str, torch.Tensor], png: float) -> list[Row]:
    """The times and ratios, the images' differences, and the table's row."""
    args, dev = ctx.args, ctx.dev
    name = torch.cuda.get_device_name(dev) if ctx.cuda else "CPU"

    def diff(a, b):
        d = (imgs[a] - imgs[b]).abs() * 255
        return f"max {d.max().item():.1f}, mean {d.mean().item():.2f}"

    peak = f", peak GPU memory {torch.cuda.max_memory_allocated(dev) / GiB:.1f} GiB" if ctx.cuda else ""
    d = best["diffusers"]
    print(f"text-to-image {args.size}px, {args.steps} steps, CFG, 0.6B, {args.dtype} on {name}{peak}", flush=True)
    for k, v in best.items():
        print(f"  {k:20s} {v:.3f} s  ratio to diffusers {v / d:.2f}", flush=True)
    print(f"  pixel differences /255: ours vs diffusers {diff('ours', 'diffusers')}; plain blocks vs diffusers "
          f"{diff('ours, plain blocks', 'diffusers')}; graphs vs eager {diff('ours', 'ours, eager')}", flush=True)
    worst = ((imgs["ours"] - imgs["diffusers"]).abs().max() * 255).item()
    whole = best["ours"] + png
    return [Row(f"0.6B, {args.size}², {args.steps} steps, CFG, {args.dtype}, whole pipeline (text → PNG)",
                "≤ 0.20 s, within 4/255 of diffusers", f"{whole:.3f} s ({best['ours']:.3f} s + PNG {png * 1000:.0f} ms)",
                f"{d:.3f} s", f"{best['ours'] / d:.2f}", peak.removeprefix(", peak GPU memory ") or "n/a (CPU)",
                cases._verdict(whole <= 0.20 and worst <= 4.0, ctx),
                f"max Δ {worst:.1f}/255; plain blocks {best['ours, plain blocks']:.3f} s, eager "
                f"{best['ours, eager']:.3f} s")]


def case_06b(ctx: Ctx) -> list[Row]:
    """The 0.6B whole pipeline, ours (three ways) against diffusers, with stages, parity and sensitivity."""
    args, dev = ctx.args, ctx.dev
    models = build_06b(ctx)
    opts = pipeline.SampleOptions(steps=args.steps, cfg=4.5)
    print(f"models built ({time.perf_counter() - T0:.0f} s since start)", flush=True)
    runs = whole_runs(models, args, opts)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with torch.inference_mode():
        best, imgs = time_whole(runs, dev, args.repeats)
        png = png_seconds(imgs["ours"][0])
        # st and pt hold their tensors to the case's end: the peak memory reported counts them during the fp32 check
        st = stage_times(ctx, models, opts, png)
        pt = parity_bf16(ctx, models, opts, st)
        try:
            fp32_parity(net_cfg=models.net_cfg, tr_config=models.tr_config, sd32=models.sd32, dev=dev, x=pt["x"],
                        t=pt["t"], y=pt["y"], m=pt["m"], pos=st["pos"], neg=st["neg"], noise=pt["noise"],
                        steps=args.steps, vae=models.vae)
        finally:  # TF32 back as it was for the cases after this one
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        if args.profile:
            write_profile(ctx, runs["ours, eager"], args.profile)
    return summary_06b(ctx, best, imgs, png)


# name → (case, its target, estimated seconds on an H100); the capped cases last
CASES = {
    "0.6b": (case_06b, "≤ 0.20 s text → PNG, within 4/255 of diffusers", 70),
    "1.6b": (cases.case_16b, "≤ 0.5× diffusers", 25),
    "batch16": (cases.case_batch, "≥ 10 images/s", 55),
    "4k": (cases.case_4k, "≤ 0.6× diffusers' time", 50),
    "8gib": (cases.case_8gib, "completes under an 8 GiB cap", 40),
    "4.8b": (cases.case_48b, "completes under a 12 GiB cap, fp8 storage", 90),
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="all", help=f"comma list of {', '.join(CASES)} (default: all)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=list(DT))
    ap.add_argument("--tiny", action="store_true",
                    help="shrink every model (2 narrow layers, narrow Gemma-2 and DC-AE) and size: a CPU smoke test")
    ap.add_argument("--size", type=int, default=None, help="image side (1024; --tiny 128)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (20; --tiny 2)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs of the 0.6b case (5; --tiny 1); the larger cases take at most 3, 2 and 1")
    ap.add_argument("--text-layers", type=int, default=None, help="Gemma-2 layers (26 in the published 2B; --tiny 2)")
    ap.add_argument("--batch", type=int, default=None, help="images of the batch case (16; --tiny 4)")
    ap.add_argument("--size-4k", type=int, default=None, help="image side of the 4k case (4096; --tiny 192)")
    ap.add_argument("--steps-4k", type=int, default=None, help="steps of the 4k case (default: --steps)")
    ap.add_argument("--profile", default="", help="write the top kernels of one eager run of ours to this file")
    args = ap.parse_args()
    full, tiny = dict(size=1024, steps=20, repeats=5, text_layers=26, batch=16, size_4k=4096), \
        dict(size=128, steps=2, repeats=1, text_layers=2, batch=4, size_4k=192)
    for k, v in (tiny if args.tiny else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.steps_4k is None:
        args.steps_4k = args.steps
    names = list(CASES) if args.cases == "all" else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)} or all")
    args.cases = [c for c in CASES if c in names]  # always in the table's order: the capped cases last
    return args


def main() -> None:
    args = parse_args()
    import diffusers
    from transformers import GemmaTokenizerFast

    dev, dt = args.device, DT[args.dtype]
    cuda = dev.startswith("cuda")
    if args.tiny and not cuda:
        torch.set_num_threads(1)  # the smoke test's ops are tiny: threads would only wait on each other
    name = torch.cuda.get_device_name(dev) if cuda else "CPU"
    print(f"device: {name}, torch {torch.__version__}, diffusers {diffusers.__version__}, {args.dtype}", flush=True)
    print(f"matmul 8192³ {args.dtype}: {matmul_rate(dev, dt):.0f} TFLOP/s", flush=True)
    total = sum(CASES[c][2] for c in args.cases)
    print(f"cases: {', '.join(args.cases)}; estimated {total} s on an H100 at the default sizes, plus start-up",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok = GemmaTokenizerFast.from_pretrained(build_tokenizer(Path(tmp) / "tok"))
    ctx = Ctx(args, dev, dt, tok)
    rows: list[Row] = []
    for case in args.cases:
        fn, target, estimate = CASES[case]
        print(f"\n== {case}: estimated {estimate} s on an H100 ({time.perf_counter() - T0:.0f} s since start) ==",
              flush=True)
        free_memory()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        try:
            new = fn(ctx)
        except Exception as e:  # noqa: BLE001  (e.g. out of memory: report it, go on with the next case)
            traceback.print_exc()
            new = [Row(case, target, verdict="ERROR", notes=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                       if str(e) else type(e).__name__)]
        free_memory()
        peak = f", peak allocated {torch.cuda.max_memory_allocated(dev) / GiB:.1f} GiB" if cuda else ""
        print(f"-- {case}: {time.perf_counter() - t0:.0f} s{peak}", flush=True)
        for r in new:
            print(r.markdown(), flush=True)
        rows += new
    smoke = " — a smoke run (--tiny or not CUDA): the numbers mean nothing" if args.tiny or not cuda else ""
    print(f"\n### Sana on {name}, torch {torch.__version__}, diffusers {diffusers.__version__}, {args.dtype}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}{smoke} ({time.perf_counter() - T0:.0f} s in all)\n", flush=True)
    print(TABLE_HEAD)
    for r in rows:
        print(r.markdown())


def fp32_parity(net_cfg, tr_config, sd32, dev, x, t, y, m, pos, neg, noise, steps, vae) -> None:
    """The same comparison in fp32 (TF32 off), where rounding cannot hide a difference: one call, and a whole
    denoise through diffusers' DPM-Solver++ loop (SanaTransformer2DModel + its scheduler) against ours."""
    from diffusers import DPMSolverMultistepScheduler, SanaTransformer2DModel

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.device(dev):
        ref = SanaTransformer2DModel.from_config(tr_config).eval().requires_grad_(False)
    ref.load_state_dict(sd32)
    with torch.device("meta"):
        ours = SanaTransformer(net_cfg, dtype=torch.float32)
    load_into(ours, {k: v.clone() for k, v in sd32.items()}, torch.float32, "bench")
    ours = speed.apply(ours.eval().requires_grad_(False).to(dev), True)
    x, y = x.float(), y.float()
    one = rel(ours(x, t, y, m), ref(x, encoder_hidden_states=y, encoder_attention_mask=m, timestep=t,
                                   return_dict=False)[0])
    sched = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0,
                                        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                        lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(steps, device=dev)
    lat = noise.to(dev)
    emb = torch.cat([neg.embeds, pos.embeds]).to(dev, torch.float32)
    mask = torch.cat([neg.mask, pos.mask]).to(dev)
    for ts in sched.timesteps:
        v = ref(torch.cat([lat] * 2), encoder_hidden_states=emb, encoder_attention_mask=mask,
                timestep=ts.expand(2), return_dict=False)[0].float()
        v_u, v_c = v.chunk(2)
        lat = sched.step(v_u + 4.5 * (v_c - v_u), ts, lat, return_dict=False)[0]
    ours_lat = pipeline.denoise(ours, pos, neg, torch.zeros_like(noise), 0, pipeline.SampleOptions(steps=steps),
                                noise=noise).to(dev) * vae.scaling_factor
    a = pipeline.decode_images(vae, ours_lat / vae.scaling_factor)
    b = pipeline.decode_images(vae, lat / vae.scaling_factor)
    d = (a - b).abs() * 255
    print(f"  parity fp32: one transformer call {one:.2e}; {steps}-step denoise {rel(ours_lat, lat):.2e}; image "
          f"max {d.max().item():.1f}, mean {d.mean().item():.3f} /255", flush=True)


def ref_chi(ref) -> list[str]:
    """The complex human instruction diffusers' SanaPipeline uses by default (its __call__ default argument)."""
    import inspect
    return inspect.signature(type(ref).__call__).parameters["complex_human_instruction"].default


T0 = time.perf_counter()

if __name__ == "__main__":
    main()
