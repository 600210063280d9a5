"""Every node called directly (no ComfyUI): stand-in host, models from $SANA_MODELS_DIR in the published layouts."""

import pytest
import torch
from sana_comfy import NODE_CLASS_MAPPINGS as N
from sana_comfy.nodes import host
from sana_comfy.sana_core.errors import SanaError


@pytest.fixture(scope="module")
def models(models_dir):
    return models_dir


@pytest.fixture(scope="module")
def loaded(models):
    model = N["SanaLoadTransformer"]().load("Sana_600M_1024px_diffusers", "fp32")["result"][0]
    te = N["SanaLoadTextEncoder"]().load("gemma-2-2b-it", "auto")["result"][0]
    vae = N["SanaLoadDCAE"]().load("dc-ae-f32c32-sana-1.1-diffusers", "auto")["result"][0]
    return model, te, vae


def _sample(model, pos, neg, latent, **kw):
    args = dict(seed=1, steps=3, cfg=4.5, sampler="flow_dpm_solver", flow_shift=0.0, pag_scale=0.0,
                pag_adaptive_scale=0.0, pag_layers="8", denoise=1.0)
    args.update(kw)
    return N["SanaSample"]().sample(model, pos, neg, latent, **args)[0]


def test_model_lists_show_files_and_folders(models):
    (models / "diffusion_models" / "single.safetensors").write_bytes(b"")
    assert N["SanaLoadTransformer"].INPUT_TYPES()["required"]["model_name"][0] == [
        "Sana_600M_1024px_diffusers", "single.safetensors"]
    assert N["SanaLoadPipeline"].INPUT_TYPES()["required"]["pipeline"][0] == ["Sana_600M_1024px_diffusers"]
    (models / "diffusion_models" / "single.safetensors").unlink()


def test_text_to_image_through_nodes(loaded):
    model, te, vae = loaded
    pos = N["SanaEncodePrompt"]().encode(te, "a red fox", True, 300)[0]
    neg = N["SanaEncodePrompt"]().encode(te, "", False, 300)[0]
    assert pos[0][0].shape == (1, 300, 64) and pos[0][1]["attention_mask"].shape == (1, 300)
    latent = N["SanaEmptyLatent"]().make(200, 320, 2, True, model)[0]
    assert latent["samples"].shape == (2, 32, 40, 24)  # the 0.57 bin of the 1024 table: 1280x768
    out = _sample(model, pos, neg, latent)
    assert out is not latent and torch.equal(latent["samples"], torch.zeros_like(latent["samples"]))
    img = N["SanaDecode"]().decode(vae, out, "auto")[0]
    assert img.shape == (2, 320, 200, 3) and 0 <= img.min() and img.max() <= 1 and img.std() > 0.01


def test_upscaled_latent_keeps_its_upscale(loaded):
    model, te, vae = loaded
    latent = N["SanaEmptyLatent"]().make(200, 320, 1, True, model)[0]
    up = dict(latent, samples=torch.nn.functional.interpolate(latent["samples"], scale_factor=1.5))
    img = N["SanaDecode"]().decode(vae, up, "off")[0]
    assert img.shape == (1, 480, 300, 3)


def test_image_to_image_and_denoise_zero(loaded):
    model, te, vae = loaded
    pos = N["SanaEncodePrompt"]().encode(te, "a red fox", True, 300)[0]
    image = torch.rand(1, 100, 70, 3)
    lat = N["SanaEncodeImage"]().encode(vae, image)[0]
    assert lat["samples"].shape == (1, 32, 3, 2)
    same = _sample(model, pos, pos, lat, denoise=0.0)
    assert torch.equal(same["samples"], lat["samples"])
    part = _sample(model, pos, pos, lat, denoise=0.6)
    full = _sample(model, pos, pos, lat, denoise=1.0)
    assert not torch.allclose(part["samples"], full["samples"])


def test_pipeline_loader_and_pag(models):
    model, te, vae = N["SanaLoadPipeline"]().load("Sana_600M_1024px_diffusers", "auto")["result"]
    pos = N["SanaEncodePrompt"]().encode(te, "a red fox", True, 300)[0]
    neg = N["SanaEncodePrompt"]().encode(te, "", False, 300)[0]
    latent = N["SanaEmptyLatent"]().make(256, 256, 1, False)[0]
    a = _sample(model, pos, neg, latent, pag_scale=2.0, pag_layers="3,4")
    b = _sample(model, pos, neg, latent)
    assert not torch.allclose(a["samples"], b["samples"])
    with pytest.raises(SanaError, match=r"out of range.*0\.\.9"):
        _sample(model, pos, neg, latent, pag_scale=2.0, pag_layers="12")


def test_bad_latent_and_conditioning(loaded):
    model, te, _ = loaded
    pos = N["SanaEncodePrompt"]().encode(te, "x", True, 300)[0]
    with pytest.raises(SanaError, match=r"4 channels.*\[B, 32, H/32, W/32\]"):
        _sample(model, pos, pos, {"samples": torch.zeros(1, 4, 64, 64)})
    wide = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(SanaError, match="768 wide; this Sana model expects 64"):
        _sample(model, wide, pos, {"samples": torch.zeros(1, 32, 8, 8)})


def test_model_names_cannot_escape_the_folders(models):
    for bad in ("../secret.safetensors", "/etc/passwd", "a/../../b"):
        with pytest.raises(SanaError, match="stay inside"):
            host.resolve_model("diffusion_models", bad)
    with pytest.raises(SanaError, match="not found"):
        host.resolve_model("vae", "missing.safetensors")


def test_int8_storage_through_the_loaders(models):
    model = N["SanaLoadTransformer"]().load("Sana_600M_1024px_diffusers", "int8")["result"][0]
    te = N["SanaLoadTextEncoder"]().load("gemma-2-2b-it", "int8")["result"][0]
    assert any(n.endswith("weight_q") for n, _ in model.module.named_buffers())
    assert any(n.endswith("weight_q") for n, _ in te.encoder.model.named_buffers())
    pos = N["SanaEncodePrompt"]().encode(te, "a red fox", True, 300)[0]
    out = _sample(model, pos, pos, {"samples": torch.zeros(1, 32, 4, 4)})
    assert torch.isfinite(out["samples"]).all()
