"""SANA-Video's pieces around the transformer: the 480p/720p binning against diffusers' tables and back-mapping, the
frame counts the Wan VAE represents, and the Wan VAE of a diffusers repo renamed for ComfyUI's own (decoding and
encoding as diffusers' AutoencoderKLWan does), with its refusals."""

import json

import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.sana_core import bins
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.wan_vae import read_wan_vae
from support.video import TINY_WAN_VAE, tiny_wan_vae


@pytest.mark.parity
@pytest.mark.parametrize("resolution", [480, 720])
def test_bins_are_diffusers_tables(resolution):
    """Every size picks diffusers' bin, and the decode's back-mapping is diffusers' resize_and_crop_tensor."""
    from diffusers.pipelines.sana_video import pipeline_sana_video as ref
    from diffusers.video_processor import VideoProcessor

    table = {480: ref.ASPECT_RATIO_480_BIN, 720: ref.ASPECT_RATIO_720_BIN}[resolution]
    assert {k: tuple(map(int, v)) for k, v in table.items()} == bins.VIDEO_BIN_TABLES[resolution]
    for w, h in ((832, 480), (1280, 720), (480, 832), (1000, 1000), (1920, 800), (300, 900)):
        plan = bins.video_plan(w, h, 81, True, resolution)
        want = VideoProcessor.classify_height_width_bin(h, w, ratios=table)
        assert tuple(plan["bin"]) == tuple(map(int, want)), (w, h)
        assert plan["latent"] == [21, plan["bin"][0] // 8, plan["bin"][1] // 8]
        assert plan["crop"] == (None if tuple(plan["bin"]) == (h, w) else [h, w])
        if plan["crop"]:
            video = torch.rand(1, 3, 2, *plan["bin"], generator=torch.Generator().manual_seed(w))
            frames = video[0].permute(1, 0, 2, 3)  # our frames are a batch of images
            got = bins.resize_and_crop(frames, h, w)
            assert got.shape == (2, 3, h, w)
            try:
                expected = VideoProcessor.resize_and_crop_tensor(video, w, h)  # (B, C, F, H, W)
            except RuntimeError:  # diffusers rounds a scaled size such as 479.99 down to 479, and its crop fails
                (bh, bw), ratio = plan["bin"], max(h / plan["bin"][0], w / plan["bin"][1])
                assert int(bh * ratio) < h or int(bw * ratio) < w
                continue
            assert torch.equal(got, expected[0].permute(1, 0, 2, 3))


@pytest.mark.unit
def test_without_a_model_the_table_is_the_one_nearest_the_area():
    assert bins.video_plan(832, 480, 1, True)["table"] == 480
    assert bins.video_plan(1280, 720, 1, True)["table"] == 720
    assert bins.video_plan(96, 64, 9, False) == {"table": None, "bin": [64, 96], "latent": [3, 8, 12], "crop": None}


@pytest.mark.unit
@pytest.mark.parametrize("length, message", [(80, r"use 77 or 81"), (82, r"use 81 or 85"), (0, r"use 1 or 5")])
def test_a_frame_count_the_vae_cannot_represent_is_refused(length, message):
    with pytest.raises(SanaError, match=rf"{length} frames: the Wan VAE represents 4k\+1 frames .*{message}"):
        bins.video_plan(832, 480, length, True)


@pytest.mark.unit
def test_an_unbinned_size_off_the_patch_grid_is_refused():
    with pytest.raises(SanaError, match=r"video size 100x64 must be positive multiples of 16 .* e\.g\. 96x64"):
        bins.video_plan(100, 64, 9, False)


@pytest.mark.parity
def test_the_repos_wan_vae_decodes_and_encodes_as_diffusers_in_comfyuis_own_vae(tmp_path):
    import comfy.sd

    ref = tiny_wan_vae(3)
    ref.save_pretrained(tmp_path / "repo" / "vae")
    vae = comfy.sd.VAE(sd=read_wan_vae(tmp_path / "repo"))
    assert (vae.latent_channels, vae.latent_dim) == (16, 3)
    z = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = (ref.decode(z).sample.clamp(-1, 1) + 1) / 2  # (1, 3, 9, 32, 48)
        got = vae.decode(z)  # (1, 9, 32, 48, 3)
        assert (got[0] - want[0].permute(1, 2, 3, 0)).abs().max() < 1e-5
        frames = torch.rand(5, 32, 48, 3, generator=torch.Generator().manual_seed(1))
        mean = ref.encode(frames.permute(3, 0, 1, 2)[None] * 2 - 1).latent_dist.mode()
        assert (vae.encode(frames) - mean).abs().max() < 1e-5


@pytest.mark.unit
def test_other_vaes_are_refused_by_name(tmp_path):
    from diffusers import AutoencoderKL

    wan22 = tiny_wan_vae()
    wan22 = type(wan22)(**{**TINY_WAN_VAE, "z_dim": 48})
    wan22.save_pretrained(tmp_path / "wan22")
    with pytest.raises(SanaError, match=r"48 latent channels \(Wan 2\.2's has 48\); SANA-Video takes the Wan 2\.1"):
        read_wan_vae(tmp_path / "wan22")
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4).save_pretrained(tmp_path / "sd")
    with pytest.raises(SanaError, match=r"the VAE is a AutoencoderKL; SANA-Video in ComfyUI takes the Wan 2\.1"):
        read_wan_vae(tmp_path / "sd")
    (tmp_path / "sd" / "config.json").unlink()
    with pytest.raises(SanaError, match=r"not a Wan VAE .*SANA-Video takes the Wan 2\.1 VAE"):
        read_wan_vae(tmp_path / "sd")
    other = tmp_path / "other"
    tiny_wan_vae().save_pretrained(other)
    config = json.loads((other / "config.json").read_text())
    config["latents_mean"] = [0.0] * 16
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(SanaError, match=r"latents_mean differs from Wan 2\.1's"):
        read_wan_vae(other)
    save_file({k: v.contiguous() for k, v in tiny_wan_vae().state_dict().items()}, tmp_path / "single.safetensors")
    assert "decoder.middle.0.residual.0.gamma" in read_wan_vae(tmp_path / "single.safetensors")  # renamed
