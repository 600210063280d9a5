"""Key maps, variant detection and presets (full-size configs on the meta device), and loader errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.families import Family, sniff
from sana_comfy.sana_core.load.files import find_weights, locate, read_json
from sana_comfy.sana_core.load.transformer import detect_config, load_transformer, original_to_diffusers
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer
from support.models import count_params, diffusers_to_original, save_layouts, tiny_diffusers_transformer

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


@pytest.mark.parity
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_resolution_from_file_name_without_config():
    with torch.device("meta"):
        sd = SanaTransformer(PRESETS["Sana_1600M_1024px"]).state_dict()
    assert detect_config(sd, None, "x/Sana_1600M_4Kpx_BF16.safetensors") == PRESETS["Sana_1600M_4Kpx"]
    assert detect_config(sd, None, "x/sana_512px.safetensors").sample_size == 16
    assert detect_config(sd, None, "x/my_sana.safetensors").sample_size == 32  # documented default
    assert detect_config(sd, None, "x/my_sana.safetensors", sample_size=64).interpolation_scale == 1.0


@pytest.mark.unit
def test_whole_repo_layout_and_scheduler_shift(tmp_path):
    ref = tiny_diffusers_transformer()
    ref.save_pretrained(tmp_path / "repo" / "transformer")
    (tmp_path / "repo" / "scheduler").mkdir()
    (tmp_path / "repo" / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 4.0}))
    (tmp_path / "repo" / "model_index.json").write_text("{}")
    m = load_transformer(tmp_path / "repo", "fp32")
    assert m.cfg.flow_shift == 4.0 and m.cfg.num_layers == 3


@pytest.mark.unit
def test_sharded_and_variant_folders(tmp_path):
    ref = tiny_diffusers_transformer()
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert list((tmp_path / "sharded").glob("*.index.json"))
    ref.to(torch.bfloat16).save_pretrained(tmp_path / "variant", variant="bf16")
    # a sharded variant: diffusers writes diffusion_pytorch_model.safetensors.index.bf16.json + .bf16-0000i-of-… shards
    ref.save_pretrained(tmp_path / "sharded_variant", variant="bf16", max_shard_size="20KB")
    assert (tmp_path / "sharded_variant" / "diffusion_pytorch_model.safetensors.index.bf16.json").is_file()
    a = load_transformer(tmp_path / "sharded", "fp32")
    b = load_transformer(tmp_path / "variant")
    c = load_transformer(tmp_path / "sharded_variant")
    assert b.dtype == c.dtype == torch.bfloat16
    for k, v in ref.state_dict().items():
        assert torch.equal(a.state_dict()[k].bfloat16(), v) and torch.equal(b.state_dict()[k], v)
        assert torch.equal(c.state_dict()[k], v)


# --- bad input: one SanaError each, naming the file and what was found vs expected ----------------------------------

def _save(tmp_path, name, sd):
    p = tmp_path / name
    save_file(sd, p)
    return p


@pytest.mark.unit
def test_sdxl_like_checkpoint_refused(tmp_path):
    p = _save(tmp_path, "sdxl.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
                                             "model.diffusion_model.out.2.weight": torch.zeros(4)})
    with pytest.raises(SanaError, match=r"sdxl\.safetensors.*Stable Diffusion / SDXL UNet"):
        load_transformer(p)


@pytest.mark.unit
def test_flux_like_checkpoint_refused(tmp_path):
    p = _save(tmp_path, "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": torch.zeros(4, 4)})
    with pytest.raises(SanaError, match="Flux"):
        load_transformer(p)


@pytest.mark.unit
def test_dcae_given_as_transformer(tmp_path):
    p = _save(tmp_path, "dcae.safetensors", {
        "encoder.conv_in.weight": torch.zeros(1), "encoder.down_blocks.0.0.conv1.weight": torch.zeros(1),
        "decoder.conv_in.weight": torch.zeros(1), "decoder.up_blocks.3.1.attn.to_q.weight": torch.zeros(1)})
    with pytest.raises(SanaError, match=r"dcae\.safetensors.*DC-AE autoencoder"):
        load_transformer(p)


@pytest.mark.unit
def test_truncated_safetensors(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    data = paths["single_diffusers"].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SanaError, match=r"cut\.safetensors: truncated"):
        load_transformer(bad)


@pytest.mark.unit
def test_shape_matching_no_preset(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    with pytest.raises(SanaError, match=r"single_diffusers\.safetensors.*matches no published variant: hidden size 16"):
        load_transformer(paths["single_diffusers"])  # no config.json: a 16-wide model is no preset


@pytest.mark.unit
def test_config_disagreeing_with_weights(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    cfg = json.loads((paths["folder"] / "config.json").read_text())
    cfg["num_layers"] = 5
    (paths["folder"] / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SanaError, match="num_layers: config 5 vs weights 3"):
        load_transformer(paths["folder"])


@pytest.mark.unit
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


@pytest.mark.unit
def test_config_json_not_an_object(tmp_path):
    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    cfg = paths["folder"] / "config.json"
    cfg.write_text("{'num_layers': 3}")
    with pytest.raises(SanaError, match=r"folder/config\.json: not valid JSON"):
        load_transformer(paths["folder"])
    cfg.write_text("[3]")
    with pytest.raises(SanaError, match=r"folder/config\.json: expected a JSON object, found list"):
        load_transformer(paths["folder"])


# --- sana_core.load: one set of rules for the three loaders ------------------------------------------------------

DPM = "diffusion_pytorch_model"


@pytest.mark.unit
@pytest.mark.parametrize("files, stems, picked", [
    ([f"{DPM}.safetensors", f"{DPM}.bf16.safetensors"], (DPM,), f"{DPM}.safetensors"),  # the plain file first
    ([f"{DPM}.bin", f"{DPM}.fp16.safetensors"], (DPM,), f"{DPM}.bin"),  # as diffusers' variant=None
    ([f"{DPM}.safetensors.index.json", f"{DPM}.safetensors"], (DPM,), f"{DPM}.safetensors.index.json"),
    ([f"{DPM}.fp32.safetensors", f"{DPM}.fp16.safetensors", f"{DPM}.bf16.safetensors"], (DPM,),
     f"{DPM}.bf16.safetensors"),
    ([f"{DPM}.safetensors.index.fp16.json", f"{DPM}.fp16-00001-of-00002.safetensors"], (DPM,),
     f"{DPM}.safetensors.index.fp16.json"),
    ([f"{DPM}.bf16.safetensors.index.json", f"{DPM}.bf16-00001-of-00002.safetensors"], (DPM,),
     f"{DPM}.bf16.safetensors.index.json"),
    (["model.safetensors", f"{DPM}.fp32.safetensors"], (DPM, "model"), f"{DPM}.fp32.safetensors"),
    (["config.json", "model.bf16.safetensors", "model.safetensors.index.bf16.json"], ("model",),
     "model.safetensors.index.bf16.json"),
    (["config.json", "my_vae.safetensors"], (DPM, "model"), "my_vae.safetensors"),  # the folder's only one
])
def test_find_weights_order(tmp_path, files, stems, picked):
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert find_weights(tmp_path, stems, "test") == tmp_path / picked


@pytest.mark.unit
def test_find_weights_none_and_locate(tmp_path):
    for name in ("config.json", "a.safetensors", "b.safetensors"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(SanaError, match=r"no DC-AE weights in this folder \(found: a\.safetensors, b\.safetensors, "
                                        r"config\.json\); expected diffusion_pytorch_model\[\.bf16\|\.fp16\|\.fp32\]"):
        find_weights(tmp_path, (DPM,), "DC-AE")

    repo = tmp_path / "repo"
    (repo / "vae").mkdir(parents=True)
    (repo / "model_index.json").write_text("{}")
    assert (locate(repo, "vae").path, locate(repo, "vae").repo) == (repo / "vae", repo)
    assert (locate(repo / "vae", "vae").path, locate(repo / "vae", "vae").repo) == (repo / "vae", None)
    assert locate(tmp_path / "a.safetensors", "vae").is_file
    assert locate(tmp_path / "a.safetensors", "vae").config is None
    (repo / "config.json").write_text("{}")  # a component folder of its own: its vae/ is not descended into
    assert locate(repo, "vae").path == repo and locate(repo, "vae").config == repo / "config.json"
    with pytest.raises(SanaError, match=r"nope: not found"):
        locate(tmp_path / "nope", "vae")


@pytest.mark.unit
def test_read_json(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"a": 1}')
    assert read_json(f) == {"a": 1}
    f.write_text("{a: 1}")
    with pytest.raises(SanaError, match=r"c\.json: not valid JSON \(Expecting property name"):
        read_json(f)
    f.write_text('"text"')
    with pytest.raises(SanaError, match=r"c\.json: expected a JSON object, found str"):
        read_json(f)


def _meta_state_dict(make):
    with torch.device("meta"):
        return make().state_dict()


@pytest.mark.unit
def test_sniff_tells_each_family():
    import diffusers
    from sana_comfy.sana_core.dcae import DCAE
    from support.text import tiny_gemma_config
    from support.vae import diffusers_to_original as dcae_to_original
    from transformers import Gemma2Model, LlamaConfig, LlamaModel

    sana = _meta_state_dict(lambda: SanaTransformer(PRESETS["Sana_600M_1024px"]))
    dcae = _meta_state_dict(DCAE)
    cases = {
        Family.SANA_DIFFUSERS: sana,
        Family.SANA_NVLABS: diffusers_to_original(sana),
        Family.DCAE_DIFFUSERS: dcae,
        Family.DCAE_ORIGINAL: dcae_to_original(dcae),
        Family.DCAE_OTHER: dict.fromkeys(["encoder.project_in.conv.conv.weight", "encoder.stages.0.op_list.0.main.x"]),
        Family.KL_VAE: _meta_state_dict(lambda: diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4)),
        Family.UNET: _meta_state_dict(lambda: diffusers.UNet2DConditionModel(
            block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8, layers_per_block=1,
            norm_num_groups=4, attention_head_dim=2)),
        Family.FLUX: _meta_state_dict(lambda: diffusers.FluxTransformer2DModel(
            num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=8,
            pooled_projection_dim=8, axes_dims_rope=(4, 6, 6))),
        Family.SD3: _meta_state_dict(lambda: diffusers.SD3Transformer2DModel(
            num_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=8,
            caption_projection_dim=16, pooled_projection_dim=8, sample_size=8)),
        Family.GEMMA: _meta_state_dict(lambda: Gemma2Model(tiny_gemma_config(32))),
        Family.LANGUAGE_MODEL: _meta_state_dict(lambda: LlamaModel(LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=32))),
        Family.UNKNOWN: {"foo.weight": None},
    }
    assert {family: sniff(sd) for family, sd in cases.items()} == {family: family for family in cases}
    # the single-file layouts of the same families: NVlabs/ldm names with ComfyUI's wrapper prefix left on
    assert sniff(dict.fromkeys(["model.diffusion_model.input_blocks.0.0.weight"])) is Family.UNET
    assert sniff(dict.fromkeys(["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"])) is Family.FLUX
    assert sniff(dict.fromkeys(["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"])) is Family.SD3
    assert sniff(dict.fromkeys(["encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
                                "decoder.conv_in.weight", "encoder.mid.attn_1.q.weight"])) is Family.KL_VAE
    assert sniff(dict.fromkeys(["model.layers.0.pre_feedforward_layernorm.weight", "lm_head.weight"])) is Family.GEMMA


@pytest.mark.unit
def test_each_loader_takes_its_part_of_one_repo_and_refuses_the_others(tiny_repo, tmp_path):
    from sana_comfy.sana_core.load.dcae import load_dcae
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder

    assert load_transformer(tiny_repo, "fp32").source == str(tiny_repo / "transformer" / f"{DPM}.safetensors")
    assert load_dcae(tiny_repo).spatial_compression == 32
    assert load_text_encoder(tiny_repo).hidden_size > 0

    transformer_file = tiny_repo / "transformer" / f"{DPM}.safetensors"
    with pytest.raises(SanaError, match=r"this looks like a Sana transformer, load it with Sana Load Transformer"):
        load_dcae(transformer_file)
    with pytest.raises(SanaError, match=r"not a Sana transformer checkpoint: this is a DC-AE autoencoder, load it "
                                        r"with Sana Load DC-AE"):
        load_transformer(tiny_repo / "vae" / f"{DPM}.safetensors")
    with pytest.raises(SanaError, match=r"this is a Gemma text encoder, load it with Sana Load Text Encoder"):
        load_transformer(tiny_repo / "text_encoder" / "model.safetensors")
    repo = tmp_path / "mixed_up"  # the transformer's weights where Gemma's belong
    shutil.copytree(tiny_repo / "tokenizer", repo / "tokenizer")
    shutil.copytree(tiny_repo / "text_encoder", repo / "text_encoder")
    shutil.copy(transformer_file, repo / "text_encoder" / "model.safetensors")
    with pytest.raises(SanaError, match=r"text_encoder/model\.safetensors: this looks like a Sana transformer, load "
                                        r"it with Sana Load Transformer\. Found \d+ tensors"):
        load_text_encoder(repo)


@pytest.mark.unit
def test_variant_names():
    from sana_comfy.sana_core.load.transformer import variant_name

    assert variant_name(PRESETS["Sana_1600M_4Kpx"]) == "Sana 1.6B"
    assert variant_name(PRESETS["Sana_600M_512px"]) == "Sana 0.6B"
    assert variant_name(PRESETS["SANA1.5_4.8B_1024px"]) == "Sana 1.5 4.8B"
    assert variant_name(PRESETS["Sana_Sprint_0.6B_1024px"]) == "Sana Sprint 0.6B"
    assert variant_name(PRESETS["Sana_600M_1024px"].replace(num_layers=3)).startswith("Sana (custom")


def _rss_file() -> int:
    line = next(x for x in open("/proc/self/status") if x.startswith("RssFile:"))
    return int(line.split()[1]) * 1024


@pytest.mark.unit
def test_casting_load_hands_source_pages_back(tmp_path):
    """An fp32 file loaded as bf16 ends with bf16 copies only: each source tensor's file pages are dropped as soon
    as it is cast (peak ≈ 1× the bf16 bytes, not 3×), and the weights are exactly the cast file."""
    import torch
    from safetensors.torch import save_file
    from sana_comfy.sana_core.load.tensors import load_into, read_safetensors

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
