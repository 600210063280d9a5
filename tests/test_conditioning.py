"""The pack's own sampler (outside ComfyUI, and for Sana-Sprint) honours noise masks and several conditioning
entries as ComfyUI's samplers do: masked latents come back exactly where the mask is 0, entries are averaged by
strength, and entries only ComfyUI's sampling applies are refused by name."""

import pytest
import torch
from sana_comfy import NODE_CLASS_MAPPINGS as N
from sana_comfy.sana_core import guidance, pipeline
from sana_comfy.sana_core.errors import SanaError


@pytest.fixture(scope="module")
def loaded(models_dir):
    model, te, vae = N["SanaLoadPipeline"]().load("Sana_600M_1024px_diffusers", "fp32")["result"]
    enc = N["SanaEncodePrompt"]()
    conds = {k: enc.encode(te, text, chi, 300)[0] for k, text, chi in (
        ("pos", "a red boat at dawn", True), ("other", "a green forest in fog", True), ("neg", "", False))}
    return model, conds


def _sample(model, pos, neg, latent, **kw):
    args = dict(seed=2, steps=4, cfg=4.5, sampler="flow_dpm_solver", flow_shift=0.0, pag_scale=0.0,
                pag_adaptive_scale=0.0, pag_layers="4", denoise=1.0)
    return N["SanaSample"]().sample(model, pos, neg, latent, **{**args, **kw})[0]["samples"]


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
    assert torch.equal(out, src)  # nothing to repaint: the input latent
    m = pipeline.prepare_noise_mask(torch.ones(3, 1, 100, 60), (2, 32, 8, 8))  # any size and batch, as ComfyUI
    assert m.shape == (2, 32, 8, 8) and m.min() == 1
    with pytest.raises(SanaError, match="noise_mask has shape"):
        pipeline.prepare_noise_mask(torch.ones(1, 3, 8, 8), (1, 32, 8, 8))


def test_combined_entries_are_averaged_by_strength(loaded):
    """ConditioningCombine gives two entries; each is predicted and the two are averaged (weighted by strength)."""
    model, c = loaded
    net = model.get()
    (a, ea), (b, eb) = c["pos"][0], c["other"][0]
    ta, tb = guidance.TextCond(a, ea["attention_mask"]), guidance.TextCond(b, eb["attention_mask"])
    x, t = torch.randn(1, 32, 8, 8), torch.tensor([700.0])
    with torch.no_grad():
        fa, fb = (guidance.guided_model_fn(net, e, None, cfg=1.0)(x, t) for e in (ta, tb))
        both = guidance.guided_model_fn(net, [ta, tb], None, cfg=1.0)(x, t)
        weighted = guidance.guided_model_fn(net, [ta, guidance.TextCond(b, eb["attention_mask"], 3.0)], None,
                                            cfg=1.0)(x, t)
    torch.testing.assert_close(both, (fa + fb) / 2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weighted, (fa + 3 * fb) / 4, rtol=1e-5, atol=1e-6)
    combined = N["ConditioningCombine"]().combine(c["pos"], c["other"])[0] if "ConditioningCombine" in N else \
        c["pos"] + c["other"]
    src = torch.zeros(1, 32, 8, 8)
    assert not torch.allclose(_sample(model, combined, c["neg"], {"samples": src}),
                              _sample(model, c["pos"], c["neg"], {"samples": src}), atol=1e-3)


def test_entries_only_comfyui_applies_are_refused(loaded):
    model, c = loaded
    emb, extra = c["other"][0]
    regional = c["pos"] + [[emb, {**extra, "area": (4, 4, 0, 0), "strength": 1.0}]]
    with pytest.raises(SanaError, match=r"positive conditioning entry 1 uses \['area'\]"):
        _sample(model, regional, c["neg"], {"samples": torch.zeros(1, 32, 8, 8)})


def test_bad_entries_and_binned_latents(loaded):
    """An entry from another text encoder in a combined list is refused by width; a mask drawn at the requested size
    of a binned latent is resized to the latent (as ComfyUI does) and still keeps the unmasked part."""
    model, c = loaded
    clip_like = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(SanaError, match="positive conditioning is 768 wide"):
        _sample(model, c["pos"] + clip_like, c["neg"], {"samples": torch.zeros(1, 32, 8, 8)})
    latent = N["SanaEmptyLatent"]().make(1000, 700, 1, True, model)[0]  # binned: another shape than 1000×700
    src = torch.randn_like(latent["samples"])
    mask = torch.zeros(1, 700, 1000)
    mask[:, :350] = 1.0  # repaint the top half
    out = _sample(model, c["pos"], c["neg"], {**latent, "samples": src, "noise_mask": mask})
    h = src.shape[2]
    assert (out[:, :, h // 2 + 1:] - src[:, :, h // 2 + 1:]).abs().max().item() <= 1e-5
    assert (out[:, :, :h // 2 - 1] - src[:, :, :h // 2 - 1]).abs().max().item() > 0.1
