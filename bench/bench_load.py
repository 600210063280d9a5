"""Benchmark: loading the published 0.6B transformer from a diffusers folder — sana_core vs diffusers'
from_pretrained, each in a fresh process (alternating), printing time, peak RSS above the import baseline, and the
ratio to the bytes of the weights in the chosen dtype.
Also loads the fp32 folder as bf16 (a conversion while loading).
Run: .sana-env/venv/bin/python bench/bench_load.py [--dtypes float32 bfloat16] [--repeats 2] [--no-convert]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import GiB, diffusers_kwargs
from sana_comfy.sana_core.transformer import PRESETS

BENCH = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import torch
from common import hwm
which, folder, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
if which == "diffusers":
    from diffusers import SanaTransformer2DModel
else:
    from sana_comfy.sana_core.load import load_transformer
base = hwm()
t0 = time.perf_counter()
if which == "diffusers":
    m = SanaTransformer2DModel.from_pretrained(folder, torch_dtype=dtype)
else:
    m = load_transformer(folder, dtype)
# Touch every 4 KiB page of every weight, so both end resident and not just mapped, without a dtype conversion
# (a .float() here would time allocating an fp32 copy of bf16 weights, which neither loader does).
s = sum(p.detach().reshape(-1).view(torch.uint8)[::4096].sum().item() for p in m.parameters())
dt = time.perf_counter() - t0
peak = hwm()
nbytes = sum(p.numel() * p.element_size() for p in m.parameters())
print(json.dumps({{"time": dt, "peak": peak - base, "bytes": nbytes}}))
"""


def run(which: str, folder: Path, dtype: str) -> dict:
    code = CHILD.format(bench=str(BENCH))
    out = subprocess.run([sys.executable, "-c", code, which, str(folder), dtype], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-convert", action="store_true", help="skip loading the fp32 file as bf16")
    args = ap.parse_args()
    import torch
    from diffusers import SanaTransformer2DModel

    cases = [(d, d) for d in args.dtypes] + ([("float32", "bfloat16")] if not args.no_convert else [])
    with tempfile.TemporaryDirectory() as tmp:
        for file_dtype, dtype in cases:
            folder = Path(tmp) / file_dtype
            if not folder.exists():
                torch.manual_seed(0)
                SanaTransformer2DModel(**diffusers_kwargs(PRESETS["Sana_600M_1024px"])).to(
                    getattr(torch, file_dtype)).save_pretrained(folder, max_shard_size="20GB")
            res = {"ours": [], "diffusers": []}
            for _ in range(args.repeats):
                for which in ("ours", "diffusers"):
                    res[which].append(run(which, folder, dtype))
            o = min(res["ours"], key=lambda r: r["time"])
            d = min(res["diffusers"], key=lambda r: r["time"])
            what = dtype if file_dtype == dtype else f"{file_dtype} file as {dtype}"
            print(f"load 0.6B {what:8s} weights {o['bytes'] / GiB:5.2f} GiB | ours {o['time']:6.2f}s peak "
                  f"{o['peak'] / GiB:5.2f} GiB ({o['peak'] / o['bytes']:.2f}x weights) | diffusers {d['time']:6.2f}s "
                  f"peak {d['peak'] / GiB:5.2f} GiB ({d['peak'] / d['bytes']:.2f}x) | time ratio "
                  f"{o['time'] / d['time']:.2f}", flush=True)


if __name__ == "__main__":
    main()
