"""LoRA in ``sana_core/lora.py`` and through the loader nodes in-process (ComfyUI's patcher): every published layout
gives diffusers' fused weights; strength, stacking and the untouched base; 8-bit storage; kept caches see patched
weights; bad files fail clearly. (Inside ComfyUI: test_lora_host.py.)"""

import logging

import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.sana_core import caches, lora, speed
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.quant import QuantWeight
from support.lora import (
    LAYOUTS,
    diffusers_lora_image,
    diffusers_lora_transformer,
    foreign_lora,
    gemma_lora,
    mismatched_lora,
    peft_lora,
    save_layout,
)
from support.models import TINY, save_layouts, tiny_diffusers_transformer

RANK, ALPHA = 4, 8.0


# wide enough that int8 storage takes every attention and FFN layer (≥ 4096 weights)
WIDE = dict(num_attention_heads=4, attention_head_dim=32, num_cross_attention_heads=4, cross_attention_head_dim=32,
            cross_attention_dim=128)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    ref = tiny_diffusers_transformer(**WIDE)
    folder = save_layouts(ref, tmp)["folder"]
    sd = peft_lora(ref, rank=RANK, seed=1)
    return ref, folder, sd, tmp


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 32, 6, 10, generator=g), torch.randn(2, 12, TINY["caption_channels"], generator=g)
    return x, torch.tensor([900.0, 300.0]), y, torch.ones(2, 12, dtype=torch.int64)


def _call(m, inputs):
    x, t, y, mask = inputs
    with torch.no_grad():
        return m(x, t, y, mask)


@pytest.mark.parity
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_diffusers_fused_weights(models, layout):
    ref, folder, sd, tmp = models
    ours = load_transformer(folder, "fp32")
    peft_file = save_layout(sd, tmp / "peft.safetensors", "peft", alpha=ALPHA)
    want = diffusers_lora_transformer(ref, peft_file, 0.7).state_dict()
    got = lora.apply(ours, lora.read(save_layout(sd, tmp / f"{layout}.safetensors", layout, alpha=ALPHA)),
                     "transformer", 0.7, layout).state_dict()
    changed = [k for k in got if not torch.equal(got[k], ours.state_dict()[k])]
    assert len(changed) == len(sd) // 2  # every LoRA'd layer, Linear and 1×1 conv, and nothing else
    for k in changed:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)


@pytest.mark.unit
def test_strength_stacking_and_the_untouched_base(models):
    ref, folder, sd, tmp = models
    ours = load_transformer(folder, "fp32")
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    inputs = _inputs()
    plain = _call(ours, inputs)
    f = lora.read(save_layout(sd, tmp / "s.safetensors", "peft", alpha=ALPHA))
    zero = lora.apply(ours, f, "transformer", 0.0, "s")
    assert torch.equal(_call(zero, inputs), plain)  # strength 0 = no LoRA, bit for bit
    once = lora.apply(ours, f, "transformer", 0.8, "s")
    twice = lora.apply(lora.apply(ours, f, "transformer", 0.4, "s"), f, "transformer", 0.4, "s")
    neg = lora.apply(ours, f, "transformer", -0.8, "s")
    a, b = _call(once, inputs), _call(twice, inputs)
    assert (a - plain).abs().max() > 1e-2
    assert (a - b).abs().max() <= 1e-4  # two at s/2 = one at s
    w, w_once, w_neg = ours.state_dict(), once.state_dict(), neg.state_dict()
    for k in w:  # a negative strength subtracts the same delta
        torch.testing.assert_close(w_neg[k] - w[k], w[k] - w_once[k], rtol=0, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())  # the base never changes
    assert torch.equal(_call(ours, inputs), plain)


@pytest.mark.unit
@pytest.mark.parametrize("storage,bound", [("int8", 0.02), ("fp8_e4m3fn", 0.1)])
def test_8bit_storage_takes_the_lora(models, storage, bound):
    """8-bit weights: dequantize, add the delta in the compute dtype, compute. The LoRA's effect on the output is
    the fp32 model's within 2 % of its size with int8 (10 % with fp8); the base 8-bit model is untouched."""
    ref, folder, sd, tmp = models
    fp32, int8 = load_transformer(folder, "fp32"), load_transformer(folder, "fp32", storage=storage)
    assert len([m for m in lora.layers(int8).values() if isinstance(m, QuantWeight)]) >= len(sd) // 2
    f = lora.read(save_layout(sd, tmp / "q.safetensors", "peft", alpha=ALPHA))
    inputs = _inputs()
    base8 = _call(int8, inputs)
    effect32 = _call(lora.apply(fp32, f, "transformer", 1.0, "q"), inputs) - _call(fp32, inputs)
    effect8 = _call(lora.apply(int8, f, "transformer", 1.0, "q"), inputs) - base8
    assert (effect8 - effect32).abs().max() <= bound * effect32.abs().max()
    assert torch.equal(_call(int8, inputs), base8)


@pytest.mark.unit
@pytest.mark.parametrize("int8", [False, True])
def test_kept_caption_keys_values_see_a_lora_patched_in_after_a_run(models, int8):
    """As ComfyUI's patcher does it: after runs that kept the caption's keys and values, the same module's weights
    are replaced by patched ones (fp32: new Parameters; int8: ``set_weight``); the next call uses them."""
    ref, folder, sd, tmp = models
    m = speed.apply(load_transformer(folder, "fp32", int8=int8), True)
    f = lora.read(save_layout(sd, tmp / "c.safetensors", "peft", alpha=ALPHA))
    inputs = _inputs()
    for _ in range(3):
        plain = _call(m, inputs)
    assert caches.peek(m, "captions")[0].value is not None
    want = _call(lora.apply(m, f, "transformer", 1.0, "c"), inputs)
    for prefix, key in lora.match(f, lora.key_map(lora.layers(m), "transformer")).targets.items():
        layer = lora.layers(m)[key.removesuffix(".weight")]
        base = layer.dequantize() if int8 else layer.weight
        new = lora.merged(f, prefix, base, 1.0, "c")
        if int8:
            layer.set_weight(new)
        else:
            layer.weight = torch.nn.Parameter(new, requires_grad=False)
    got = _call(m, inputs)
    assert (got - plain).abs().max() > 1e-2
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.unit
@pytest.mark.parametrize("kind,looks", [("sdxl", "SDXL"), ("sd15", "Stable Diffusion 1.x"), ("flux", "Flux")])
def test_another_familys_lora_is_refused_by_name(models, kind, looks):
    ref, folder, sd, tmp = models
    ours = load_transformer(folder, "fp32")
    path = tmp / f"{kind}.safetensors"
    save_file(foreign_lora(kind), path)
    with pytest.raises(SanaError, match=rf"{kind}\.safetensors.*0 of its \d+ keys.*{looks}"):
        lora.apply(ours, lora.read(path), "transformer", 1.0, path.name)


@pytest.mark.unit
def test_shape_mismatch_partial_match_and_bad_files(models, caplog):
    ref, folder, sd, tmp = models
    ours = load_transformer(folder, "fp32")
    with pytest.raises(SanaError, match=r"does not fit this Sana model: .*is for a \(\d+, \d+\).*is \(\d+, \d+\)"):
        lora.apply(ours, mismatched_lora(RANK), "transformer", 1.0, "big.safetensors")
    partial = {**sd, **foreign_lora("flux")}
    with caplog.at_level(logging.WARNING, logger="sana"):
        out = lora.apply(ours, partial, "transformer", 1.0, "partial")
    assert f"{len(foreign_lora('flux'))} of its {len(partial)} keys name no layer" in caplog.text
    assert not torch.equal(_call(out, _inputs()), _call(ours, _inputs()))  # the matching part was applied
    good = save_layout(sd, tmp / "t.safetensors", "peft", alpha=ALPHA)
    cut = tmp / "truncated.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(SanaError, match="truncated"):
        lora.read(cut)
    evil = tmp / "evil.pt"
    evil.write_bytes(b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.")
    with pytest.raises(SanaError):
        lora.read(evil)


@pytest.mark.unit
def test_gemma_lora_on_the_text_encoder(tiny_repo):
    """Gemma parts (``text_encoder.…``, ``lora_te_…``) patch the text encoder; both layouts give the same weights;
    the base encoder is untouched."""
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder

    enc = load_text_encoder(tiny_repo, torch.float32, device="cpu")
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    got = {}
    for layout in ("peft", "kohya"):
        f = gemma_lora(enc.model, rank=RANK, seed=3, layout=layout)
        got[layout] = lora.apply(enc.model, f, "text_encoder", 1.0, layout).state_dict()
    changed = [k for k in before if not torch.equal(got["peft"][k], before[k])]
    assert changed and all(".self_attn." in k for k in changed)
    for k in before:
        torch.testing.assert_close(got["kohya"][k], got["peft"][k], rtol=0, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in enc.model.state_dict().items())


@pytest.mark.parity
def test_loader_nodes_in_process_match_diffusers(models_dir, pipeline_nodes, tiny_repo):
    """SanaLoraLoaderModelOnly → SanaSample → SanaDecode equals diffusers' load_lora_weights + fuse_lora at the
    same strength within 2/255; the input model is unchanged (its image is the plain one, bit for bit)."""
    import diffusers
    from sana_comfy.nodes import NODES as N

    pipe = diffusers.SanaPipeline.from_pretrained(tiny_repo, torch_dtype=torch.float32)
    sd = peft_lora(pipe.transformer, rank=RANK, seed=2)
    (models_dir / "loras").mkdir(exist_ok=True)
    path = save_layout(sd, models_dir / "loras" / "tiny_peft.safetensors", "peft", alpha=ALPHA)
    text, steps, seed, size = "a lighthouse on a cliff, lowercase", 6, 11, 256
    model, te, vae = pipeline_nodes

    def image(m):
        pos = N["SanaEncodePrompt"].execute(te, text, True, 300)[0]
        neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
        latent = N["SanaEmptyLatent"].execute(size, size, 1, False, m)[0]
        out = N["SanaSample"].execute(m, pos, neg, latent, seed, steps, 4.5, "flow_dpm_solver", 0.0, 0.0, 0.0, "4",
                                       1.0)[0]
        return N["SanaDecode"].execute(vae, out, "off")[0]

    plain = image(model)
    (patched,) = N["SanaLoraLoaderModelOnly"].execute(model, path.name, 0.6)
    got = image(patched)
    want = diffusers_lora_image(tiny_repo, path, 0.6, prompt=text, negative_prompt="", seed=seed,
                                num_inference_steps=steps, guidance_scale=4.5, height=size, width=size)
    assert (got - want.reshape(got.shape)).abs().max().item() * 255 <= 2
    assert (got - plain).abs().max().item() * 255 > 4  # the LoRA shows
    assert torch.equal(image(model), plain)
    model2, te2 = N["SanaLoraLoader"].execute(model, te, path.name, 0.6, 1.0)
    assert te2 is te  # a transformer-only file leaves the text encoder as it was
    assert torch.equal(image(model2), got)


@pytest.mark.unit
def test_a_lora_on_a_3x3_conv(models):
    """kohya-style LoRA on the depthwise 3×3 conv of the Mix-FFN: a k×k down, a 1×1 up, alpha from the key."""
    ref, folder, sd, tmp = models
    ours = load_transformer(folder, "fp32")
    w = ours.transformer_blocks[1].ff.conv_depth.weight  # (C, 1, 3, 3)
    g = torch.Generator().manual_seed(5)
    down, up = torch.randn(2, *w.shape[1:], generator=g), torch.randn(w.shape[0], 2, 1, 1, generator=g)
    f = {"lora_unet_transformer_blocks_1_ff_conv_depth.lora_down.weight": down,
         "lora_unet_transformer_blocks_1_ff_conv_depth.lora_up.weight": up,
         "lora_unet_transformer_blocks_1_ff_conv_depth.alpha": torch.tensor(1.0)}
    got = lora.apply(ours, f, "transformer", 2.0, "dw").transformer_blocks[1].ff.conv_depth.weight
    want = w + 2.0 * 0.5 * (up[:, :, 0, 0] @ down.flatten(1)).view(w.shape)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
