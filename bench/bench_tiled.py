"""Benchmark: peak memory of a large tiled DC-AE decode (the target: 4096×4096 under 6 GB of peak RSS).

Builds the published f32c32 DC-AE with random weights (fp32, our loader's meta-device path), decodes a random
latent of the given size with tiling on, and prints the time, the exact peak resident set (VmHWM) and what the
weights and the output image account for. The latent is random, so the image is noise: this measures memory and
time, not quality (the tiled decode's pixels are pinned against diffusers in tests/test_dcae.py).
Run: .sana-env/venv/bin/python bench/bench_tiled.py [--size 4096] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import GiB, hwm, machine
from sana_comfy.sana_core import speed
from sana_comfy.sana_core.dcae import DCAE
from sana_comfy.sana_core.dcae_blocks import DCAEConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = speed.apply(DCAE(DCAEConfig()).eval().requires_grad_(False), True)  # random init, published config, fp32
    weights = sum(p.numel() * p.element_size() for p in ours.parameters())
    z = torch.randn(1, 32, args.size // 32, args.size // 32)
    base = hwm()
    t0 = time.perf_counter()
    with torch.no_grad():
        img = ours.decode(z, tiling="auto")
    dt = time.perf_counter() - t0
    assert img.shape == (1, 3, args.size, args.size) and torch.isfinite(img).all()
    print(f"machine: {machine()}")
    print(f"dc-ae tiled decode {args.size}x{args.size} fp32: {dt:.0f} s, peak RSS {hwm() / GiB:.2f} GiB "
          f"(before decoding {base / GiB:.2f} GiB; weights {weights / GiB:.2f} GiB, "
          f"output image {img.numel() * img.element_size() / GiB:.2f} GiB)", flush=True)


if __name__ == "__main__":
    main()
