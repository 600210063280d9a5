"""DC-AE against diffusers' AutoencoderDC on the same tiny random weights, loading from every layout, tiling."""

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.sana_core.dcae import DCAE, SANA_F32C32, DCAEConfig
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.dcae import convert_original_dcae, detect_dcae_config, load_dcae
from support.vae import diffusers_to_original, full_diffusers_dcae_meta, make_tiny_dcae, tiny_diffusers_dcae
from torch.profiler import ProfilerActivity, profile

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dcae(tmp_path_factory.mktemp("dcae"))


@pytest.fixture(scope="module")
def ours(tiny):
    return load_dcae(tiny["vae_dir"])


def _image(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def _count_decoder_calls(model):
    shapes = []
    handle = model.decoder.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    return shapes, handle


# -- parity ---------------------------------------------------------------------------------------------------- #

@pytest.mark.parity
@pytest.mark.parametrize("shape", [(2, 48, 80), (1, 16, 16)])  # 16 px: the 2×2 stage takes the quadratic branch
def test_encode_decode_match_diffusers(tiny, ours, shape):
    b, h, w = shape
    x = _image(b, h, w)
    with torch.no_grad():
        z_ref = tiny["model"].encode(x).latent
        x_ref = tiny["model"].decode(z_ref).sample
    z = ours.encode(x, tiling="off")
    assert z.shape == (b, 32, h // 8, w // 8) and z_ref.std() > 0.5
    assert (z - z_ref).abs().max() <= TOL
    out = ours.decode(z_ref, tiling="off")
    assert out.shape == x.shape and x_ref.std() > 0.1
    assert (out - x_ref).abs().max() <= TOL


@pytest.mark.parity
def test_pixel_shuffle_variant_detected_and_matches(tmp_path):
    ref = tiny_diffusers_dcae(seed=1, downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle")
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, tmp_path / "dcae.safetensors")
    ref.save_pretrained(tmp_path / "vae")
    detected = load_dcae(tmp_path / "dcae.safetensors")
    from_config = load_dcae(tmp_path / "vae")
    assert detected.config.downsample_block_type == "pixel_unshuffle"
    assert detected.config.upsample_block_type == "pixel_shuffle"
    assert detected.config == from_config.config
    x = _image(1, 32, 40, seed=3)
    with torch.no_grad():
        z_ref = ref.encode(x).latent
        x_ref = ref.decode(z_ref).sample
    for m in (detected, from_config):
        assert (m.encode(x) - z_ref).abs().max() <= TOL
        assert (m.decode(z_ref) - x_ref).abs().max() <= TOL


@pytest.mark.parity
def test_tiled_matches_diffusers(tiny, ours):
    ref = copy.deepcopy(tiny["model"])
    ref.enable_tiling(64, 64, 48, 48)  # 8-latent tiles every 6 latents: 3×2 tiles, blended over 2 latents / 16 px
    x = _image(1, 104, 88, seed=1)
    with torch.no_grad():
        z_ref = ref.encode(x).latent
        x_ref = ref.decode(z_ref).sample
    z = ours.encode(x, tiling="on", tile_px=64, stride_px=48)
    assert z.shape == (1, 32, 13, 11)
    assert (z - z_ref).abs().max() <= TOL
    assert (ours.encode(x, tiling="off") - z_ref).abs().max() > 1e-2  # tiles and blending really happened
    shapes, handle = _count_decoder_calls(ours)
    try:
        out = ours.decode(z_ref, tiling="on", tile_px=64, stride_px=48)
    finally:
        handle.remove()
    assert len(shapes) == 3 * 2 and max(s[2] for s in shapes) == 8
    assert out.shape == (1, 3, 104, 88)
    assert (out - x_ref).abs().max() <= TOL
    assert (ours.decode(z_ref, tiling="off") - x_ref).abs().max() > 1e-2


@pytest.mark.unit
def test_tiling_modes(ours):
    def calls(z, **kw):
        shapes, handle = _count_decoder_calls(ours)
        try:
            ours.decode(z, **kw)
        finally:
            handle.remove()
        return len(shapes)

    big = torch.randn(1, 32, 129, 130)  # 1032x1040 px: above the 1024² px auto threshold
    thin = torch.randn(1, 32, 1, 130)  # 8x1040 px: a long side but a small area (like the 4.0 bin): one pass
    assert calls(big, tiling="auto") == 9  # default 512 px tiles every 448 px: 3 rows × 3 columns
    assert calls(thin, tiling="auto") == 1
    assert calls(thin, tiling="off") == 1
    assert calls(thin, tiling="on") == 3  # 64-latent tiles at 0, 56, 112
    assert calls(torch.randn(1, 32, 8, 8), tiling="on", tile_px=64, stride_px=48) == 1  # fits one tile
    # diffusers starts a tile at every stride below the size, even one the previous tile already covers: 2×2 here
    assert calls(torch.randn(1, 32, 8, 9), tiling="on", tile_px=64, stride_px=48) == 4
    shapes = []
    handle = ours.encoder.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        ours.encode(torch.zeros(1, 3, 8, 1040), tiling="on")  # 512 px tiles at 0, 448, 896
        ours.encode(torch.zeros(1, 3, 8, 1040))  # auto, small area: one pass
    finally:
        handle.remove()
    assert [s[3] for s in shapes] == [512, 512, 144, 1040]
    for kw, msg in (({"tiling": "maybe"}, "tiling"), ({"tiling": "on", "tile_px": 60}, "multiples"),
                    ({"tiling": "on", "tile_px": 64, "stride_px": 72}, "stride_px")):
        with pytest.raises(SanaError, match=msg):
            ours.decode(thin, **kw)


@pytest.mark.unit
def test_tiled_decode_memory_bounded_by_tile():
    """Peak torch CPU allocation (profiler accounting, deterministic) of a tiled decode grows with the output only,
    while an untiled decode grows with the full-resolution activations."""
    n = 3
    cfg = DCAEConfig(latent_channels=8, attention_head_dim=8, encoder_block_out_channels=(16, 32, 32),
                     decoder_block_out_channels=(16, 32, 32), encoder_block_types=("ResBlock",) * 2 + ("EfficientViTBlock",),
                     decoder_block_types=("ResBlock",) * 2 + ("EfficientViTBlock",), encoder_layers_per_block=(1,) * n,
                     decoder_layers_per_block=(1,) * n, encoder_qkv_multiscales=((), (), (5,)),
                     decoder_qkv_multiscales=((), (), (5,)), decoder_norm_types=("rms_norm",) * n,
                     decoder_act_fns=("silu",) * n)
    torch.manual_seed(0)
    model = DCAE(cfg).eval()  # compression 4, random init; 16-latent tiles every 12, on 24² and 48² latents

    def peak(fn):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
        cur = best = 0
        for e in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
            cur += e.self_cpu_memory_usage
            best = max(best, cur)
        return best, out

    results = {}
    for side in (24, 48):
        z = torch.randn(1, 8, side, side)
        shapes, handle = _count_decoder_calls(model)
        try:
            tiled, out = peak(lambda z=z: model.decode(z, tiling="on", tile_px=64, stride_px=48))
        finally:
            handle.remove()
        assert max(max(s[2], s[3]) for s in shapes) <= 16  # every decoder call sees at most one 16-latent tile
        untiled, _ = peak(lambda z=z: model.decode(z, tiling="off"))
        results[side] = (tiled, untiled, out.numel() * out.element_size())
    (t24, u24, o24), (t48, u48, o48) = results[24], results[48]
    assert t48 - o48 <= 1.5 * (t24 - o24)  # working memory beyond the result buffer stays bounded (4× the pixels)
    assert u48 > 3 * u24  # sanity: untiled grows with the image
    assert t48 < 0.5 * u48


# -- loading --------------------------------------------------------------------------------------------------- #

LAYOUTS = ["vae_dir", "repo_dir", "sharded_dir", "single_file", "original_file", "original_dir", "pth"]


@pytest.mark.unit
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_the_same_tensors(tiny, layout):
    m = load_dcae(tiny[layout])
    assert m.dtype == torch.float32 and m.scaling_factor == 0.41407 and m.spatial_compression == 8
    sd = m.state_dict()
    assert sd.keys() == tiny["state_dict"].keys()
    for k, v in tiny["state_dict"].items():
        assert torch.equal(sd[k], v), k


@pytest.mark.unit
def test_half_precision_files(tiny, caplog):
    m = load_dcae(tiny["bf16_dir"])
    assert m.dtype == torch.bfloat16
    assert all(torch.equal(m.state_dict()[k], v.to(torch.bfloat16)) for k, v in tiny["state_dict"].items())
    with caplog.at_level("WARNING", logger="sana_core.dcae"):
        m = load_dcae(tiny["fp16_dir"])
    assert m.dtype == torch.float32 and "fp16" in caplog.text
    assert all(torch.equal(m.state_dict()[k], v.half().float()) for k, v in tiny["state_dict"].items())
    assert load_dcae(tiny["single_file"], dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parity
def test_bf16_runs_close_to_fp32(tiny, ours):
    m = load_dcae(tiny["vae_dir"], dtype=torch.bfloat16)
    ref = copy.deepcopy(tiny["model"]).to(torch.bfloat16)
    x = _image(1, 32, 32, seed=2)
    z32, z16 = ours.encode(x), m.encode(x)
    out32, out16 = ours.decode(z32), m.decode(z32)
    assert z16.dtype == out16.dtype == torch.bfloat16
    assert (z16.float() - z32).abs().max() <= 0.05 * z32.abs().max()
    assert (out16.float() - out32).abs().max() <= 0.05 * out32.abs().max()
    with torch.no_grad():  # diffusers in bf16 on the same weights: identical on CPU (observed 0.0); allow 1 ulp
        z_ref = ref.encode(x.to(torch.bfloat16)).latent.float()
        out_ref = ref.decode(z32.to(torch.bfloat16)).sample.float()
    assert (z16.float() - z_ref).abs().max() <= 2**-7 * z_ref.abs().max()
    assert (out16.float() - out_ref).abs().max() <= 2**-7 * out_ref.abs().max()


@pytest.mark.unit
def test_fp16_refused(tiny):
    with pytest.raises(SanaError, match="fp16.*bfloat16"):
        load_dcae(tiny["vae_dir"], dtype=torch.float16)
    m = load_dcae(tiny["vae_dir"]).to(torch.float16)
    with pytest.raises(SanaError, match="overflows in fp16"):
        m.decode(torch.randn(1, 32, 2, 2))


@pytest.mark.parity
def test_full_config_keys_counts_and_original_map():
    ref = full_diffusers_dcae_meta()
    ref_sd = ref.state_dict()
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert (count(ref), count(ref.encoder), count(ref.decoder)) == (312_250_275, 153_027_104, 159_223_171)
    with torch.device("meta"):
        model = DCAE()
    assert (count(model), count(model.encoder), count(model.decoder)) == (312_250_275, 153_027_104, 159_223_171)
    sd = model.state_dict()
    assert sd.keys() == ref_sd.keys()
    assert all(sd[k].shape == v.shape for k, v in ref_sd.items())
    assert detect_dcae_config(ref_sd) == SANA_F32C32
    assert DCAEConfig.from_diffusers({"_class_name": "AutoencoderDC", **json.loads(json.dumps(ref.config))}) \
        == SANA_F32C32

    original = diffusers_to_original(ref_sd)
    assert "encoder.project_in.conv.bias" in original and len(original) < len(ref_sd)
    mapped = convert_original_dcae(original)
    assert mapped.keys() == ref_sd.keys()
    assert all(mapped[k].shape == v.shape for k, v in ref_sd.items())
    from diffusers.loaders.single_file_utils import convert_autoencoder_dc_checkpoint_to_diffusers

    theirs = convert_autoencoder_dc_checkpoint_to_diffusers(dict(original))
    assert theirs.keys() == mapped.keys()


@pytest.mark.parity
def test_original_map_values_match_diffusers_converter(tiny):
    from diffusers.loaders.single_file_utils import convert_autoencoder_dc_checkpoint_to_diffusers

    original = diffusers_to_original(tiny["state_dict"])
    ours_map, theirs = convert_original_dcae(original), convert_autoencoder_dc_checkpoint_to_diffusers(dict(original))
    assert ours_map.keys() == theirs.keys() == tiny["state_dict"].keys()
    assert all(torch.equal(ours_map[k], theirs[k]) and torch.equal(ours_map[k], v)
               for k, v in tiny["state_dict"].items())


# -- bad input ------------------------------------------------------------------------------------------------- #

@pytest.mark.unit
def test_bad_files_name_the_path(tiny, tmp_path):
    cases = {
        "transformer.safetensors": (["transformer_blocks.0.attn1.to_q.weight", "patch_embed.proj.weight",
                                     "caption_projection.linear_1.weight"], "Sana Load Transformer"),
        "sd_vae.safetensors": (["encoder.conv_in.weight", "decoder.conv_in.weight", "quant_conv.weight",
                                "encoder.down_blocks.0.resnets.0.conv1.weight"], "AutoencoderKL"),
        "other.safetensors": (["foo.weight"], "not a DC-AE"),
    }
    for name, (keys, msg) in cases.items():
        save_file({k: torch.zeros(4, 4) for k in keys}, tmp_path / name)
        with pytest.raises(SanaError, match=msg) as e:
            load_dcae(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)

    data = tiny["single_file"].read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SanaError, match="truncated") as e:
        load_dcae(tmp_path / "truncated.safetensors")
    assert str(tmp_path / "truncated.safetensors") in str(e.value)

    for folder, cfg in (("empty", None), ("config_only", {"_class_name": "AutoencoderDC"})):
        (tmp_path / folder).mkdir()
        if cfg:
            (tmp_path / folder / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(SanaError, match="no DC-AE weights") as e:
            load_dcae(tmp_path / folder)
        assert str(tmp_path / folder) in str(e.value)

    with pytest.raises(SanaError, match="not found"):
        load_dcae(tmp_path / "missing")


@pytest.mark.unit
def test_bad_config_json(tiny, tmp_path):
    for name, change, msg in (("kl", {"_class_name": "AutoencoderKL"}, "AutoencoderDC"),
                              ("widths", {"decoder_block_out_channels": [8, 16, 32, 32]}, "shape")):
        folder = tmp_path / name
        shutil.copytree(tiny["vae_dir"], folder)
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(SanaError, match=msg) as e:
            load_dcae(folder)
        assert str(folder) in str(e.value)


@pytest.mark.unit
def test_bad_tensors(ours):
    with pytest.raises(SanaError, match="multiple of the compression 8"):
        ours.encode(torch.zeros(1, 3, 20, 16))
    with pytest.raises(SanaError, match=r"expected \(B, 32, H, W\)"):
        ours.decode(torch.zeros(1, 4, 2, 2))
    with pytest.raises(SanaError, match=r"expected \(B, 3, H, W\)"):
        ours.encode(torch.zeros(3, 16, 16))
