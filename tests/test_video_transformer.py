"""The SANA-Video transformer against diffusers' SanaVideoTransformer3DModel on the same tiny random weights."""

import math

import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.load.video_transformer import load_video_transformer
from support.models import perturb, save_layouts, tiny_diffusers_transformer

# head dim 12 splits the rotary embedding 4/4/4 over (frame, height, width)
TINY = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=3,
            num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=32,
            sample_size=8)

VARIANTS = {
    "base": {},  # qk_norm "rms_norm_across_heads", no q/k/v bias: diffusers' defaults
    "no_qk_norm_bias": dict(qk_norm=None, attention_bias=True),
    "guidance": dict(guidance_embeds=True),
    "head_dim_16": dict(attention_head_dim=16, cross_attention_head_dim=16, cross_attention_dim=32),  # split 8/4/4
}


def tiny_video(seed: int = 0, **overrides):
    from diffusers import SanaVideoTransformer3DModel

    torch.manual_seed(seed)
    return perturb(SanaVideoTransformer3DModel(**{**TINY, **overrides}).eval(), seed)


def save_video_layouts(model, root):
    """The diffusers folder, a repo holding it as transformer/, and a lone single file."""
    model.save_pretrained(root / "repo" / "transformer")
    (root / "single").mkdir()
    single = root / "single" / "sana_video.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, single)
    return {"folder": root / "repo" / "transformer", "repo": root / "repo", "single": single}


def video_inputs(frames=3, h=6, w=8, batch=2, seed=1, length=7, channels=4, caption=32):
    """(x, caption, caption mask, timesteps) for a TINY video transformer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, frames, h, w, generator=g)
    y = torch.randn(batch, length, caption, generator=g)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, 3:] = 0  # padded caption for sample 0
    t = torch.tensor([999.0, 417.0])[:batch]
    return x, y, mask, t


def _calls(ref, ours, x, y, mask, t, **kw):
    with torch.no_grad():
        want = ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False, **kw)[0]
        got = ours(x, t, y, mask, **kw)
    return got, want


def _close(got, want, tol=1e-5):
    assert got.shape == want.shape
    assert want.abs().max() > 0.1  # the tiny model gives a real signal
    assert (got - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("frames", [1, 3, 5])
@pytest.mark.parametrize("masked", [True, False])
def test_forward_matches_diffusers(tmp_path, variant, frames, masked):
    ref = tiny_video(**VARIANTS[variant])
    ours = load_video_transformer(save_video_layouts(ref, tmp_path)["folder"], "fp32")
    caption = TINY["caption_channels"]
    x, y, mask, t = video_inputs(frames=frames, caption=caption)
    kw = {"guidance": torch.tensor([4.5, 3.0])} if variant == "guidance" else {}
    got, want = _calls(ref, ours, x, y, mask if masked else None, t, **kw)
    assert got.shape == x.shape
    _close(got, want)


@pytest.mark.parity
@pytest.mark.parametrize("frames", [3, 5])
def test_image_to_video_timestep_matches_diffusers(tmp_path, frames):
    """diffusers' image-to-video call: one timestep per patch token, (B, 1, F', H', W'), 0 on the start frame."""
    ref = tiny_video()
    ours = load_video_transformer(save_video_layouts(ref, tmp_path)["folder"], "fp32")
    x, y, mask, t = video_inputs(frames=frames)
    cond = torch.zeros(2, 1, frames, 3, 4)  # the patch grid of (frames, 6, 8) latents
    cond[:, :, 0] = 1.0
    per_token = t[:, None, None, None, None].expand(cond.shape) * (1 - cond)
    got, want = _calls(ref, ours, x, y, mask, per_token)
    _close(got, want)
    flat, _ = _calls(ref, ours, x, y, mask, per_token.flatten(1))  # (B, N): the same call
    assert torch.equal(flat, got)
    plain, _ = _calls(ref, ours, x, y, mask, t)
    assert (plain - got).abs().max() > 1e-3  # frame 0's timestep reached the result


@pytest.mark.parity
def test_bf16_forward_close_to_diffusers(tmp_path):
    ref = tiny_video()
    ours = load_video_transformer(save_video_layouts(ref, tmp_path)["folder"], "bf16")
    x, y, mask, t = video_inputs()
    got, want = _calls(ref.to(torch.bfloat16), ours, x.bfloat16(), y.bfloat16(), mask, t)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max().item() <= 2e-2 * max(1.0, want.float().abs().max().item())


@pytest.mark.unit
@pytest.mark.parametrize("layout", ["folder", "repo", "single_beside_config", "single_with_config"])
def test_every_layout_loads_the_same_weights(tmp_path, layout):
    ref = tiny_video(attention_bias=True)
    paths = save_video_layouts(ref, tmp_path)
    cfg = {k: v for k, v in ref.config.items() if not k.startswith("_")}
    if layout == "single_beside_config":
        ours = load_video_transformer(paths["folder"] / "diffusion_pytorch_model.safetensors", "fp32")
    elif layout == "single_with_config":
        ours = load_video_transformer(paths["single"], "fp32", config=cfg)
    else:
        ours = load_video_transformer(paths[layout], "fp32")
    want, got = ref.state_dict(), ours.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert ours.cfg.patch_size == (1, 2, 2) and ours.cfg.attention_bias


def _without_config(tmp_path):
    return save_video_layouts(tiny_video(), tmp_path)["single"], {}


def _disagreeing_config(tmp_path):
    ref = tiny_video()
    cfg = {**{k: v for k, v in ref.config.items() if not k.startswith("_")}, "num_layers": 4}
    return save_video_layouts(ref, tmp_path)["single"], {"config": cfg}


def _image_checkpoint(tmp_path):
    return save_layouts(tiny_diffusers_transformer(), tmp_path)["single_diffusers"], {}


@pytest.mark.unit
@pytest.mark.parametrize("given,message", [
    (_without_config, r"sana_video\.safetensors: no config\.json for this SANA-Video transformer \(hidden size 24, 3 "
                      r"layers, patch \(1, 2, 2\)\): its attention heads"),
    (_disagreeing_config, r"config\.json disagrees with the weights: num_layers: config 4 vs weights 3"),
    (_image_checkpoint, r"single_diffusers\.safetensors: this looks like a Sana transformer, load it with Sana Load "
                        r"Transformer\. Found .*; expected SANA-Video keys"),
], ids=["single file without config", "config disagrees", "an image checkpoint"])
def test_the_video_loader_refuses_with_one_clear_error(tmp_path, given, message):
    path, kw = given(tmp_path)
    with pytest.raises(SanaError, match=message):
        load_video_transformer(path, **kw)


@pytest.mark.unit
@pytest.mark.parametrize("layout", ["folder", "single"])
def test_video_checkpoint_given_to_the_image_loader(tmp_path, layout):
    paths = save_video_layouts(tiny_video(), tmp_path)
    name = "diffusion_pytorch_model" if layout == "folder" else "sana_video"
    with pytest.raises(SanaError, match=rf"{name}\.safetensors: not a Sana transformer checkpoint: this is a "
                                        r"SANA-Video transformer, load it with Sana Load Transformer"):
        load_transformer(paths[layout], config=None)


@pytest.mark.unit
def test_timestep_of_the_wrong_size(tmp_path):
    ours = load_video_transformer(save_video_layouts(tiny_video(), tmp_path)["folder"], "fp32")
    x, y, mask, _ = video_inputs()
    n = math.prod((3, 3, 4))
    with pytest.raises(ValueError, match=rf"expected 2 values \(one per sample\) or {2 * n}"):
        ours(x, torch.zeros(2, 3), y, mask)


@pytest.mark.unit
def test_nvlabs_video_checkpoint_is_refused_by_the_image_loader(tmp_path):
    """NVlabs keys (``blocks.N.mlp.t_conv`` marks the video model): told apart from the image model's."""
    sd = {"blocks.0.attn.qkv.weight": torch.zeros(6, 2), "blocks.0.cross_attn.kv_linear.weight": torch.zeros(4, 2),
          "blocks.0.mlp.t_conv.weight": torch.zeros(2, 2, 3, 1), "x_embedder.proj.weight": torch.zeros(2, 4, 1, 2, 2)}
    path = tmp_path / "SANA_Video_2B_480p.safetensors"
    save_file(sd, path)
    with pytest.raises(SanaError, match=r"SANA_Video_2B_480p\.safetensors: not a Sana transformer checkpoint: this is "
                                        r"a SANA-Video transformer, load it with Sana Load Transformer"):
        load_transformer(path)


@pytest.mark.parity
@pytest.mark.parametrize("storage, tol", [("int8", 0.02), ("fp8_e4m3fn", 0.1)])
def test_8_bit_storage_stays_close(tmp_path, storage, tol):
    """Layers of at least 4096 weights are stored in 8 bits with per-row scales; the output stays within ``tol``
    (relative) of the full-precision model's."""
    from sana_comfy.sana_core.quant import QuantWeight

    wide = dict(num_attention_heads=4, attention_head_dim=24, num_cross_attention_heads=4, cross_attention_head_dim=24,
                cross_attention_dim=96, caption_channels=64)
    folder = save_video_layouts(tiny_video(**wide), tmp_path)["folder"]
    full = load_video_transformer(folder, "fp32")
    quant = load_video_transformer(folder, "fp32" if storage == "int8" else "bf16", storage=storage)
    assert sum(isinstance(m, QuantWeight) for m in quant.modules()) >= 3 * 4  # attention and FFN layers of each block
    x, y, mask, t = video_inputs(caption=64)
    with torch.no_grad():
        want = full(x, t, y, mask)
        got = quant(x.to(quant.dtype), t, y.to(quant.dtype), mask).float()
    assert (got - want).norm() / want.norm() < tol


@pytest.mark.parity
def test_kept_caption_keys_and_values_are_bit_identical(tmp_path):
    """The speed layer keeps the caption's cross-attention keys and values from a context's second sighting (ComfyUI
    passes the same caption in a new tensor each step); every step equals the reference form's bit for bit, and an
    edited weight is seen."""
    from sana_comfy.sana_core import caches, speed

    folder = save_video_layouts(tiny_video(), tmp_path)["folder"]
    ours, plain = load_video_transformer(folder, "fp32"), speed.apply(load_video_transformer(folder, "fp32"), False)
    assert type(ours).__name__ == "FastSanaVideoTransformer" and type(plain).__name__ == "SanaVideoTransformer"
    x, y, mask, t = video_inputs()
    with torch.no_grad():
        for step in range(3):
            assert torch.equal(ours(x * (1 + step), t - 100 * step, y.clone(), mask),
                               plain(x * (1 + step), t - 100 * step, y, mask))
        assert caches.peek(ours, "captions")[0].value is not None
        ours.transformer_blocks[0].attn2.to_v.weight.mul_(2)
        plain.transformer_blocks[0].attn2.to_v.weight.mul_(2)
        assert torch.equal(ours(x, t, y, mask), plain(x, t, y, mask))
