"""SanaSample in a real ComfyUI rides the host's own sampling: with every kind of conditioning entry, a noise mask and
PAG it gives KSampler's latent on the bridged model; with a plain prompt pair it gives the pack's own sampler's
latent (the stand-in path, which the tests compare with diffusers)."""

import json

import pytest
import torch
from comfy_server import ComfyServer, comfy_dir
from fixtures_pipeline import install_model_folders
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(not (comfy_dir() / "main.py").exists(),
                                reason="ComfyUI not installed: run scripts/setup_env.sh")
NAME = "Sana_600M_1024px_diffusers"
ARGS = dict(seed=5, steps=8, cfg=4.5)  # 1000/steps whole: the simple scheduler gives the reference sigmas


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_repo):
    base = tmp_path_factory.mktemp("sampling")
    install_model_folders(tiny_repo, base / "models")
    srv = ComfyServer(base)
    yield srv
    srv.stop()


def _graph():
    """Loaders, two prompts, a negative, an empty latent, the bridged MODEL, and a right-half noise mask."""
    enc = lambda text, chi: {"class_type": "SanaEncodePrompt", "inputs": {  # noqa: E731
        "text_encoder": ["1", 1], "text": text, "use_chi": chi, "max_length": 300}}
    return {
        "1": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": NAME, "weight_dtype": "auto"}},
        "2": enc("a red boat at dawn", True),
        "3": enc("", False),
        "5": enc("a green forest in fog", True),
        "4": {"class_type": "SanaEmptyLatent", "inputs": {"width": 512, "height": 512, "batch_size": 1,
                                                           "resolution_binning": False, "model": ["1", 0]}},
        "10": {"class_type": "SanaToModel", "inputs": {"model": ["1", 0]}},
        "60": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 512, "height": 512}},
        "61": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 256, "height": 512}},
        "62": {"class_type": "MaskComposite", "inputs": {"destination": ["60", 0], "source": ["61", 0], "x": 256,
                                                          "y": 0, "operation": "add"}},
    }


def _pair(p, tag, positive, negative=("3", 0), latent=("4", 0), pag=0.0):
    """SanaSample and KSampler (sana_flow_dpm_solver, simple) on the same inputs, each saved as a latent."""
    p[f"s{tag}"] = {"class_type": "SanaSample", "inputs": {
        "model": ["1", 0], "positive": list(positive), "negative": list(negative), "latent": list(latent),
        "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": pag, "pag_adaptive_scale": 0.0,
        "pag_layers": "4", "denoise": 1.0, **ARGS}}
    model = ["10", 0]
    if pag:
        p[f"g{tag}"] = {"class_type": "SanaPAG", "inputs": {"model": ["10", 0], "pag_scale": pag,
                                                             "pag_adaptive_scale": 0.0, "pag_layers": "4"}}
        model = [f"g{tag}", 0]
    p[f"k{tag}"] = {"class_type": "KSampler", "inputs": {
        "model": model, "sampler_name": "sana_flow_dpm_solver", "scheduler": "simple", "positive": list(positive),
        "negative": list(negative), "latent_image": list(latent), "denoise": 1.0, **ARGS}}
    for kind in "sk":
        p[f"{kind}{tag}save"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"{kind}{tag}", 0],
                                                                         "filename_prefix": f"latents/{kind}{tag}"}}


def _latents(server, hist) -> dict[str, torch.Tensor]:
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + server.log()[-3000:]
    out = {}
    for node, o in hist["outputs"].items():
        for f in o.get("latents", []):
            out[node.removesuffix("save")] = load_file(server.base / "output" / f["subfolder"] / f["filename"])[
                "latent_tensor"]
    return out


def test_sana_sample_equals_ksampler_for_every_conditioning(server, tmp_path):
    p = _graph()
    cond = {
        "combine": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                    "conditioning_2": ["5", 0]}},
        "area": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["5", 0], "width": 64,
                                                                 "height": 64, "x": 0, "y": 0, "strength": 1.0}},
        "mask": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["5", 0], "mask": ["62", 0],
                                                                 "strength": 0.8, "set_cond_area": "default"}},
        "range": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["5", 0],
                                                                           "start": 0.5, "end": 1.0}},
    }
    for tag, node in cond.items():
        p[f"c{tag}"] = node
        if tag != "combine":  # regional / ranged prompts join the base prompt, as users build them
            p[f"c{tag}2"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                            "conditioning_2": [f"c{tag}", 0]}}
        _pair(p, tag, (f"c{tag}2" if tag != "combine" else f"c{tag}", 0))
    p["zero"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}}
    _pair(p, "zero", ("2", 0), negative=("zero", 0))
    _pair(p, "pag", ("2", 0), pag=2.0)
    p["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["62", 0]}}
    p["img"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["splain", 0], "tiling": "auto"}}
    p["enc"] = {"class_type": "SanaEncodeImage", "inputs": {"vae": ["1", 2], "image": ["img", 0]}}
    _pair(p, "plain", ("2", 0))
    _pair(p, "inpaint", ("5", 0), latent=("masked", 0))
    p["encsave"] = {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": "latents/enc"}}
    lat = _latents(server, server.run(p, timeout=600))

    plain = lat["splain"]
    assert plain.shape == (1, 32, 16, 16) and plain.std() > 0.1
    diffs = {tag: (lat[f"s{tag}"] - lat[f"k{tag}"]).abs().max().item()
             for tag in ("plain", "combine", "area", "mask", "range", "zero", "pag", "inpaint")}
    print("SanaSample vs KSampler, max |Δ latent|:", {k: f"{v:.1e}" for k, v in diffs.items()})
    for tag, d in diffs.items():
        s = lat[f"s{tag}"]
        assert d <= 1e-4, f"{tag}: SanaSample differs from KSampler by {d}"
        if tag != "plain":
            assert (s - plain).abs().max().item() > 1e-3, f"{tag}: the conditioning changed nothing"
    # the noise mask keeps the unmasked (left) half of the input latent, and repaints the right half
    kept, src = lat["sinpaint"][..., :8], lat["enc"][..., :8]
    assert (kept - src).abs().max().item() <= 1e-4
    assert (lat["sinpaint"][..., 8:] - lat["enc"][..., 8:]).abs().max().item() > 1e-2


def test_plain_pair_equals_the_packs_own_sampler(server, models_dir):
    """Inside ComfyUI SanaSample takes the host's path; outside it the pack's own (tested against diffusers):
    with a plain prompt pair the two agree."""
    from sana_comfy import NODE_CLASS_MAPPINGS as N

    p = _graph()
    _pair(p, "plain", ("2", 0))
    host = _latents(server, server.run(p))["splain"]
    model = N["SanaLoadPipeline"]().load(NAME, "auto")["result"]
    pos = N["SanaEncodePrompt"]().encode(model[1], "a red boat at dawn", True, 300)[0]
    neg = N["SanaEncodePrompt"]().encode(model[1], "", False, 300)[0]
    latent = N["SanaEmptyLatent"]().make(512, 512, 1, False, model[0])[0]
    own = N["SanaSample"]().sample(model[0], pos, neg, latent, sampler="flow_dpm_solver", flow_shift=0.0,
                                   pag_scale=0.0, pag_adaptive_scale=0.0, pag_layers="4", denoise=1.0,
                                   **ARGS)[0]["samples"]
    assert (own - host).abs().max().item() <= 1e-5
