"""Key maps, variant detection and presets (full-size configs on the meta device), and loader errors."""

import json

import pytest
import torch
from fixtures_model import diffusers_to_original, save_layouts, tiny_diffusers_transformer
from safetensors.torch import save_file
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.loader import count_params, detect_config, load_transformer, original_to_diffusers
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer

PARAMS = {
    "Sana_600M_512px": 591_747_872, "Sana_600M_1024px": 591_747_872,
    "Sana_1600M_512px": 1_604_462_752, "Sana_1600M_1024px": 1_604_462_752,
    "Sana_1600M_2Kpx": 1_604_462_752, "Sana_1600M_4Kpx": 1_604_462_752,
    "SANA1.5_1.6B_1024px": 1_604_641_952, "SANA1.5_4.8B_1024px": 4_721_825_952,
    "Sana_Sprint_0.6B_1024px": 593_501_216, "Sana_Sprint_1.6B_1024px": 1_610_237_472,
}


def _diffusers_kwargs(cfg):
    return dict(num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, num_layers=cfg.num_layers,
                num_cross_attention_heads=cfg.cross_heads, cross_attention_head_dim=cfg.cross_head_dim,
                cross_attention_dim=cfg.dim, sample_size=cfg.sample_size, interpolation_scale=cfg.interpolation_scale,
                qk_norm="rms_norm_across_heads" if cfg.qk_norm else None, guidance_embeds=cfg.guidance_embeds)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_keys_shapes_and_counts_match_diffusers(name):
    from diffusers import SanaTransformer2DModel

    cfg = PRESETS[name]
    with torch.device("meta"):
        ours = {k: v.shape for k, v in SanaTransformer(cfg).state_dict().items()}
        ref = {k: v.shape for k, v in SanaTransformer2DModel(**_diffusers_kwargs(cfg)).state_dict().items()
               if k != "patch_embed.pos_embed"}
    assert ours == ref
    assert count_params(cfg) == PARAMS[name]


@pytest.mark.parametrize("name", list(PRESETS))
def test_original_key_set_maps_exactly(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        sd = SanaTransformer(cfg).state_dict()
    orig = diffusers_to_original(sd)
    orig["pos_embed"] = torch.empty(1, cfg.sample_size**2, cfg.dim, device="meta")
    orig["y_embedder.y_embedding"] = torch.empty(300, 2304, device="meta")
    mapped = original_to_diffusers(orig)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in sd.items()}
    # and the variant is read back off the mapped tensors alone (no config)
    got = detect_config(mapped, None, f"{name}.pth", pos_embed=orig["pos_embed"])
    assert got.replace(flow_shift=cfg.flow_shift) == cfg


def test_resolution_from_file_name_without_config():
    with torch.device("meta"):
        sd = SanaTransformer(PRESETS["Sana_1600M_1024px"]).state_dict()
    assert detect_config(sd, None, "x/Sana_1600M_4Kpx_BF16.safetensors") == PRESETS["Sana_1600M_4Kpx"]
    assert detect_config(sd, None, "x/sana_512px.safetensors").sample_size == 16
    assert detect_config(sd, None, "x/my_sana.safetensors").sample_size == 32  # documented default
    assert detect_config(sd, None, "x/my_sana.safetensors", sample_size=64).interpolation_scale == 1.0


def test_whole_repo_layout_and_scheduler_shift(tmp_path):
    ref = tiny_diffusers_transformer()
    ref.save_pretrained(tmp_path / "repo" / "transformer")
    (tmp_path / "repo" / "scheduler").mkdir()
    (tmp_path / "repo" / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 4.0}))
    (tmp_path / "repo" / "model_index.json").write_text("{}")
    m = load_transformer(tmp_path / "repo", "fp32")
    assert m.cfg.flow_shift == 4.0 and m.cfg.num_layers == 3


def test_sharded_and_variant_folders(tmp_path):
    ref = tiny_diffusers_transformer()
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert list((tmp_path / "sharded").glob("*.index.json"))
    ref.to(torch.bfloat16).save_pretrained(tmp_path / "variant", variant="bf16")
    a = load_transformer(tmp_path / "sharded", "fp32")
    b = load_transformer(tmp_path / "variant")
    assert b.dtype == torch.bfloat16
    for k, v in ref.state_dict().items():
        assert torch.equal(a.state_dict()[k].bfloat16(), v) and torch.equal(b.state_dict()[k], v)


# --- bad input: one SanaError each, naming the file and what was found vs expected ----------------------------------

def _save(tmp_path, name, sd):
    p = tmp_path / name
    save_file(sd, p)
    return p


def test_sdxl_like_checkpoint_refused(tmp_path):
    p = _save(tmp_path, "sdxl.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
                                             "model.diffusion_model.out.2.weight": torch.zeros(4)})
    with pytest.raises(SanaError, match=r"sdxl\.safetensors.*Stable Diffusion / SDXL UNet"):
        load_transformer(p)


def test_flux_like_checkpoint_refused(tmp_path):
    p = _save(tmp_path, "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": torch.zeros(4, 4)})
    with pytest.raises(SanaError, match="Flux"):
        load_transformer(p)


def test_dcae_given_as_transformer(tmp_path):
    p = _save(tmp_path, "dcae.safetensors", {
        "encoder.conv_in.weight": torch.zeros(1), "encoder.down_blocks.0.0.conv1.weight": torch.zeros(1),
        "decoder.conv_in.weight": torch.zeros(1), "decoder.up_blocks.3.1.attn.to_q.weight": torch.zeros(1)})
    with pytest.raises(SanaError, match=r"dcae\.safetensors.*DC-AE autoencoder"):
        load_transformer(p)


def test_truncated_safetensors(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    data = paths["single_diffusers"].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SanaError, match=r"cut\.safetensors: truncated"):
        load_transformer(bad)


def test_shape_matching_no_preset(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    with pytest.raises(SanaError, match=r"single_diffusers\.safetensors.*matches no published variant: hidden size 16"):
        load_transformer(paths["single_diffusers"])  # no config.json: a 16-wide model is no preset


def test_config_disagreeing_with_weights(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    cfg = json.loads((paths["folder"] / "config.json").read_text())
    cfg["num_layers"] = 5
    (paths["folder"] / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SanaError, match="num_layers: config 5 vs weights 3"):
        load_transformer(paths["folder"])


def test_missing_empty_and_configless(tmp_path):
    with pytest.raises(SanaError, match="not found"):
        load_transformer(tmp_path / "nope.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(SanaError, match="empty"):
        load_transformer(tmp_path / "empty.safetensors")
    (tmp_path / "noconf").mkdir()
    (tmp_path / "noconf" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    with pytest.raises(SanaError, match=r"noconf: a model folder needs a config\.json"):
        load_transformer(tmp_path / "noconf")


def test_variant_names():
    from sana_comfy.sana_core.loader import variant_name

    assert variant_name(PRESETS["Sana_1600M_4Kpx"]) == "Sana 1.6B"
    assert variant_name(PRESETS["Sana_600M_512px"]) == "Sana 0.6B"
    assert variant_name(PRESETS["SANA1.5_4.8B_1024px"]) == "Sana 1.5 4.8B"
    assert variant_name(PRESETS["Sana_Sprint_0.6B_1024px"]) == "Sana Sprint 0.6B"
    assert variant_name(PRESETS["Sana_600M_1024px"].replace(num_layers=3)).startswith("Sana (custom")


def _rss_file() -> int:
    line = next(x for x in open("/proc/self/status") if x.startswith("RssFile:"))
    return int(line.split()[1]) * 1024


def test_casting_load_hands_source_pages_back(tmp_path):
    """An fp32 file loaded as bf16 ends with bf16 copies only: each source tensor's file pages are dropped as soon
    as it is cast (peak ≈ 1× the bf16 bytes, not 3×), and the weights are exactly the cast file."""
    import torch
    from safetensors.torch import save_file
    from sana_comfy.sana_core.weights import load_into, read_safetensors

    torch.manual_seed(0)
    ref = {"0.weight": torch.randn(2048, 4096), "0.bias": torch.randn(2048), "1.weight": torch.randn(2048, 2048)}
    save_file(ref, tmp_path / "w.safetensors")  # 48 MiB
    with torch.device("meta"):
        m = torch.nn.Sequential(torch.nn.Linear(4096, 2048), torch.nn.Linear(2048, 2048, bias=False))
    before = _rss_file()
    sd = read_safetensors(tmp_path / "w.safetensors")
    load_into(m, sd, torch.bfloat16, "test")
    assert _rss_file() - before < 4 * 2**20  # the 48 MiB of fp32 pages were read and dropped
    for k, v in ref.items():
        assert m.state_dict()[k].dtype == torch.bfloat16 and torch.equal(m.state_dict()[k], v.to(torch.bfloat16))
    assert torch.equal(sd["0.weight"], ref["0.weight"])  # the source still reads right: the pages come back
