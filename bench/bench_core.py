"""Benchmark: sana_core vs diffusers on the same random weights of the published configs, alternating in one process.

Times one transformer call (batch 2, as with CFG) of the 0.6B model, plain and as a sampling step (the caption's
cross-attention keys and values kept from the first step, as our sampler runs it), and a DC-AE f32c32 decode and
encode, at 512 and 1024 px, in fp32 and bf16, and prints ours/diffusers ratios and each call's peak RSS. Also
re-measures the matmul roofline.
Run: .sana-env/venv/bin/python bench/bench_core.py [--sizes 512 1024] [--dtypes fp32 bf16] [--repeats 2] [--skip-vae]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # script-only: import the package's core as a plain package

from sana_core import speed  # noqa: E402
from sana_core.dcae import DCAE, DCAEConfig  # noqa: E402
from sana_core.transformer import PRESETS, SanaTransformer  # noqa: E402
from sana_core.weights import load_into  # noqa: E402

DT = {"fp32": torch.float32, "bf16": torch.bfloat16}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    def __enter__(self):
        self.peak, self._stop = rss(), False
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()


def timed(fn, repeats: int) -> tuple[float, int]:
    best, peak = float("inf"), 0
    for _ in range(repeats):
        gc.collect()
        with torch.no_grad(), PeakRSS() as p:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        peak = max(peak, p.peak)
    return best, peak


def roofline() -> dict[str, float]:
    """The best large torch.mm throughput per dtype: 2048² and 4096², best of 3 each (a small probe first: some CPUs
    emulate bf16 at ~1 GFLOP/s, and then 1024² is all it measures)."""
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


def transformer_flops(cfg, n_tokens: int, batch: int, text_len: int = 300) -> float:
    d, h = cfg.dim, cfg.mlp_hidden
    per_tok = 2 * (4 * d * d + 2 * d * d + 2 * d * 2 * h + d * h) + 2 * 2 * d * cfg.head_dim  # attn1, attn2 q/out, ff
    cross = 2 * 2 * d * d * text_len + 2 * 2 * n_tokens * text_len * d  # k/v of the caption, scores and values
    return cfg.num_layers * batch * (per_tok * n_tokens + cross)


def bench_transformer(size: int, dtype: str, repeats: int, peak: dict):
    from diffusers import SanaTransformer2DModel

    cfg = PRESETS["Sana_600M_1024px"]
    torch.manual_seed(0)
    ref = SanaTransformer2DModel(num_attention_heads=36, attention_head_dim=32, num_layers=28,
                                 num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
                                 sample_size=32).eval().requires_grad_(False).to(DT[dtype])
    with torch.device("meta"):
        ours = SanaTransformer(cfg, dtype=DT[dtype])
    load_into(ours, {k: v for k, v in ref.state_dict().items()}, DT[dtype], "bench")
    speed.apply(ours.eval().requires_grad_(False), True)
    b, n = 2, size // 32
    x = torch.randn(b, 32, n, n, dtype=DT[dtype])
    y = torch.randn(b, 300, 2304, dtype=DT[dtype])
    mask = torch.ones(b, 300, dtype=torch.int64)
    mask[0, 20:] = 0
    t = torch.tensor([999.0, 999.0])
    run_ref = lambda: ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False)  # noqa
    run_ours = lambda: (ours.__dict__.pop("_sana_held", None), ours(x, t, y, mask))[1]  # noqa: E731  (nothing kept)
    run_step = lambda: ours(x, t, y, mask)  # noqa: E731  (the same caption every step, as our sampler passes it)
    run_host = lambda: ours(x, t, y.clone(), mask)  # noqa: E731  (the same caption in a new tensor, as ComfyUI)
    with torch.no_grad():
        run_ours(), run_step(), run_step(), run_ref()  # warm-up; the held caption's keys and values are kept
    res = {}
    for _ in range(repeats):  # alternate
        for name, fn in (("ours", run_ours), ("step", run_step), ("host", run_host), ("diffusers", run_ref)):
            res.setdefault(name, []).append(timed(fn, 1))
    o, s, h, d = (min(r[0] for r in res[k]) for k in ("ours", "step", "host", "diffusers"))
    gflops = transformer_flops(cfg, n * n, b) / 1e9
    print(f"transformer 0.6B  {size:4d}px {dtype}  ours {o:7.2f}s  diffusers {d:7.2f}s  ratio {o / d:5.2f}  "
          f"roofline ours {gflops / o / peak[dtype]:5.1%} diffusers {gflops / d / peak[dtype]:5.1%}  "
          f"peak RSS ours {max(r[1] for r in res['ours']) / 2**30:5.2f} GiB diffusers "
          f"{max(r[1] for r in res['diffusers']) / 2**30:5.2f} GiB", flush=True)
    print(f"  a sampling step (caption keys/values kept, as our sampler runs): ours {s:7.2f}s  ratio {s / d:5.2f}",
          flush=True)
    print(f"  a step inside ComfyUI (the same caption in a new tensor each step): ours {h:7.2f}s  ratio {h / d:5.2f}",
          flush=True)


def bench_vae(size: int, dtype: str, repeats: int, encode: bool = True):
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    ref = AutoencoderDC(**{"encoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                           "decoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                           "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
                           "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
                           "encoder_layers_per_block": (2, 2, 2, 3, 3, 3), "decoder_layers_per_block": (3,) * 6,
                           "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
                           "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
                           "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
                           "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu", "scaling_factor": 0.41407}
                        ).eval().requires_grad_(False).to(DT[dtype])
    with torch.device("meta"):
        ours = DCAE(DCAEConfig())
    load_into(ours, dict(ref.state_dict()), DT[dtype], "bench")
    speed.apply(ours.eval().requires_grad_(False), True)
    z = torch.randn(1, 32, size // 32, size // 32, dtype=DT[dtype])
    x = torch.rand(1, 3, size, size, dtype=DT[dtype]) * 2 - 1
    calls = {"decode": (lambda: ours.decode(z, tiling="off"), lambda: ref.decode(z)),
             "encode": (lambda: ours.encode(x, tiling="off"), lambda: ref.encode(x))}
    for what in ("decode", "encode") if encode else ("decode",):
        res = {"ours": [], "diffusers": []}
        for _ in range(repeats):  # alternate
            res["ours"].append(timed(calls[what][0], 1))
            res["diffusers"].append(timed(calls[what][1], 1))
        o, d = min(r[0] for r in res["ours"]), min(r[0] for r in res["diffusers"])
        print(f"dc-ae {what}      {size:4d}px {dtype}  ours {o:7.2f}s  diffusers {d:7.2f}s  ratio {o / d:5.2f}  "
              f"peak RSS ours {max(r[1] for r in res['ours']) / 2**30:5.2f} GiB diffusers "
              f"{max(r[1] for r in res['diffusers']) / 2**30:5.2f} GiB", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--skip-transformer", action="store_true")
    ap.add_argument("--force-bf16", action="store_true", help="run bf16 even where this CPU emulates it")
    args = ap.parse_args()
    peak = roofline()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul roofline fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s", flush=True)
    if "bf16" in args.dtypes and peak["bf16"] < 0.1 * peak["fp32"] and not args.force_bf16:
        print("bf16 skipped: this CPU has no native bf16 matmul (emulated at a few GFLOP/s; a 1024 px step would "
              "take tens of minutes); --force-bf16 runs it anyway", flush=True)
        args.dtypes = [d for d in args.dtypes if d != "bf16"]
    for dtype in args.dtypes:
        for size in args.sizes:
            if not args.skip_transformer:
                bench_transformer(size, dtype, args.repeats, peak)
            if not args.skip_vae:
                bench_vae(size, dtype, args.repeats)


if __name__ == "__main__":
    main()
