"""The DC-AE's speed forms (sana_core/speed/dcae.py, speed/conv.py) against the plain ops, fp64 and diffusers."""

import pytest
import torch
import torch.nn.functional as F
from sana_comfy.sana_core import caches, speed
from sana_comfy.sana_core.dcae import DCAE, DCAEConfig
from sana_comfy.sana_core.dcae_blocks import DCDownBlock2d
from sana_comfy.sana_core.load.tensors import load_into
from sana_comfy.sana_core.speed import conv as speedconv
from sana_comfy.sana_core.speed.dcae import FastDCDownBlock2d
from support.vae import tiny_diffusers_dcae
from torch import nn


@pytest.fixture(autouse=True)
def cpu_forms(monkeypatch):
    """These tests check the CPU forms themselves: the policy answers as on a CPU kind where they run, whatever
    CPU runs the tests."""
    monkeypatch.setattr(speed.policy, "cpu_kind", lambda: sorted(speed.policy.FAST_CPU_KINDS)[0])


def _conv(ci, co, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(ci, co, 3, 1, 1, bias=bias).requires_grad_(False)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.unit
@pytest.mark.parametrize("ci,co,h,w,bias", [(8, 4, 5, 7, True), (24, 16, 6, 3, False), (64, 32, 9, 9, True)])
def test_upsample_conv_is_conv_of_nearest_upsample(ci, co, h, w, bias):
    conv = _conv(ci, co, bias)
    x = torch.randn(2, ci, h, w)
    ref = conv.double()(F.interpolate(x.double(), scale_factor=2, mode="nearest"))
    conv.float()
    y = speedconv.upsample_conv3x3(conv, x)
    assert y.shape == (2, co, 2 * h, 2 * w)
    assert _rel(y, ref) <= 1e-5
    assert _rel(conv(F.interpolate(x, scale_factor=2, mode="nearest")), ref) <= 1e-5  # fp32 reference, same bound


@pytest.mark.unit
@pytest.mark.parametrize("ci,co", [(8, 4), (4, 4), (16, 4)])  # shortcut repeats 2, 4, 1
def test_upsample_conv_with_the_up_block_shortcut(ci, co):
    conv = _conv(ci, co)
    x = torch.randn(2, ci, 3, 5)
    r = co * 4 // ci
    ref = conv(F.interpolate(x, scale_factor=2, mode="nearest")) + F.pixel_shuffle(x.repeat_interleave(r, dim=1), 2)
    assert _rel(speedconv.upsample_conv3x3(conv, x, r), ref) <= 1e-5


# Winograd F(4×4, 3×3) rounds about ten times as much as the direct conv in fp32 (its transforms scale the terms of
# each sum by up to 5 and 8), still ~1e-5 of the largest output.
WINOGRAD_TOL = 3e-5


@pytest.mark.unit
@pytest.mark.parametrize("h,w,bias,tiles", [(8, 12, True, None), (4, 4, False, None), (12, 4, True, None),
                                            (36, 20, True, 256 * 5), (20, 8, False, 256 * 6)])
def test_winograd_is_the_conv(h, w, bias, tiles, monkeypatch):
    if tiles:  # several stripes of tile rows, the last one short
        monkeypatch.setattr(speedconv, "_TILES", tiles)
    conv = _conv(256, 64, bias)
    x = torch.randn(2, 256, h, w)
    assert speedconv.winograd_ok(conv, x)
    ref = conv.double()(x.double())
    conv.float()
    y = speedconv.winograd_conv3x3(conv, x)
    assert y.shape == (2, 64, h, w) and y.is_contiguous(memory_format=torch.channels_last)
    assert _rel(y, ref) <= WINOGRAD_TOL
    assert _rel(speedconv.conv3x3(conv, x[:1]), ref[:1]) <= WINOGRAD_TOL
    assert _rel(speedconv.conv3x3(conv, x[1:], silu=True), F.silu(ref[1:])) <= WINOGRAD_TOL


@pytest.mark.unit
def test_winograd_only_where_it_applies():
    conv = _conv(256, 8)
    assert not speedconv.winograd_ok(conv, torch.randn(1, 256, 6, 4))  # height not a multiple of the 4×4 tile
    assert not speedconv.winograd_ok(conv, torch.randn(1, 256, 4, 4, dtype=torch.bfloat16))  # bf16 keeps the op
    assert not speedconv.winograd_ok(_conv(128, 8), torch.randn(1, 128, 4, 4))  # below the channel threshold
    strided = nn.Conv2d(256, 8, 3, 2, 1)
    assert not speedconv.winograd_ok(strided, torch.randn(1, 256, 4, 4))
    x = torch.randn(1, 256, 6, 4)  # falls back to the module itself, channels-last on the CPU in fp32
    y = speedconv.conv3x3(conv, x)
    assert y.is_contiguous(memory_format=torch.channels_last) and _rel(y, conv(x)) <= 1e-6
    x16 = x.bfloat16()
    assert torch.equal(speedconv.conv3x3(conv.bfloat16(), x16), conv(x16))  # bf16: the module's own op


@pytest.mark.unit
def test_derived_weights_follow_weight_edits():
    conv = _conv(256, 8)
    x = torch.randn(1, 256, 4, 4)
    before = speedconv.winograd_conv3x3(conv, x)
    up_before = speedconv.upsample_conv3x3(conv, x)
    conv.weight.mul_(2)  # in place: a new tensor version
    assert _rel(speedconv.winograd_conv3x3(conv, x), conv(x)) <= WINOGRAD_TOL
    assert _rel(speedconv.upsample_conv3x3(conv, x), conv(F.interpolate(x, scale_factor=2))) <= 1e-5
    assert not torch.allclose(before, conv(x)) and not torch.allclose(up_before, speedconv.upsample_conv3x3(conv, x))
    assert caches.peek(conv, "fast_conv") and list(conv.state_dict()) == ["weight", "bias"]  # kept apart from it


@pytest.mark.unit
def test_weights_made_in_inference_mode():
    """ComfyUI loads and runs models under torch.inference_mode: such weights carry no version counter."""
    with torch.inference_mode():
        conv = _conv(256, 8)
        x = torch.randn(1, 256, 4, 8)
        assert conv.weight.is_inference()
        assert _rel(speedconv.conv3x3(conv, x), conv(x)) <= WINOGRAD_TOL
        assert _rel(speedconv.upsample_conv3x3(conv, x), conv(F.interpolate(x, scale_factor=2))) <= 1e-5


@pytest.mark.parity
def test_dcae_with_a_winograd_stage_matches_diffusers():
    """A 256-channel ResBlock stage (the published config's second stage width) takes the Winograd path."""
    widths = (64, 256, 256, 256)
    ref = tiny_diffusers_dcae(encoder_block_out_channels=widths, decoder_block_out_channels=widths)
    cfg = DCAEConfig.from_diffusers(dict(ref.config))
    with torch.device("meta"):
        ours = DCAE(cfg)
    load_into(ours, dict(ref.state_dict()), torch.float32, "test")
    speed.apply(ours.eval(), True)
    calls = []
    orig = speedconv.winograd_conv3x3
    try:
        speedconv.winograd_conv3x3 = lambda conv, x, *a: calls.append(x.shape) or orig(conv, x, *a)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(2, 3, 48, 64, generator=g) * 2 - 1
        with torch.no_grad():
            z, z_ref = ours.encode(x, tiling="off"), ref.encode(x).latent
            out, out_ref = ours.decode(z_ref, tiling="off"), ref.decode(z_ref).sample
    finally:
        speedconv.winograd_conv3x3 = orig
    assert calls and all(s[1] == 256 for s in calls)
    assert _rel(z, z_ref) <= 1e-5 and _rel(out, out_ref) <= 1e-5
    speed.apply(ours, False)  # the plain path, for contrast: the same function
    with torch.no_grad():
        assert _rel(ours.decode(z_ref, tiling="off"), out_ref) <= 1e-5


@pytest.mark.unit
@pytest.mark.parametrize("ci,co", [(8, 32), (8, 16), (16, 16), (32, 8), (12, 16)])  # groups of 1, 2, 4, 16; 3: plain
def test_down_block_shortcut_channels_last(ci, co):
    """The encoder's down block adds its unshuffle-and-average shortcut over strided views of a channels-last input."""
    torch.manual_seed(0)
    block = speed.apply(DCDownBlock2d(ci, co, pixel_unshuffle=False).eval(), True)
    assert isinstance(block, FastDCDownBlock2d)
    ref = DCDownBlock2d(ci, co, pixel_unshuffle=False).eval().double()
    ref.load_state_dict(block.state_dict())
    x = torch.randn(2, ci, 8, 12)
    with torch.no_grad():
        y, y_ref = block(speedconv.channels_last(x)), ref(x.double())
        assert _rel(y, y_ref) <= 1e-6 and _rel(block(x), y_ref) <= 1e-6


@pytest.mark.parity
def test_dcae_runs_channels_last_on_the_cpu():
    """CPU fp32: the ResBlock stages run channels-last, the attention stages and the results are plain NCHW."""
    ref = tiny_diffusers_dcae()
    with torch.device("meta"):
        ours = DCAE(DCAEConfig.from_diffusers(dict(ref.config)))
    load_into(ours, dict(ref.state_dict()), torch.float32, "test")
    speed.apply(ours, True)
    seen = {}

    def record(m, args, out):
        seen.setdefault(type(m).__name__, set()).add(args[0].is_contiguous(memory_format=torch.channels_last)
                                                     and not args[0].is_contiguous())

    for m in ours.modules():
        if type(m).__name__ in ("FastResBlock", "EfficientViTBlock"):
            m.register_forward_hook(record)
    x = torch.rand(1, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x, tiling="off")
        out = ours.decode(z, tiling="off")
        assert z.is_contiguous() and out.is_contiguous()
        assert _rel(out, ref.decode(z).sample) <= 1e-5
    assert seen["FastResBlock"] == {True}
