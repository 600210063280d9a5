"""SANA-Video weights written in NVlabs' layout (a ``.pth`` with the tensors under ``state_dict``) come back through
``nvlabs_video_to_diffusers`` as exactly diffusers' state dict, and run exactly as diffusers does."""

import re

import pytest
import torch
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.families import Family, sniff
from sana_comfy.sana_core.load.tensors import read_pickle
from sana_comfy.sana_core.load.video_nvlabs import nvlabs_video_to_diffusers
from sana_comfy.sana_core.load.video_transformer import load_video_transformer
from test_video_transformer import TINY, tiny_video, video_inputs

pytestmark = pytest.mark.parity

# diffusers → NVlabs, written from NVlabs' SanaMSVideo module names (x_embedder, t_embedder, cfg_embedder, t_block,
# y_embedder, attention_y_norm, blocks.N.{attn, cross_attn, mlp}, final_layer); fused tensors are listed separately
RENAMES = [
    (r"patch_embedding\.(.+)", r"x_embedder.proj.\1"),
    (r"time_embed\.(?:emb\.)?timestep_embedder\.linear_1\.(.+)", r"t_embedder.mlp.0.\1"),
    (r"time_embed\.(?:emb\.)?timestep_embedder\.linear_2\.(.+)", r"t_embedder.mlp.2.\1"),
    (r"time_embed\.guidance_embedder\.linear_1\.(.+)", r"cfg_embedder.mlp.0.\1"),
    (r"time_embed\.guidance_embedder\.linear_2\.(.+)", r"cfg_embedder.mlp.2.\1"),
    (r"time_embed\.linear\.(.+)", r"t_block.1.\1"),
    (r"caption_projection\.linear_1\.(.+)", r"y_embedder.y_proj.fc1.\1"),
    (r"caption_projection\.linear_2\.(.+)", r"y_embedder.y_proj.fc2.\1"),
    (r"caption_norm\.weight", r"attention_y_norm.weight"),
    (r"scale_shift_table", r"final_layer.scale_shift_table"),
    (r"proj_out\.(.+)", r"final_layer.linear.\1"),
    (r"transformer_blocks\.(\d+)\.scale_shift_table", r"blocks.\1.scale_shift_table"),
    (r"transformer_blocks\.(\d+)\.attn1\.norm_q\.weight", r"blocks.\1.attn.q_norm.weight"),
    (r"transformer_blocks\.(\d+)\.attn1\.norm_k\.weight", r"blocks.\1.attn.k_norm.weight"),
    (r"transformer_blocks\.(\d+)\.attn1\.to_out\.0\.(.+)", r"blocks.\1.attn.proj.\2"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_q\.(.+)", r"blocks.\1.cross_attn.q_linear.\2"),
    (r"transformer_blocks\.(\d+)\.attn2\.norm_q\.weight", r"blocks.\1.cross_attn.q_norm.weight"),
    (r"transformer_blocks\.(\d+)\.attn2\.norm_k\.weight", r"blocks.\1.cross_attn.k_norm.weight"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_out\.0\.(.+)", r"blocks.\1.cross_attn.proj.\2"),
    (r"transformer_blocks\.(\d+)\.ff\.conv_inverted\.(.+)", r"blocks.\1.mlp.inverted_conv.conv.\2"),
    (r"transformer_blocks\.(\d+)\.ff\.conv_depth\.(.+)", r"blocks.\1.mlp.depth_conv.conv.\2"),
    (r"transformer_blocks\.(\d+)\.ff\.conv_point\.(.+)", r"blocks.\1.mlp.point_conv.conv.\2"),
    (r"transformer_blocks\.(\d+)\.ff\.conv_temp\.weight", r"blocks.\1.mlp.t_conv.weight"),
]


def to_nvlabs(sd: dict[str, torch.Tensor], caption_tokens: int = 300) -> dict[str, torch.Tensor]:
    """A diffusers SanaVideoTransformer3DModel state dict as NVlabs stores it, with the buffers NVlabs keeps too."""
    out, done = {}, set()
    for i in sorted({int(m.group(1)) for k in sd if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}):
        p = f"transformer_blocks.{i}."
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([sd[p + f"attn1.to_{x}.weight"] for x in "qkv"])  # (3D, D)
        done |= {p + f"attn1.to_{x}.weight" for x in "qkv"}
        for s in ("weight", "bias"):  # (2D, D), (2D,)
            out[f"blocks.{i}.cross_attn.kv_linear.{s}"] = torch.cat([sd[p + f"attn2.to_{x}.{s}"] for x in "kv"])
            done |= {p + f"attn2.to_{x}.{s}" for x in "kv"}
    for k, v in sd.items():
        if k in done:
            continue
        new = next((re.sub(f"^{a}$", b, k) for a, b in RENAMES if re.fullmatch(a, k)), None)
        assert new is not None, f"the test's inverse map misses {k}"
        out[new] = v
    d, c = sd["caption_projection.linear_1.weight"].shape
    g = torch.Generator().manual_seed(7)
    out["pos_embed"] = torch.randn(1, 16, d, generator=g)  # NVlabs' sin-cos buffer of the image base class
    out["y_embedder.y_embedding"] = torch.randn(caption_tokens, c, generator=g)  # the null caption
    out["logvar_linear.weight"], out["logvar_linear.bias"] = torch.randn(1, d, generator=g), torch.zeros(1)
    return out


def _config(model) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


@pytest.mark.parametrize("variant", [{}, dict(qk_norm=None), dict(guidance_embeds=True)],
                         ids=["base", "no_qk_norm", "guidance"])
def test_nvlabs_pth_converts_to_diffusers_exactly(tmp_path, variant):
    ref = tiny_video(**variant)
    want = ref.state_dict()
    pth = tmp_path / "SANA_Video_tiny.pth"
    torch.save({"state_dict": to_nvlabs(want), "epoch": 1}, pth)  # NVlabs' save_checkpoint wrapper
    nvlabs = read_pickle(pth)
    assert sniff(nvlabs) is Family.SANA_VIDEO_NVLABS

    got = nvlabs_video_to_diffusers(nvlabs)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape and torch.equal(got[k], want[k]), k

    ours = load_video_transformer(pth, "fp32", config=_config(ref))  # the .pth itself, through the loader
    x, y, mask, t = video_inputs(caption=TINY["caption_channels"])
    kw = {"guidance": torch.tensor([4.5, 3.0])} if variant.get("guidance_embeds") else {}
    with torch.no_grad():
        expected = ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False,
                       **kw)[0]
        out = ours(x, t, y, mask, **kw)
    assert expected.abs().max() > 0.1
    assert (out - expected).abs().max().item() == 0.0


@pytest.mark.parametrize("extra", ["blocks.0.attn.qkv.bias", "image_embedder.proj.weight",
                                   "transformer_blocks.0.ff.conv_temp.weight"])
def test_an_unexpected_key_is_named(extra):
    nvlabs = to_nvlabs(tiny_video().state_dict())
    nvlabs[extra] = torch.zeros(3)
    with pytest.raises(SanaError, match=r"1 tensors have no diffusers counterpart: \['" + re.escape(extra) + r"'\]"):
        nvlabs_video_to_diffusers(nvlabs)


def test_a_published_width_pth_loads_without_a_config(tmp_path):
    """An NVlabs .pth comes without config.json: heads of 112 channels, as in every published model, and the 720p
    bin table when the name says so."""
    ref = tiny_video(num_layers=1, num_attention_heads=2, attention_head_dim=112, num_cross_attention_heads=2,
                     cross_attention_head_dim=112, cross_attention_dim=224)
    for name, sample_size in (("SANA_Video_2B_480p.pth", 30), ("SANA_Video_2B_720p.pth", 22)):
        torch.save({"state_dict": to_nvlabs(ref.state_dict())}, tmp_path / name)
        ours = load_video_transformer(tmp_path / name, "fp32")
        assert (ours.cfg.num_heads, ours.cfg.head_dim, ours.cfg.sample_size) == (2, 112, sample_size)
    x, y, mask, t = video_inputs(caption=TINY["caption_channels"])
    with torch.no_grad():
        expected = ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
        assert (ours(x, t, y, mask) - expected).abs().max().item() == 0.0
