"""8-bit weight storage (int8, fp8): resident bytes of the published configs, and outputs close to full
precision."""

import math

import pytest
import torch
from sana_comfy.sana_core import speed
from sana_comfy.sana_core.load.text_encoder import load_text_encoder
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.pipeline import SampleOptions, text_to_image
from sana_comfy.sana_core.quant import QuantWeight, quantize
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer
from support.models import resident_bytes, save_layouts, tiny_diffusers_transformer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("storage", ["int8", "fp8_e4m3fn", "fp8_e5m2"])
@pytest.mark.parametrize("name", ["Sana_600M_1024px", "Sana_1600M_1024px", "SANA1.5_4.8B_1024px"])
def test_transformer_resident_weights_are_at_most_052_of_bf16(name, storage):
    with torch.device("meta"):
        bf16 = resident_bytes(SanaTransformer(PRESETS[name], dtype=torch.bfloat16))
        q = resident_bytes(quantize(SanaTransformer(PRESETS[name], dtype=torch.bfloat16), torch.bfloat16, storage))
    assert q <= 0.52 * bf16, q / bf16


def _layer_shapes() -> list[tuple[int, ...]]:
    """Every distinct shape of the layers 8-bit storage takes, over all published variants."""
    shapes = set()
    for cfg in PRESETS.values():
        with torch.device("meta"):
            m = SanaTransformer(cfg.replace(num_layers=1), dtype=torch.bfloat16)
        shapes |= {tuple(x.weight.shape) for x in m.modules()
                   if isinstance(x, (torch.nn.Linear, torch.nn.Conv2d)) and x.weight.numel() >= 4096}
    return sorted(shapes)


@pytest.mark.parametrize("storage,db", [("int8", 50.0), ("fp8_e4m3fn", 40.0), ("fp8_e5m2", 35.0)])
def test_8bit_storage_round_trips_every_variants_weights(storage, db):
    """bf16-valued weights (N(0, 0.02²)) of every layer shape of every published variant, stored in 8 bits and
    widened again: PSNR (peak: the largest weight) at least ``db``."""
    g = torch.Generator().manual_seed(0)
    shapes = _layer_shapes()
    assert len(shapes) >= 15
    for shape in shapes:
        w = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16).float()
        back = QuantWeight(w, None, torch.float32, storage).dequantize()
        psnr = 10 * math.log10(w.abs().max().item() ** 2 / (back - w).pow(2).mean().item())
        assert psnr >= db, (shape, psnr)


def test_gemma_resident_weights_are_at_most_055_of_bf16():
    from transformers import Gemma2Config, Gemma2Model

    cfg = Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256)
    with torch.device("meta"):
        bf16 = resident_bytes(Gemma2Model(cfg).to(torch.bfloat16))
        q = resident_bytes(quantize(Gemma2Model(cfg).to(torch.bfloat16), torch.bfloat16, "int8"))
    assert q <= 0.55 * bf16, q / bf16


@pytest.mark.parametrize("storage,bound", [("int8", 0.02), ("fp8_e4m3fn", 0.06), ("fp8_e5m2", 0.15)])
def test_8bit_transformer_close_to_fp32(tmp_path, storage, bound):
    ref = tiny_diffusers_transformer(num_attention_heads=4, attention_head_dim=32, num_cross_attention_heads=4,
                                     cross_attention_head_dim=32, cross_attention_dim=128)
    folder = save_layouts(ref, tmp_path)["folder"]
    full, q = load_transformer(folder, "fp32"), load_transformer(folder, "fp32", storage=storage)
    assert resident_bytes(q) < 0.3 * resident_bytes(full)  # 8 bits against fp32
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 32, 6, 8, generator=g), torch.randn(2, 10, 64, generator=g)
    mask, t = torch.ones(2, 10, dtype=torch.int64), torch.tensor([900.0, 300.0])
    with torch.no_grad():
        a, b = full(x, t, y, mask), q(x, t, y, mask)
    rel = ((a - b).norm() / a.norm()).item()
    print(f"{storage}: relative error {rel:.4f}")
    assert 0 < rel < bound, rel


def test_int8_pipeline_psnr(tiny_repo, capsys):
    """Whole text-to-image with an int8 transformer and text encoder against full precision, same seed."""
    from sana_comfy.sana_core.load.dcae import load_dcae

    vae = load_dcae(tiny_repo, torch.float32)
    imgs = []
    for int8 in (False, True):
        model = load_transformer(tiny_repo, "fp32", int8=int8)
        te = load_text_encoder(tiny_repo, torch.float32, int8=int8)
        imgs.append(text_to_image(model, te, vae, "a red fox in the snow", height=256, width=256, seed=4,
                                  opts=SampleOptions(steps=6)))
    mse = (imgs[0] - imgs[1]).pow(2).mean().item()
    psnr = 10 * torch.log10(torch.tensor(1.0 / mse)).item()
    with capsys.disabled():
        print(f"\nint8 vs fp32, tiny pipeline, 256 px, 6 steps: PSNR {psnr:.1f} dB")
    assert psnr > 30, psnr


def test_int8_transformer_in_the_fused_forms(tmp_path):
    """The fused-layout blocks (GPU, CPU fp32) read 8-bit weights too (dequantized per layer): they equal the plain
    forms of the same int8 model."""
    ref = tiny_diffusers_transformer(num_attention_heads=4, attention_head_dim=32, num_cross_attention_heads=4,
                                     cross_attention_head_dim=32, cross_attention_dim=128)
    q = load_transformer(save_layouts(ref, tmp_path)["folder"], "fp32", int8=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 32, 6, 8, generator=g), torch.randn(2, 10, 64, generator=g)
    mask, t = torch.ones(2, 10, dtype=torch.int64), torch.tensor([900.0, 300.0])
    with torch.no_grad(), speed.policy.forced(fused_blocks=True):  # as on every kind of machine where they run
        fused = q(x, t, y, mask)
        speed.apply(q, False)
        plain = q(x, t, y, mask)
    assert not torch.equal(fused, plain)  # the fused forms ran
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_fp8_weight_dtype_through_the_loader_node(models_dir):
    """weight_dtype fp8_e4m3fn: 8-bit float storage for the large layers, bf16 compute; it samples a finite latent
    close to the bf16 model's."""
    from sana_comfy.nodes import NODES as N
    from sana_comfy.sana_core.quant import QuantWeight

    name = "Sana_600M_1024px_diffusers"
    out = {}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 32, 4, 4, generator=g), torch.randn(1, 5, 64, generator=g)
    for dtype in ("bf16", "fp8_e4m3fn"):
        (model,) = N["SanaLoadTransformer"].execute(name, dtype).result
        assert model.module.dtype == torch.bfloat16
        layers = [m for m in model.module.modules() if isinstance(m, QuantWeight)]
        assert bool(layers) == (dtype != "bf16")
        assert all(m.weight.dtype == torch.float8_e4m3fn for m in layers)
        with torch.no_grad():
            out[dtype] = model.get()(x.bfloat16(), torch.tensor([500.0]), y.bfloat16()).float()
    assert torch.isfinite(out["fp8_e4m3fn"]).all()
    rel = ((out["fp8_e4m3fn"] - out["bf16"]).norm() / out["bf16"].norm()).item()
    assert 0 < rel < 0.05, rel
