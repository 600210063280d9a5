"""One answer to "have these weights changed?" (sana_core/speed/stamp.py) for every cache of the speed layer: an
in-place edit under torch.inference_mode() (no version counter) and a parameter replaced by a patcher are both seen
by the caption's kept keys and values and by the convolution transforms. (CUDA graphs: test_cudagraph.py.)"""

import pytest
import torch
import torch.nn.functional as F
from sana_comfy.sana_core import caches, speed
from sana_comfy.sana_core.speed import conv
from sana_comfy.sana_core.speed.stamp import stamp
from sana_comfy.sana_core.transformer import SanaConfig, SanaTransformer

pytestmark = pytest.mark.unit

EDITS = ["in place under inference_mode", "in place", "parameter replaced"]


def _edit(module: torch.nn.Module, name: str, how: str) -> None:
    w = getattr(module, name)
    if how == "parameter replaced":  # as a host's patcher does: a new tensor at a new address
        setattr(module, name, torch.nn.Parameter(w * 1.5, requires_grad=False))
    else:
        with torch.no_grad():
            w.mul_(1.5)


@pytest.mark.parametrize("how", EDITS)
def test_stamp_sees_every_kind_of_change(how):
    inference = how == "in place under inference_mode"
    with torch.inference_mode(inference):
        lin = torch.nn.Linear(4, 4)
        before = stamp(lin.parameters())
        assert stamp(lin.parameters()) == before  # nothing changed: the same stamp
        _edit(lin, "weight", how)
        assert lin.weight.is_inference() == inference
        assert stamp(lin.parameters()) != before


def test_stamp_sees_a_single_changed_element():
    with torch.inference_mode():
        w = torch.randn(512, 512)
        before = stamp([w])
        w[100, 7] = torch.nextafter(w[100, 7], torch.tensor(float("inf")))  # one element by one ulp
        assert stamp([w]) != before
        assert stamp([w], contents=False) == stamp([w], contents=False)  # addresses only: the graphs' question


def _model():
    cfg = SanaConfig(num_layers=2, num_heads=2, head_dim=8, cross_heads=2, cross_head_dim=8, caption_channels=24,
                     sample_size=8)
    torch.manual_seed(0)
    m = SanaTransformer(cfg, dtype=torch.float32).requires_grad_(False)
    for p in m.parameters():
        p.copy_(torch.randn(p.shape) * 0.1 + (1.0 if p.ndim == 1 else 0.0))
    return speed.apply(m.eval(), True)


@pytest.mark.parametrize("how", EDITS)
def test_caption_keys_values_see_edited_weights(how):
    with torch.inference_mode(how == "in place under inference_mode"), torch.no_grad():
        m = _model()
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(2, 32, 4, 6, generator=g), torch.randn(2, 7, 24, generator=g)
        mask, t = torch.ones(2, 7, dtype=torch.int64), torch.tensor([900.0, 100.0])
        for _ in range(3):  # held: the keys and values are kept from the second call on
            held = m(x, t, y, mask)
        assert caches.peek(m, "captions")[0].holds(y) and caches.peek(m, "captions")[0].value is not None
        _edit(m.transformer_blocks[1].attn2.to_v, "weight", how)
        got, want = m(x, t, y, mask), m(x, t, y.clone(), mask)
    assert torch.equal(got, want)  # the kept values were recomputed from the edited weight
    assert not torch.allclose(got, held)


@pytest.mark.parametrize("how", EDITS)
@pytest.mark.parametrize("form", ["winograd", "upsample"])
def test_conv_transforms_see_edited_weights(how, form):
    with torch.inference_mode(how == "in place under inference_mode"):
        torch.manual_seed(0)
        c = torch.nn.Conv2d(256, 8, 3, 1, 1).requires_grad_(False)
        x = torch.randn(1, 256, 4, 8)
        run = (lambda: conv.winograd_conv3x3(c, x)) if form == "winograd" else (lambda: conv.upsample_conv3x3(c, x))
        plain = (lambda: c(x)) if form == "winograd" else (lambda: c(F.interpolate(x, scale_factor=2)))
        before = run()
        _edit(c, "weight", how)
        got, want = run(), plain()
    assert ((got - want).abs().max() / want.abs().max()).item() <= 3e-5
    assert not torch.allclose(before, want, atol=1e-3)
