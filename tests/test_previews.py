"""Preview helpers: the latent→RGB fit script and the TAESANA decoder layout."""

import importlib.util

import pytest
import torch
from sana_comfy.sana_core.dcae import DCAE, DCAEConfig
from sana_comfy.sana_core.load.taesana import load_taesana_decoder
from sana_comfy.sana_core.taesana import taesana_decoder
from support import ROOT
from support.models import perturb
from support.pipeline import TINY_DCAE32

pytestmark = pytest.mark.unit


def _fit_module():
    spec = importlib.util.spec_from_file_location("fit_latent_rgb", ROOT / "scripts" / "fit_latent_rgb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_latent_rgb_beats_a_constant_preview():
    cfg = DCAEConfig.from_diffusers({"_class_name": "AutoencoderDC", **{k: list(v) if isinstance(v, tuple) else v
                                                                         for k, v in TINY_DCAE32.items()}})
    torch.manual_seed(0)
    vae = perturb(DCAE(cfg), std=0.05).eval()
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(6)]
    factors, bias, rms = _fit_module().fit(vae, imgs)
    assert factors.shape == (32, 3) and bias.shape == (3,)
    target = torch.cat([torch.nn.functional.adaptive_avg_pool2d(i[None], (2, 2))[0].flatten(1).T for i in imgs])
    assert rms < float((target - target.mean(0)).pow(2).mean().sqrt())  # better than the best constant colour


def test_taesana_layout_round_trips(tmp_path):
    torch.manual_seed(0)
    sd = taesana_decoder().state_dict()
    torch.save(sd, tmp_path / "taesana_decoder.pth")
    dec = load_taesana_decoder(tmp_path / "taesana_decoder.pth")
    assert all(torch.equal(dec.state_dict()[k], v) for k, v in sd.items())
    assert dec(torch.randn(1, 32, 2, 3)).shape == (1, 3, 64, 96)  # 32× upscale
