"""SanaSample in-process on ComfyUI's own sampling: noise masks keep the latent exactly where the mask is 0 (any mask
size and batch), combined entries change the result, another encoder's entry is refused by width; the core's own
sampler (Sana-Sprint) takes one plain entry per side and refuses the rest by name."""

import pytest
import torch
from sana_comfy.nodes import NODES as N
from sana_comfy.sana_core.errors import SanaError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def loaded(pipeline_nodes):
    model, te, _ = pipeline_nodes
    enc = N["SanaEncodePrompt"]
    conds = {k: enc.execute(te, text, chi, 300)[0] for k, text, chi in (
        ("pos", "a red boat at dawn", True), ("other", "a green forest in fog", True), ("neg", "", False))}
    return model, conds


def _sample(model, pos, neg, latent, **kw):
    args = dict(seed=2, steps=4, cfg=4.5, sampler="flow_dpm_solver", flow_shift=0.0, pag_scale=0.0,
                pag_adaptive_scale=0.0, pag_layers="4", denoise=1.0)
    return N["SanaSample"].execute(model, pos, neg, latent, **{**args, **kw})[0]["samples"]


@pytest.mark.parametrize("sampler", ["flow_dpm_solver", "flow_euler"])
def test_noise_mask_keeps_the_unmasked_latent(loaded, sampler):
    model, c = loaded
    g = torch.Generator().manual_seed(0)
    src = torch.randn(1, 32, 8, 8, generator=g)
    mask = torch.zeros(1, 256, 256)
    mask[:, :, 128:] = 1.0  # repaint the right half
    out = _sample(model, c["pos"], c["neg"], {"samples": src, "noise_mask": mask}, sampler=sampler)
    assert (out[..., :4] - src[..., :4]).abs().max().item() <= 1e-5  # the scaling factor's rounding, no more
    assert (out[..., 4:] - src[..., 4:]).abs().max().item() > 0.1
    plain = _sample(model, c["pos"], c["neg"], {"samples": src}, sampler=sampler)
    assert not torch.allclose(plain[..., :4], src[..., :4], atol=1e-2)  # without the mask everything is repainted


def test_all_zero_mask_and_mask_shapes(loaded):
    model, c = loaded
    src = torch.randn(2, 32, 8, 8)
    out = _sample(model, c["pos"], c["neg"], {"samples": src, "noise_mask": torch.zeros(64, 64)})
    assert (out - src).abs().max().item() <= 1e-5  # nothing to repaint: the input latent
    out = _sample(model, c["pos"], c["neg"], {"samples": src, "noise_mask": torch.ones(3, 1, 100, 60)})
    assert (out - src).abs().max().item() > 0.1  # any mask size and batch, resized and repeated as ComfyUI does


def test_combined_entries_change_the_result(loaded):
    model, c = loaded
    src = torch.zeros(1, 32, 8, 8)
    assert not torch.allclose(_sample(model, c["pos"] + c["other"], c["neg"], {"samples": src}),
                              _sample(model, c["pos"], c["neg"], {"samples": src}), atol=1e-3)


def test_the_cores_own_sampler_takes_one_plain_entry(loaded):
    from sana_comfy.nodes import conditioning

    _, c = loaded
    emb, extra = c["other"][0]
    assert torch.equal(conditioning.single(c["pos"], "positive", "Sprint").embeds, c["pos"][0][0])
    with pytest.raises(SanaError, match=r"positive conditioning has 2 entries .* Sprint takes one prompt per side"):
        conditioning.single(c["pos"] + c["other"], "positive", "Sprint")
    for key, value in (("area", (4, 4, 0, 0)), ("strength", 0.5), ("timestep_start", 0.2)):
        with pytest.raises(SanaError, match=rf"positive conditioning uses \['{key}'\], which Sprint does not apply"):
            conditioning.single([[emb, {**extra, key: value}]], "positive", "Sprint")


def test_bad_entries_and_binned_latents(loaded):
    """An entry from another text encoder in a combined list is refused by width; a mask drawn at the requested size
    of a binned latent is resized to the latent (as ComfyUI does) and still keeps the unmasked part."""
    model, c = loaded
    clip_like = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(SanaError, match="positive conditioning is 768 wide"):
        _sample(model, c["pos"] + clip_like, c["neg"], {"samples": torch.zeros(1, 32, 8, 8)})
    latent = N["SanaEmptyLatent"].execute(1000, 700, 1, True, model)[0]  # binned: another shape than 1000×700
    src = torch.randn_like(latent["samples"])
    mask = torch.zeros(1, 700, 1000)
    mask[:, :350] = 1.0  # repaint the top half
    out = _sample(model, c["pos"], c["neg"], {**latent, "samples": src, "noise_mask": mask})
    h = src.shape[2]
    assert (out[:, :, h // 2 + 1:] - src[:, :, h // 2 + 1:]).abs().max().item() <= 1e-5
    assert (out[:, :, :h // 2 - 1] - src[:, :, :h // 2 - 1]).abs().max().item() > 0.1
