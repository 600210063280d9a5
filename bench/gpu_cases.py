"""The cases of bench_gpu.py beyond the 0.6B pipeline, and what every case shares: random-weight builders in the
published shapes (ours holding a copy of diffusers' weights), timing, peak-memory measurement, memory caps and the
result table.

Each case takes a ``Ctx`` and returns its table rows; bench_gpu.py runs them in order and catches what they raise.
With ``--tiny`` every model is shrunk (2 narrow transformer layers, a narrow Gemma-2 and DC-AE, small images) so
that the whole script runs on a CPU in a few minutes as a smoke test of itself; the numbers then mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import time
from dataclasses import dataclass

import torch
from common import DIFFUSERS_DCAE, PROMPT, GiB, alternate, diffusers_kwargs, markdown_row, sync, timed
from sana_comfy.sana_core import pipeline, speed
from sana_comfy.sana_core.dcae import DCAE
from sana_comfy.sana_core.dcae_blocks import DCAEConfig
from sana_comfy.sana_core.guidance import TextCond
from sana_comfy.sana_core.load.tensors import load_into
from sana_comfy.sana_core.quant import quantize
from sana_comfy.sana_core.text_encoder import SanaTextEncoder
from sana_comfy.sana_core.transformer import PRESETS, SanaConfig, SanaTransformer

# The published f32c32 DC-AE; --tiny narrows and shallows it.
TINY_DCAE = {**DIFFUSERS_DCAE, "encoder_block_out_channels": (8, 16, 32, 32, 64, 64),
             "decoder_block_out_channels": (8, 16, 32, 32, 64, 64),
             "encoder_layers_per_block": (1,) * 6, "decoder_layers_per_block": (1,) * 6}
# --tiny transformers: 2 layers of width 128 reading 64-wide captions (the variant's other flags kept)
TINY = dict(num_layers=2, num_heads=4, head_dim=32, cross_heads=2, cross_head_dim=64, caption_channels=64)


@dataclass
class Ctx:
    args: argparse.Namespace
    dev: str
    dt: torch.dtype
    tok: object  # the stand-in Gemma tokenizer, shared by every case

    @property
    def cuda(self) -> bool:
        return self.dev.startswith("cuda")


@dataclass
class Row:
    case: str
    target: str
    ours: str = "—"
    diffusers: str = "—"
    ratio: str = "—"
    peak: str = "—"
    verdict: str = "—"
    notes: str = ""

    def markdown(self) -> str:
        return markdown_row((self.case, self.target, self.ours, self.diffusers, self.ratio, self.peak, self.verdict,
                             self.notes))


TABLE_HEAD = ("| case | target | ours | diffusers | ours / diffusers | peak VRAM | verdict | notes |\n"
              "|---|---|---|---|---|---|---|---|")


# ---------------------------------------------------------------------------------------------------------------
# Timing and memory


def race(runs: dict, dev: str, repeats: int, warmups: dict[str, int] | None = None) -> tuple[dict[str, float], dict]:
    """Warm each run up (``warmups`` times, 2 by default: kernels, allocator, and our CUDA graphs, captured on a
    signature's second call), then alternate them ``repeats`` times; the best time of each and its last output."""
    warm = {k: (warmups or {}).get(k, 2) for k in runs}
    res = alternate(runs, repeats, dev, warmups=warm, keep=True)
    return res.best(), res.outputs


def measured(fn, dev: str):
    """(seconds, peak bytes allocated above what was allocated at the start, total peak bytes, output) of one call;
    the peaks are None off CUDA."""
    if not dev.startswith("cuda"):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, None, None, out
    sync(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    t = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev)
    return t, peak - base, peak, out


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def memory_cap(ctx: Ctx, gib: float):
    """The card limited to ``gib`` GiB for this process (the allocator's fraction of the whole card), restored to the
    whole card afterwards. Off CUDA: no cap, with a note."""
    if not ctx.cuda:
        print(f"  (no {gib:g} GiB cap: the device is not CUDA)", flush=True)
        yield
        return
    free_memory()
    total = torch.cuda.get_device_properties(ctx.dev).total_memory
    print(f"  cap {gib:g} GiB of {total / GiB:.0f} GiB; allocated before it {torch.cuda.memory_allocated(ctx.dev) / GiB:.2f}"
          " GiB", flush=True)
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GiB / total), ctx.dev)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, ctx.dev)
        free_memory()


def gib(n: int | None) -> str:
    return "n/a (CPU)" if n is None else f"{n / GiB:.2f} GiB"


def max_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest pixel difference in /255 units: ours (B, H, W, 3), diffusers' (B, 3, H, W), both 0..1."""
    return ((ours.float().cpu() - theirs.float().cpu().permute(0, 2, 3, 1)).abs().max() * 255).item()


def png_seconds(img: torch.Tensor) -> float:
    """Encoding one IMAGE (H, W, 3) 0..1 as ComfyUI's SaveImage does (×255 to uint8, PNG at compress level 4)."""
    import numpy as np
    from PIL import Image

    def encode():
        arr = np.clip(255.0 * img.cpu().numpy(), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(io.BytesIO(), format="PNG", compress_level=4)

    return min(timed(encode)[0] for _ in range(3))


# ---------------------------------------------------------------------------------------------------------------
# Models with random weights in the published shapes


def preset(ctx: Ctx, name: str) -> SanaConfig:
    return PRESETS[name].replace(**TINY) if ctx.args.tiny else PRESETS[name]


def transformer_pair(ctx: Ctx, cfg: SanaConfig, device: str, keep_fp32: dict | None = None):
    """diffusers' SanaTransformer2DModel with its own random init, and ours holding a copy of its weights; both in
    the bench dtype on ``device``. ``keep_fp32`` receives an fp32 copy of the weights."""
    from diffusers import SanaTransformer2DModel

    with torch.device(device):  # random init on the device itself (fast on a GPU)
        ref = SanaTransformer2DModel(**diffusers_kwargs(cfg)).eval().requires_grad_(False)
    with torch.device("meta"):
        net = SanaTransformer(cfg, dtype=ctx.dt)
    load_into(net, {k: v.clone() for k, v in ref.state_dict().items()}, ctx.dt, "bench")
    if keep_fp32 is not None:
        keep_fp32.update({k: v.float().clone() for k, v in ref.state_dict().items()})
    net = speed.apply(net.eval().requires_grad_(False).to(device), True)
    return net, ref.to(device, ctx.dt)


def vae_pair(ctx: Ctx, device: str):
    """diffusers' AutoencoderDC (random init) and our DCAE holding a copy of its weights."""
    from diffusers import AutoencoderDC

    with torch.device(device):
        ref = AutoencoderDC(**(TINY_DCAE if ctx.args.tiny else DIFFUSERS_DCAE)).eval().requires_grad_(False)
    with torch.device("meta"):
        vae = DCAE(DCAEConfig.from_diffusers(dict(ref.config)))
    load_into(vae, {k: v.clone() for k, v in ref.state_dict().items()}, ctx.dt, "bench")
    return speed.apply(vae.eval().requires_grad_(False).to(device), True), ref.to(device, ctx.dt)


def gemma(ctx: Ctx, device: str):
    """Gemma-2-2B's decoder (random init, the stand-in vocabulary); --tiny narrows it to the tiny transformers'
    caption width."""
    from transformers import Gemma2Config, Gemma2Model

    a = ctx.args
    shape = dict(hidden_size=2304, intermediate_size=9216, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                 query_pre_attn_scalar=256)
    if a.tiny:
        shape = dict(hidden_size=TINY["caption_channels"], intermediate_size=128, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32)
    with torch.device(device):
        return Gemma2Model(Gemma2Config(
            vocab_size=len(ctx.tok), num_hidden_layers=a.text_layers, sliding_window=4096,
            final_logit_softcapping=30.0, attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh",
            rms_norm_eps=1e-6, attn_implementation="eager", **shape)
        ).eval().requires_grad_(False).to(ctx.dt)  # eager attention: what both loaders pick for Gemma-2 (soft-capping)


def encoder(ctx: Ctx, model) -> SanaTextEncoder:
    return speed.apply(SanaTextEncoder(model, ctx.tok, "random Gemma-2-2B"), True)


def scheduler(flow_shift: float = 3.0):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=flow_shift,
                                       algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                       lower_order_final=True, final_sigmas_type="zero")


def diffusers_pipeline(ctx: Ctx, text_model, vae, transformer, flow_shift: float = 3.0):
    from diffusers import SanaPipeline

    ref = SanaPipeline(tokenizer=ctx.tok, text_encoder=text_model, vae=vae, transformer=transformer,
                       scheduler=scheduler(flow_shift))
    ref.set_progress_bar_config(disable=True)
    return ref


def random_fill_(module: torch.nn.Module, device: str, seed: int = 0) -> None:
    """Fill every parameter in place with the spread of a default init, one tensor at a time, drawn on ``device``
    (a GPU draws billions of numbers in a blink, a CPU takes a minute): weights N(0, 1/(3·fan_in)), modulation
    tables N(0, 1/dim), norm weights 1, biases 0."""
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                std = p.shape[-1] ** -0.5 if "scale_shift_table" in name else (3 * p[0].numel()) ** -0.5
                p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=p.dtype).mul_(std))


# ---------------------------------------------------------------------------------------------------------------
# Pipelines


def ours_images(net, enc, vae, size: int, opts, batch: int = 1, tiles: tuple[int, int] | None = None) -> torch.Tensor:
    """Text → IMAGE (B, H, W, 3) as the nodes run it: the prompt encoded once, a batch of latents sampled, decoded
    (in ``tiles`` = (tile px, stride px) if given)."""
    pos = TextCond(*enc.encode([PROMPT], lowercase=True))  # lowercased, as diffusers does
    neg = TextCond(*enc.encode_negative([""], lowercase=True))
    raw = pipeline.denoise(net, pos, neg, torch.zeros(batch, 32, size // 32, size // 32), 0, opts)
    if tiles is None:
        return pipeline.decode_images(vae, raw)
    return pipeline.decode_images(vae, raw, tiling="on", tile_px=tiles[0], stride_px=tiles[1])


def theirs_images(ref, size: int, steps: int, batch: int = 1) -> torch.Tensor:
    """diffusers' SanaPipeline; a CPU generator, as ours: the same initial noise on every device."""
    return ref(prompt=PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=4.5,
               num_images_per_prompt=batch, generator=torch.Generator("cpu").manual_seed(0), output_type="pt",
               use_resolution_binning=False).images


def offloaded_images(net, enc, vae, dev: str, size: int, opts) -> torch.Tensor:
    """Ours with each model on the device only while it runs, moved back to the CPU after: text encoder →
    transformer → DC-AE."""
    enc.to(dev)
    pos = TextCond(*enc.encode([PROMPT], lowercase=True))
    neg = TextCond(*enc.encode_negative([""], lowercase=True))
    enc.to("cpu")
    net.to(dev)
    raw = pipeline.denoise(net, pos, neg, torch.zeros(1, 32, size // 32, size // 32), 0, opts)
    net.to("cpu")
    del pos, neg
    vae.to(dev)
    img = pipeline.decode_images(vae, raw)
    vae.to("cpu")
    return img


def _attempt(fn):
    """(result, None), or (None, the error in one line) for a side that fails (e.g. out of memory)."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001  (one side failing must not stop the other)
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
        print(f"  failed: {msg}", flush=True)
        return None, msg


def _verdict(ok: bool, ctx: Ctx) -> str:
    return ("PASS" if ok else "FAIL") + (" (smoke)" if ctx.args.tiny or not ctx.cuda else "")


# ---------------------------------------------------------------------------------------------------------------
# The cases


def case_16b(ctx: Ctx) -> list[Row]:
    """1.6B at 1024², 20 steps, CFG: the whole pipeline, ours against diffusers (same weights)."""
    a, dev = ctx.args, ctx.dev
    net, ref_tr = transformer_pair(ctx, preset(ctx, "Sana_1600M_1024px"), dev)
    vae, ref_vae = vae_pair(ctx, dev)
    text = gemma(ctx, dev)
    enc, ref = encoder(ctx, text), diffusers_pipeline(ctx, text, ref_vae, ref_tr)
    opts = pipeline.SampleOptions(steps=a.steps, cfg=4.5)
    runs = {"ours": lambda: pipeline.text_to_image(net, enc, vae, PROMPT, height=a.size, width=a.size, seed=0,
                                                   opts=opts, binning=False, lowercase=True),
            "diffusers": lambda: theirs_images(ref, a.size, a.steps)}
    with torch.inference_mode():
        best, outs = race(runs, dev, min(a.repeats, 3), {"ours": 2, "diffusers": 1})
    r = best["ours"] / best["diffusers"]
    d = max_diff(outs["ours"], outs["diffusers"])
    print(f"  1.6B {a.size}px {a.steps} steps: ours {best['ours']:.3f} s, diffusers {best['diffusers']:.3f} s, "
          f"ratio {r:.2f}; images differ by max {d:.1f}/255", flush=True)
    peak = f"{torch.cuda.max_memory_allocated(dev) / GiB:.1f} GiB (both resident)" if ctx.cuda else "n/a (CPU)"
    return [Row(f"1.6B, {a.size}², {a.steps} steps, CFG, whole pipeline", "≤ 0.5× diffusers",
                f"{best['ours']:.3f} s", f"{best['diffusers']:.3f} s", f"{r:.2f}", peak, _verdict(r <= 0.5, ctx),
                f"max Δ {d:.1f}/255")]


def case_batch(ctx: Ctx) -> list[Row]:
    """0.6B at 1024², one prompt, a batch of images (diffusers: num_images_per_prompt), throughput."""
    a, dev, n = ctx.args, ctx.dev, ctx.args.batch
    net, ref_tr = transformer_pair(ctx, preset(ctx, "Sana_600M_1024px"), dev)
    vae, ref_vae = vae_pair(ctx, dev)
    text = gemma(ctx, dev)
    enc, ref = encoder(ctx, text), diffusers_pipeline(ctx, text, ref_vae, ref_tr)
    opts = pipeline.SampleOptions(steps=a.steps, cfg=4.5)
    runs = {"ours": lambda: ours_images(net, enc, vae, a.size, opts, batch=n),
            "diffusers": lambda: theirs_images(ref, a.size, a.steps, batch=n)}
    with torch.inference_mode():
        best, outs = race(runs, dev, min(a.repeats, 2), {"ours": 2, "diffusers": 1})
    ips = {k: n / v for k, v in best.items()}
    d = max_diff(outs["ours"], outs["diffusers"])
    peak = f"{torch.cuda.max_memory_allocated(dev) / GiB:.1f} GiB (both resident)" if ctx.cuda else "n/a (CPU)"
    print(f"  batch {n}: ours {best['ours']:.3f} s = {ips['ours']:.2f} images/s, diffusers {best['diffusers']:.3f} s "
          f"= {ips['diffusers']:.2f} images/s; images differ by max {d:.1f}/255", flush=True)
    return [Row(f"0.6B, {a.size}², batch {n} (one prompt), throughput", "≥ 10 images/s",
                f"{ips['ours']:.2f} img/s ({best['ours']:.2f} s)", f"{ips['diffusers']:.2f} img/s "
                f"({best['diffusers']:.2f} s)", f"{best['ours'] / best['diffusers']:.2f}", peak,
                _verdict(ips["ours"] >= 10, ctx), f"max Δ {d:.1f}/255")]


def case_4k(ctx: Ctx) -> list[Row]:
    """The 1.6B 4K model at 4096² with a tiled decode: time and peak memory, ours against diffusers with its
    tiling (the same tile and stride on both sides)."""
    a, dev = ctx.args, ctx.dev
    size, steps = a.size_4k, a.steps_4k
    tiles = (128, 96) if a.tiny else (512, 448)  # diffusers' defaults (tile_sample_min, tile_sample_stride)
    cfg = preset(ctx, "Sana_1600M_4Kpx")
    net, ref_tr = transformer_pair(ctx, cfg, dev)
    vae, ref_vae = vae_pair(ctx, dev)
    ref_vae.enable_tiling(tiles[0], tiles[0], tiles[1], tiles[1])
    text = gemma(ctx, dev)
    enc, ref = encoder(ctx, text), diffusers_pipeline(ctx, text, ref_vae, ref_tr, flow_shift=cfg.flow_shift)
    opts = pipeline.SampleOptions(steps=steps, cfg=4.5)
    fewer = f"{steps} steps" + (f" (not {a.steps}, for the time budget)" if steps < a.steps else "")
    print(f"  {size}px, {fewer}, tiles {tiles[0]} px every {tiles[1]} px", flush=True)
    with torch.inference_mode():
        short = pipeline.SampleOptions(steps=2, cfg=4.5)  # warm-up: 2 steps capture the step's graph
        ours_images(net, enc, vae, size, short, tiles=tiles)
        for _ in range(2):  # the text encoder's graphs: checked on a shape's first call, captured on its third
            enc.encode([PROMPT], lowercase=True), enc.encode_negative([""], lowercase=True)
        theirs_images(ref, size, 2)
        res = {"ours": measured(lambda: ours_images(net, enc, vae, size, opts, tiles=tiles), dev),
               "diffusers": measured(lambda: theirs_images(ref, size, steps), dev)}
        z = torch.randn(1, 32, size // 32, size // 32, generator=torch.Generator().manual_seed(0)).to(dev, ctx.dt)
        dec = {"ours": measured(lambda: vae.decode(z, tiling="on", tile_px=tiles[0], stride_px=tiles[1]), dev),
               "diffusers": measured(lambda: ref_vae.decode(z).sample, dev)}
        dec_d = (dec["ours"][3].float() - dec["diffusers"][3].float()).abs().max().item() * 127.5
    t = {k: v[0] for k, v in res.items()}
    r = t["ours"] / t["diffusers"]
    d = max_diff(res["ours"][3], res["diffusers"][3])
    td = {k: v[0] for k, v in dec.items()}
    per_step = ""
    if steps < a.steps:  # whole − decode is text + denoise, nearly all denoise
        at = {k: td[k] + (t[k] - td[k]) * a.steps / steps for k in t}
        per_step = f"; ≈ at {a.steps} steps: ours {at['ours']:.1f} s, diffusers {at['diffusers']:.1f} s"
    print(f"  whole: ours {t['ours']:.2f} s (peak above resident {gib(res['ours'][1])}), diffusers "
          f"{t['diffusers']:.2f} s ({gib(res['diffusers'][1])}), ratio {r:.2f}; images differ by max {d:.1f}/255"
          f"{per_step}", flush=True)
    print(f"  decode alone: ours {td['ours']:.2f} s (peak above resident {gib(dec['ours'][1])}), diffusers "
          f"{td['diffusers']:.2f} s ({gib(dec['diffusers'][1])}); differ by max {dec_d:.1f}/255", flush=True)
    return [
        Row(f"1.6B 4K model, {size}², {fewer}, tiled decode, whole pipeline", "≤ 0.6× diffusers' time",
            f"{t['ours']:.2f} s", f"{t['diffusers']:.2f} s", f"{r:.2f}",
            f"ours {gib(res['ours'][1])}, diffusers {gib(res['diffusers'][1])} above resident", _verdict(r <= 0.6, ctx),
            f"max Δ {d:.1f}/255{per_step}"),
        Row(f"… the tiled decode alone, {size}²", "(time and peak VRAM)", f"{td['ours']:.2f} s",
            f"{td['diffusers']:.2f} s", f"{td['ours'] / td['diffusers']:.2f}",
            f"ours {gib(dec['ours'][1])}, diffusers {gib(dec['diffusers'][1])} above resident",
            notes=f"max Δ {dec_d:.1f}/255"),
    ]


def _capped(ctx: Ctx, label: str, target: str, cap: float, net, enc, vae, ref, note: str) -> list[Row]:
    """Ours offloaded (``offloaded_images``) and diffusers with its model offload, one after the other under a
    ``cap`` GiB limit: one warm-up and one measured run each."""
    a, dev = ctx.args, ctx.dev
    opts = pipeline.SampleOptions(steps=a.steps, cfg=4.5)
    out = {}
    with memory_cap(ctx, cap), torch.no_grad():  # no_grad, not inference mode: the models move between devices
        def ours():
            try:
                offloaded_images(net, enc, vae, dev, a.size, opts)
                return measured(lambda: offloaded_images(net, enc, vae, dev, a.size, opts), dev)
            finally:  # off the card even after a failure, before diffusers' turn
                for m in (net, enc, vae):
                    m.to("cpu")

        out["ours"] = _attempt(ours)
        free_memory()
        if ref is not None:
            def theirs():
                if ctx.cuda:
                    ref.enable_model_cpu_offload(device=dev)
                theirs_images(ref, a.size, a.steps)
                return measured(lambda: theirs_images(ref, a.size, a.steps), dev)

            out["diffusers"] = _attempt(theirs)

    def cell(k):
        res, err = out.get(k, (None, "not run"))
        return ("failed: " + err, "—") if res is None else (f"{res[0]:.2f} s", gib(res[2]))

    (o_t, o_p), (d_t, d_p) = cell("ours"), cell("diffusers")
    ok = out["ours"][0] is not None
    if ok and ctx.cuda:
        ok = out["ours"][0][2] <= cap * GiB
    d = ""
    if out["ours"][0] is not None and out.get("diffusers", (None,))[0] is not None:
        d = f"; images differ by max {max_diff(out['ours'][0][3], out['diffusers'][0][3]):.1f}/255"
    print(f"  {label}: ours {o_t}, peak {o_p}; diffusers {d_t}, peak {d_p}{d}", flush=True)
    return [Row(label, target, o_t, d_t, "—", f"ours {o_p}, diffusers {d_p}", _verdict(ok, ctx), note + d)]


def case_8gib(ctx: Ctx) -> list[Row]:
    """1.6B + Gemma-2 + DC-AE under an 8 GiB cap, each model on the card only while it runs."""
    dev = ctx.dev
    net, ref_tr = transformer_pair(ctx, preset(ctx, "Sana_1600M_1024px"), dev)  # built on the card, then moved
    vae, ref_vae = vae_pair(ctx, dev)
    text = gemma(ctx, dev)
    text_ref = copy.deepcopy(text)  # diffusers' offload hooks get their own copy
    for m in (net, ref_tr, vae, ref_vae, text, text_ref):
        m.to("cpu")
    enc, ref = encoder(ctx, text), diffusers_pipeline(ctx, text_ref, ref_vae, ref_tr)
    free_memory()
    note = ("ours: text encoder → transformer → DC-AE moved on and off; diffusers: enable_model_cpu_offload"
            if ctx.cuda else "diffusers without offload on the CPU")
    return _capped(ctx, f"1.6B + Gemma-2 + DC-AE, {ctx.args.size}², {ctx.args.steps} steps, card capped at 8 GiB",
                   "completes; peak VRAM ≤ 8 GiB", 8, net, enc, vae, ref, note)


def case_48b(ctx: Ctx) -> list[Row]:
    """SANA 1.5 4.8B with fp8 weight storage under a 12 GiB cap. The bf16 weights are built on the CPU (drawn on the
    card when there is one) and quantized there, as the loader does; diffusers gets the same bf16 weights with its
    layerwise fp8 casting."""
    from diffusers import SanaTransformer2DModel

    dev, dt = ctx.dev, ctx.dt
    cfg = preset(ctx, "SANA1.5_4.8B_1024px")
    t0 = time.perf_counter()
    with torch.device("meta"):
        net = SanaTransformer(cfg, dtype=dt)
    net = net.to_empty(device="cpu")
    random_fill_(net, dev)
    n = sum(p.numel() for p in net.parameters())
    print(f"  {n / 1e9:.2f}B parameters in {str(dt).removeprefix('torch.')} on the CPU in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    try:  # diffusers' model on the same tensors, before ours is quantized
        with torch.device("meta"):
            ref_tr = SanaTransformer2DModel(**diffusers_kwargs(cfg)).eval().requires_grad_(False)
        ref_tr.load_state_dict(net.state_dict(), strict=True, assign=True)
    except Exception as e:  # noqa: BLE001
        print(f"  diffusers' model could not take the weights: {type(e).__name__}: {e}", flush=True)
        ref_tr = None
    t0 = time.perf_counter()
    ops = {"operations": net.operations} if hasattr(net, "operations") else {}  # as the loader quantizes
    net = speed.apply(quantize(net, dt, "fp8_e4m3fn", **ops).eval().requires_grad_(False), True)
    resident = sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
    print(f"  quantized to fp8_e4m3fn on the CPU in {time.perf_counter() - t0:.0f} s: {resident / GiB:.2f} GiB",
          flush=True)
    if ref_tr is not None:
        ref_tr.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dt)
    vae, ref_vae = vae_pair(ctx, dev)
    text = gemma(ctx, dev)
    text_ref = copy.deepcopy(text)
    for m in (vae, ref_vae, text, text_ref):
        m.to("cpu")
    enc = encoder(ctx, text)
    ref = None if ref_tr is None else diffusers_pipeline(ctx, text_ref, ref_vae, ref_tr)
    free_memory()
    note = (f"ours: fp8_e4m3fn with row scales (sana_core.quant), {resident / GiB:.2f} GiB resident, all three "
            "models moved on and off; diffusers: enable_layerwise_casting(fp8_e4m3fn, a plain cast) + "
            "enable_model_cpu_offload" + ("" if ctx.cuda else " (no offload on the CPU)"))
    return _capped(ctx, f"4.8B (SANA 1.5) fp8 storage + Gemma-2 + DC-AE, {ctx.args.size}², {ctx.args.steps} steps, "
                   "card capped at 12 GiB", "completes; peak VRAM ≤ 12 GiB", 12, net, enc, vae, ref, note)
