"""Fit latent→RGB preview factors for the DC-AE space by least squares, for anyone holding real weights.

For each image: encode with the DC-AE, scale by 0.41407 (the space samplers preview in), and pair every latent pixel
with the image average-pooled to the latent grid in [-1, 1]. Solve [latent, 1] · W ≈ rgb. Prints the 32×3 factors and
the bias in the form nodes/host/constants.py holds (LATENT_RGB_FACTORS, LATENT_RGB_BIAS).

Run: python scripts/fit_latent_rgb.py --vae <dc-ae folder or file> --images <folder of images> [--size 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # script-only: the package's core as a plain package

from sana_core.load.dcae import load_dcae  # noqa: E402


def fit(vae, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """images: (3, H, W) in [-1, 1], H and W multiples of 32 → (factors (C, 3), bias (3,), rms residual)."""
    xs, ys = [], []
    with torch.no_grad():
        for img in images:
            lat = vae.latent_space.scaled(vae.encode(img[None].to(vae.dtype)).float())  # (1, C, h, w)
            small = F.adaptive_avg_pool2d(img[None].float(), lat.shape[-2:])  # (1, 3, h, w)
            xs.append(lat[0].flatten(1).T)
            ys.append(small[0].flatten(1).T)
    x = torch.cat(xs).double()
    y = torch.cat(ys).double()
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.linalg.lstsq(a, y).solution  # (C+1, 3)
    rms = float((a @ w - y).pow(2).mean().sqrt())
    return w[:-1].float(), w[-1].float(), rms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    vae = load_dcae(args.vae, torch.float32)
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        print(f"no images in {args.images}", file=sys.stderr)
        return 1
    imgs = []
    for p in files:
        im = Image.open(p).convert("RGB").resize((args.size, args.size), Image.LANCZOS)
        imgs.append(torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 127.5 - 1)
    factors, bias, rms = fit(vae, imgs)
    print(f"# fitted on {len(files)} images at {args.size} px; rms residual {rms:.4f}")
    print("LATENT_RGB_FACTORS = [")
    for row in factors.tolist():
        print("    [" + ", ".join(f"{v:.4e}" for v in row) + "],")
    print("]")
    print("LATENT_RGB_BIAS = [" + ", ".join(f"{v:.4f}" for v in bias.tolist()) + "]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
