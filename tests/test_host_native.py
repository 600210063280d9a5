"""Sana as a native citizen of a real ComfyUI: KSampler / SamplerCustomAdvanced / VAEDecode / PAG patch on Sana,
equal to the Sana nodes; SanaSample riding the host's sampling equals KSampler for every conditioning entry, a noise
mask and PAG; live previews (latent2rgb and TAESANA) arrive on the websocket."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sana_comfy.sana_core.taesana import taesana_decoder
from support import ROOT
from support.comfy_server import ComfyServer, WsListener

pytestmark = pytest.mark.host
NAME = "Sana_600M_1024px_diffusers"
SPRINT = "Sana_Sprint_tiny_diffusers"


@pytest.fixture(scope="module")
def server(host_base, sprint_repo):
    base = host_base("native")
    shutil.copytree(sprint_repo, base / "models" / "diffusers" / SPRINT)
    (base / "models" / "vae_approx").mkdir(parents=True)
    # a TAESANA decoder whose every preview is pure red, so its frames are told apart from latent→RGB ones
    sd = {k: torch.zeros_like(v) for k, v in taesana_decoder().state_dict().items()}
    (last,) = [k for k, v in sd.items() if k.endswith(".bias") and v.shape == (3,)]  # the final RGB conv
    sd[last] = torch.tensor([5.0, -5.0, -5.0])
    torch.save(sd, base / "models" / "vae_approx" / "taesana_decoder.pth")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "sana_test_probe").symlink_to(ROOT / "tests" / "support" / "host_probe")
    with ComfyServer(base, ("--preview-method", "taesd")) as srv:
        yield srv


def _base(width=256, height=256, binning=True):
    return {
        "1": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": NAME, "weight_dtype": "auto"}},
        "2": {"class_type": "SanaEncodePrompt", "inputs": {"text_encoder": ["1", 1], "text": "a red boat at dawn",
                                                            "use_chi": True, "max_length": 300}},
        "3": {"class_type": "SanaEncodePrompt", "inputs": {"text_encoder": ["1", 1], "text": "", "use_chi": False,
                                                            "max_length": 300}},
        "4": {"class_type": "SanaEmptyLatent", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                           "resolution_binning": binning, "model": ["1", 0]}},
        "10": {"class_type": "SanaToModel", "inputs": {"model": ["1", 0]}},
        "11": {"class_type": "SanaToVAE", "inputs": {"vae": ["1", 2]}},
    }


def _sana_sample(node_latent="4", seed=3, steps=8, cfg=4.5, pag=0.0):
    return {"class_type": "SanaSample", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": [node_latent, 0], "seed": seed,
        "steps": steps, "cfg": cfg, "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": pag,
        "pag_adaptive_scale": 0.0, "pag_layers": "4", "denoise": 1.0}}


def _ksampler(model=("10", 0), seed=3, steps=8, cfg=4.5):
    return {"class_type": "KSampler", "inputs": {
        "model": list(model), "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "sana_flow_dpm_solver",
        "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}}


def _save(images, prefix):
    return {"class_type": "SaveImage", "inputs": {"images": list(images), "filename_prefix": prefix}}


def _decode_and_save(p, samplers, tag):
    """SanaDecode each sampler node "2i" into "3i" and save it as "4i"."""
    for src in samplers:
        i = src[1]
        p["3" + i] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": [src, 0], "tiling": "auto"}}
        p["4" + i] = _save(("3" + i, 0), f"native/{tag}3{i}")


def _outputs(server, hist) -> dict[str, np.ndarray]:
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + server.log()[-3000:]
    out = {}
    for node, o in hist["outputs"].items():
        for im in o.get("images", []):
            out[node] = np.asarray(Image.open(server.base / "output" / im["subfolder"] / im["filename"]).convert("RGB"))
    return out


def _close(a, b, tol=2):
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= tol


def test_native_nodes_and_sampler_are_registered(server):
    info = server.get("/object_info")
    for node in ("SanaToModel", "SanaToVAE", "SanaFlowDPMSolverSampler", "SanaScheduler", "SanaPAG"):
        assert node in info
    assert "sana_flow_dpm_solver" in info["KSampler"]["input"]["required"]["sampler_name"][0]


def test_ksampler_equals_sana_sample_and_vae_decode_equals_sana_decode(server):
    p = _base(200, 320)  # 200 wide, 320 high: binned to a 768x1280 latent
    p["20"] = _sana_sample()
    p["21"] = _ksampler()
    p["30"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["20", 0], "tiling": "auto"}}
    p["31"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["21", 0], "tiling": "auto"}}
    p["32"] = {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["20", 0]}}
    p["33"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["20", 0], "tiling": "off"}}
    p["34"] = {"class_type": "VAEDecodeTiled", "inputs": {"vae": ["11", 0], "samples": ["20", 0], "tile_size": 512,
                                                           "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}}
    for src, name in (("30", "40"), ("31", "41"), ("32", "42"), ("34", "44")):
        p[name] = _save((src, 0), f"native/{name}")
    out = _outputs(server, server.run(p))
    assert out["40"].shape == (320, 200, 3) and out["40"].std() > 2
    assert _close(out["41"], out["40"]), "KSampler + sana_flow_dpm_solver differs from SanaSample"
    assert out["42"].shape == (1280, 768, 3)  # VAEDecode does not crop the bin back
    uncropped = torch.from_numpy(out["42"].astype(np.float32))
    assert out["44"].shape == out["42"].shape and out["44"].std() > 2
    # VAEDecode equals SanaDecode on the same latent (crop switched off by decoding the un-binned size)
    q = _base(256, 256, binning=False)
    q["20"] = _sana_sample(seed=4)
    q["30"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["20", 0], "tiling": "auto"}}
    q["32"] = {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["20", 0]}}
    q["40"], q["42"] = _save(("30", 0), "native/q40"), _save(("32", 0), "native/q42")
    out = _outputs(server, server.run(q))
    assert np.array_equal(out["40"], out["42"])
    assert uncropped.std() > 2


def test_vae_encode_roundtrip_shapes(server):
    p = _base(binning=False)
    p["20"] = _sana_sample(steps=2)
    p["30"] = {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["20", 0]}}
    p["31"] = {"class_type": "VAEEncode", "inputs": {"vae": ["11", 0], "pixels": ["30", 0]}}
    p["32"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["31", 0], "tiling": "auto"}}
    p["40"] = _save(("32", 0), "native/enc")
    out = _outputs(server, server.run(p))
    assert out["40"].shape == (256, 256, 3)


def test_pag_patch_equals_sana_sample_pag(server):
    p = _base(256, 256, binning=False)
    p["20"] = _sana_sample(seed=8, steps=10, pag=2.0)
    p["12"] = {"class_type": "SanaPAG", "inputs": {"model": ["10", 0], "pag_scale": 2.0, "pag_adaptive_scale": 0.0,
                                                    "pag_layers": "4"}}
    p["21"] = _ksampler(model=("12", 0), seed=8, steps=10)  # steps dividing 1000: "simple" = the reference sigmas
    p["22"] = _ksampler(model=("10", 0), seed=8, steps=10)
    _decode_and_save(p, ("20", "21", "22"), "pag")
    out = _outputs(server, server.run(p))
    assert _close(out["41"], out["40"]), "PAG via SanaPAG + KSampler differs from PAG via SanaSample"
    assert not _close(out["42"], out["40"], tol=4)  # PAG really changes the image


def test_sampler_custom_advanced_with_sana_sampler_and_sigmas(server):
    p = _base(256, 256, binning=False)
    p["20"] = _sana_sample(seed=12, steps=7)
    p["13"] = {"class_type": "SanaFlowDPMSolverSampler", "inputs": {}}
    p["14"] = {"class_type": "SanaScheduler", "inputs": {"model": ["1", 0], "sampler": "flow_dpm_solver",
                                                         "steps": 7, "flow_shift": 0.0, "denoise": 1.0}}
    p["15"] = {"class_type": "CFGGuider", "inputs": {"model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                      "cfg": 4.5}}
    p["16"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 12}}
    p["21"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["16", 0], "guider": ["15", 0],
                                                                  "sampler": ["13", 0], "sigmas": ["14", 0],
                                                                  "latent_image": ["4", 0]}}
    p["17"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["10", 0], "shift": 3.0}}
    p["22"] = _ksampler(model=("17", 0), seed=12, steps=7)
    _decode_and_save(p, ("20", "21", "22"), "sca")
    out = _outputs(server, server.run(p))
    assert _close(out["41"], out["40"]), "SamplerCustomAdvanced with the Sana sampler/sigmas differs from SanaSample"
    assert out["42"].std() > 2  # a shift-node-patched Sana MODEL still samples


def test_previews_arrive_on_the_websocket(server):
    p = _base(256, 256, binning=False)
    p["20"] = _sana_sample(seed=21, steps=3)
    p["21"] = _ksampler(seed=21, steps=3)
    _decode_and_save(p, ("20", "21"), "prev")
    ws = WsListener(server)
    try:
        hist = server.wait(server.queue(copy.deepcopy(p), ws.client_id))
        frames = ws.preview_images()
    finally:
        ws.close()
    assert hist["status"]["status_str"] == "success"
    red = [f for f in frames if (f[..., 0] > 240).all() and (f[..., 1:] < 15).all()]
    assert len(red) == 3  # one TAESANA preview per SanaSample step
    assert len(frames) - len(red) == 3  # latent→RGB previews from the native KSampler steps


def test_sprint_to_model_is_refused_and_the_server_keeps_serving(server):
    p = _base(binning=False)
    p["1"]["inputs"]["pipeline"] = SPRINT
    p["21"] = _ksampler(steps=2)
    p["30"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["21", 0], "tiling": "auto"}}
    p["40"] = _save(("30", 0), "native/sprint")
    hist = server.run(p)
    assert hist["status"]["status_str"] == "error"
    err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
    assert err["node_type"] == "SanaToModel"
    assert "Sana-Sprint" in err["exception_message"] and "use Sana Sample" in err["exception_message"]
    q = _base(binning=False)
    q["20"] = _sana_sample(steps=2)
    _decode_and_save(q, ["20"], "after_sprint")
    assert _outputs(server, server.run(q))["40"].std() > 2


def test_a_missing_model_is_named_with_its_folder_at_validation(server):
    """A workflow naming a model this install lacks is refused when queued: the loader's own validation names the
    models folder (its path on this host) and the repository to get, where the host alone says 'not in list'."""
    p = _base(binning=False)
    p["1"]["inputs"]["pipeline"] = "Sana_1600M_1024px_BF16_diffusers"
    p["20"] = _sana_sample(steps=2)
    _decode_and_save(p, ["20"], "missing")
    status, body = server.post("/prompt", {"prompt": p})
    assert status == 400, body
    details = " ".join(e["details"] for e in body["node_errors"]["1"]["errors"])
    assert "'Sana_1600M_1024px_BF16_diffusers' is not in ComfyUI's models/diffusers folder" in details
    assert str(server.base / "models" / "diffusers") in details and "Efficient-Large-Model/" in details
    assert body["node_errors"]["1"]["class_type"] == "SanaLoadPipeline"


# --- SanaSample rides the host's own sampling: equal to KSampler for every conditioning, a noise mask and PAG ---

ARGS = dict(seed=5, steps=8, cfg=4.5)  # 1000/steps whole: the simple scheduler gives the reference sigmas


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


def _pair(p, tag, positive, negative=("3", 0), latent=("4", 0), pag=0.0, patched=None):
    """SanaSample and KSampler (sana_flow_dpm_solver, simple) on the same inputs, each saved as a latent;
    ``patched``: a patched MODEL, SanaSample's patched_model and KSampler's model."""
    p[f"s{tag}"] = {"class_type": "SanaSample", "inputs": {
        "model": ["1", 0], "positive": list(positive), "negative": list(negative), "latent": list(latent),
        "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": pag, "pag_adaptive_scale": 0.0,
        "pag_layers": "4", "denoise": 1.0, **ARGS}}
    model = ["10", 0]
    if patched:
        p[f"s{tag}"]["inputs"]["patched_model"] = model = list(patched)
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


def test_plain_pair_equals_the_cores_sampler(server, models_dir):
    """SanaSample in the server (the host's path) equals the core's own sampler (``pipeline.denoise``, tested
    against diffusers) with a plain prompt pair."""
    from sana_comfy.nodes import NODES as N
    from sana_comfy.nodes import conditioning
    from sana_comfy.sana_core import pipeline
    from sana_comfy.sana_core.sampling import noise_for_seed

    p = _graph()
    _pair(p, "plain", ("2", 0))
    host = _latents(server, server.run(p))["splain"]
    model = N["SanaLoadPipeline"].execute(NAME, "auto").result
    pos = N["SanaEncodePrompt"].execute(model[1], "a red boat at dawn", True, 300)[0]
    neg = N["SanaEncodePrompt"].execute(model[1], "", False, 300)[0]
    latent = N["SanaEmptyLatent"].execute(512, 512, 1, False, model[0])[0]
    samples = latent["samples"]
    opts = pipeline.SampleOptions(steps=ARGS["steps"], cfg=ARGS["cfg"], pag_layers="4")
    own = pipeline.denoise(model[0].get(), conditioning.single(pos, "positive", "test"),
                           conditioning.single(neg, "negative", "test"), samples, ARGS["seed"], opts,
                           noise=noise_for_seed(ARGS["seed"], tuple(samples.shape)))
    assert (own - host).abs().max().item() <= 1e-5


def test_mask_batch_and_all_zero_mask_as_comfyui(server):
    """A one-item mask on a two-item latent is repeated, as ComfyUI's samplers do (SanaSample equals KSampler); an
    all-zero mask gives back the input latent; neither stops the server."""
    p = _graph()
    p["4"]["inputs"]["batch_size"] = 2
    p["img"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["sref", 0], "tiling": "auto"}}
    p["enc"] = {"class_type": "SanaEncodeImage", "inputs": {"vae": ["1", 2], "image": ["img", 0]}}
    p["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["62", 0]}}
    p["zero"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["60", 0]}}
    _pair(p, "ref", ("2", 0))
    _pair(p, "batch", ("5", 0), latent=("masked", 0))
    _pair(p, "none", ("5", 0), latent=("zero", 0))
    p["encsave"] = {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": "latents/enc"}}
    lat = _latents(server, server.run(p, timeout=600))
    assert lat["sbatch"].shape[0] == 2
    assert (lat["sbatch"] - lat["kbatch"]).abs().max().item() <= 1e-4
    assert (lat["sbatch"][..., :8] - lat["enc"][..., :8]).abs().max().item() <= 1e-4  # both items keep the left half
    assert (lat["snone"] - lat["enc"]).abs().max().item() <= 1e-4


def test_model_patches_reach_sana_sample(server):
    """A MODEL patched by ComfyUI's own nodes (DifferentialDiffusion's mask function, RescaleCFG's CFG function),
    given to SanaSample as patched_model, samples as KSampler on that MODEL; each patch changes the result."""
    p = _graph()
    p["63"] = {"class_type": "SolidMask", "inputs": {"value": 0.3, "width": 512, "height": 512}}
    p["64"] = {"class_type": "MaskComposite", "inputs": {"destination": ["63", 0], "source": ["61", 0], "x": 256,
                                                          "y": 0, "operation": "add"}}  # 0.3 left, 1 right
    p["img"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["splain", 0], "tiling": "auto"}}
    p["enc"] = {"class_type": "SanaEncodeImage", "inputs": {"vae": ["1", 2], "image": ["img", 0]}}
    p["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["64", 0]}}
    p["dd"] = {"class_type": "DifferentialDiffusion", "inputs": {"model": ["10", 0], "strength": 1.0}}
    p["rc"] = {"class_type": "RescaleCFG", "inputs": {"model": ["10", 0], "multiplier": 0.7}}
    _pair(p, "plain", ("2", 0))
    _pair(p, "soft", ("5", 0), latent=("masked", 0))
    _pair(p, "dd", ("5", 0), latent=("masked", 0), patched=("dd", 0))
    _pair(p, "five", ("5", 0))
    _pair(p, "rc", ("5", 0), patched=("rc", 0))
    lat = _latents(server, server.run(p, timeout=600))
    for tag, unpatched in (("dd", "soft"), ("rc", "five")):
        assert (lat[f"s{tag}"] - lat[f"k{tag}"]).abs().max().item() <= 1e-4, tag
        assert (lat[f"s{tag}"] - lat[f"s{unpatched}"]).abs().max().item() > 1e-3, f"{tag} changed nothing"


def test_patched_model_of_another_model_and_foreign_conditioning_are_refused(server):
    """patched_model from another Sana model, and a combined list holding another text encoder's conditioning,
    each stop with one clear error (SanaSample and KSampler alike); the server keeps serving."""
    def error(p):
        hist = server.run(p)
        assert hist["status"]["status_str"] == "error"
        return [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]

    p = _graph()
    p["t"] = {"class_type": "SanaLoadTransformer", "inputs": {"model_name": NAME, "weight_dtype": "auto"}}
    p["other"] = {"class_type": "SanaToModel", "inputs": {"model": ["t", 0]}}
    _pair(p, "x", ("2", 0), patched=("other", 0))
    del p["kx"], p["kxsave"]
    err = error(p)
    assert err["node_type"] == "SanaSample" and "not Sana to MODEL's MODEL of this Sana model" in err[
        "exception_message"]
    for sampler in "sk":
        p = _graph()
        p["clip"] = {"class_type": "SanaTestForeignConditioning", "inputs": {"width": 768}}
        p["mix"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                     "conditioning_2": ["clip", 0]}}
        _pair(p, "mix", ("mix", 0))
        other = "k" if sampler == "s" else "s"
        del p[f"{other}mix"], p[f"{other}mixsave"]
        err = error(p)
        assert err["node_type"] == {"s": "SanaSample", "k": "KSampler"}[sampler]
        assert "768 wide" in err["exception_message"], err["exception_message"]
        assert "another text encoder" in err["exception_message"], err["exception_message"]
    q = _graph()
    _pair(q, "after", ("2", 0))
    assert _latents(server, server.run(q))["safter"].std() > 0.1
