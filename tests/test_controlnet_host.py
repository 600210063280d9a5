"""ControlNet inside a real ComfyUI: SanaLoadControlNet → ComfyUI's own ControlNetApplyAdvanced (control image
DC-AE-encoded through SanaToVAE's VAE) → SanaSample, and → KSampler on SanaToModel, equal diffusers'
SanaControlNetPipeline; strength 0 is the plain image; end_percent 0.5 equals a reference loop that drops the control
after half the schedule; chaining adds; missing VAE, foreign files and wrong sizes stop with one clear error."""


import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from support.comfy_server import ComfyServer
from support.controlnet import diffusers_controlnet_image, diffusers_controlnet_loop, foreign_controlnet, tiny_controlnet
from support.pipeline import TINY_TRANSFORMER

pytestmark = pytest.mark.host
NAME = "Sana_600M_1024px_diffusers"
CN = "tiny_controlnet"
STEPS, SEED, SIZE, TEXT = 4, 6, 256, "a small red house by a lake, watercolor"


@pytest.fixture(scope="module")
def server(host_base, tiny_repo):
    from diffusers import SanaTransformer2DModel

    base = host_base("cnhost")
    models = base / "models"
    net = SanaTransformer2DModel.from_pretrained(tiny_repo / "transformer")
    tiny_controlnet(net, num_layers=2, seed=3).save_pretrained(models / "controlnet" / CN)
    wide = SanaTransformer2DModel(**{**TINY_TRANSFORMER, "num_attention_heads": 4, "attention_head_dim": 32,
                                     "num_cross_attention_heads": 4, "cross_attention_head_dim": 32,
                                     "cross_attention_dim": 128})
    tiny_controlnet(wide, num_layers=2, seed=4).save_pretrained(models / "controlnet" / "wider_controlnet")
    save_file(foreign_controlnet("flux"), models / "controlnet" / "flux_controlnet.safetensors")
    g = torch.Generator().manual_seed(0)
    edges = (torch.rand(SIZE // 16, SIZE // 16, generator=g) > 0.7).float()
    edges = torch.nn.functional.interpolate(edges[None, None], size=(SIZE, SIZE))[0, 0]
    (base / "input").mkdir(parents=True)
    Image.fromarray((edges.numpy() * 255).astype(np.uint8)).convert("RGB").save(base / "input" / "edges.png")
    wider = np.full((SIZE, SIZE + 128, 3), 200, np.uint8)  # another aspect ratio: the same edges in its centre
    wider[:, 64:64 + SIZE] = (edges.numpy()[..., None] * 255).astype(np.uint8)
    Image.fromarray(wider).save(base / "input" / "edges_wide.png")
    with ComfyServer(base) as srv:
        yield srv


def _control_image(server) -> torch.Tensor:
    rgb = np.asarray(Image.open(server.base / "input" / "edges.png").convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb)[None]


def _graph(cn=CN):
    enc = lambda text, chi: {"class_type": "SanaEncodePrompt", "inputs": {  # noqa: E731
        "text_encoder": ["1", 1], "text": text, "use_chi": chi, "max_length": 300}}
    return {
        "1": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": NAME, "weight_dtype": "auto"}},
        "2": enc(TEXT, True),
        "3": enc("", False),
        "4": {"class_type": "SanaEmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                           "resolution_binning": False, "model": ["1", 0]}},
        "10": {"class_type": "SanaToModel", "inputs": {"model": ["1", 0]}},
        "11": {"class_type": "SanaToVAE", "inputs": {"vae": ["1", 2]}},
        "20": {"class_type": "SanaLoadControlNet", "inputs": {"control_net_name": cn}},
        "21": {"class_type": "LoadImage", "inputs": {"image": "edges.png", "upload": "image"}},
    }


def _apply(p, tag, strength, end=1.0, cond=("2", 0, "3", 0), cn=("20", 0), vae=True):
    p[f"a{tag}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": list(cond[:2]), "negative": list(cond[2:]), "control_net": list(cn), "image": ["21", 0],
        "strength": strength, "start_percent": 0.0, "end_percent": end}}
    if vae:
        p[f"a{tag}"]["inputs"]["vae"] = ["11", 0]
    return f"a{tag}", 0, f"a{tag}", 1


def _samplers(p, tag, cond, ksampler=True, image=False):
    pos, neg = list(cond[:2]), list(cond[2:])
    p[f"s{tag}"] = {"class_type": "SanaSample", "inputs": {
        "model": ["1", 0], "positive": pos, "negative": neg, "latent": ["4", 0], "seed": SEED, "steps": STEPS,
        "cfg": 4.5, "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": 0.0, "pag_adaptive_scale": 0.0,
        "pag_layers": "4", "denoise": 1.0}}
    kinds = "sk" if ksampler else "s"
    if ksampler:
        p[f"k{tag}"] = {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "seed": SEED, "steps": STEPS, "cfg": 4.5, "sampler_name": "sana_flow_dpm_solver",
            "scheduler": "simple", "positive": pos, "negative": neg, "latent_image": ["4", 0], "denoise": 1.0}}
    for kind in kinds:
        p[f"{kind}{tag}_lat"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"{kind}{tag}", 0],
                                                                         "filename_prefix": f"cn/{kind}{tag}"}}
        if image:
            p[f"{kind}{tag}_dec"] = {"class_type": "SanaDecode", "inputs": {
                "vae": ["1", 2], "samples": [f"{kind}{tag}", 0], "tiling": "off"}}
            p[f"{kind}{tag}_img"] = {"class_type": "SaveImage", "inputs": {"images": [f"{kind}{tag}_dec", 0],
                                                                            "filename_prefix": f"cn/{kind}{tag}"}}


def _run(server, p) -> tuple[dict, dict]:
    return server.results(server.run(p, timeout=600))


def _uint8(x: torch.Tensor) -> np.ndarray:
    return np.clip(np.asarray(x).reshape(SIZE, SIZE, 3) * 255.0, 0, 255).astype(np.uint8).astype(int)


def _diff(a, b) -> float:
    return (a - b).abs().max().item()


def test_both_samplers_equal_diffusers_and_strength_zero_is_plain(server, tiny_repo):
    p = _graph()
    _samplers(p, "cn", _apply(p, "cn", 0.7), image=True)
    _samplers(p, "zero", _apply(p, "zero", 0.0), ksampler=False)
    _samplers(p, "plain", ("2", 0, "3", 0), ksampler=False)
    lat, img = _run(server, p)
    want = _uint8(diffusers_controlnet_image(tiny_repo, server.base / "models" / "controlnet" / CN,
                                             _control_image(server), 0.7, prompt=TEXT, seed=SEED,
                                             num_inference_steps=STEPS))
    for kind in "sk":
        assert np.abs(img[f"{kind}cn"] - want).max() <= 2, kind
    assert _diff(lat["scn"], lat["kcn"]) <= 1e-4
    assert torch.equal(lat["szero"], lat["splain"])
    assert _diff(lat["scn"], lat["splain"]) > 1e-2


def test_end_percent_half_equals_a_loop_that_drops_the_control(server, tiny_repo):
    """end_percent 0.5: ComfyUI applies the control while σ ≥ the σ at 50 % of the model's schedule (0.75 with
    shift 3), as the reference loop does with diffusers' components."""
    p = _graph()
    _samplers(p, "half", _apply(p, "half", 0.7, end=0.5), image=True)
    _samplers(p, "full", _apply(p, "full", 0.7), ksampler=False)
    lat, img = _run(server, p)
    sigma_end = 3.0 * 0.5 / (1 + 2.0 * 0.5)
    want = _uint8(diffusers_controlnet_loop(tiny_repo, server.base / "models" / "controlnet" / CN,
                                            _control_image(server), 0.7, lambda i, s: s >= sigma_end, prompt=TEXT,
                                            seed=SEED, num_inference_steps=STEPS))
    for kind in "sk":
        assert np.abs(img[f"{kind}half"] - want).max() <= 2, kind
    assert _diff(lat["shalf"], lat["sfull"]) > 1e-3


def test_chained_controlnets_add_and_other_aspects_are_centre_cropped(server):
    """Two Apply ControlNet nodes in a row at s/2 each give one at s (the samples add, as ComfyUI merges them); a
    wider control image is centre-cropped to the latent's aspect ratio (here: exactly the square image)."""
    p = _graph()
    first = _apply(p, "one", 0.35)
    _samplers(p, "two", _apply(p, "two", 0.35, cond=first), ksampler=False)
    _samplers(p, "single", _apply(p, "single", 0.7), ksampler=False)
    p["22"] = {"class_type": "LoadImage", "inputs": {"image": "edges_wide.png", "upload": "image"}}
    wide = _apply(p, "wide", 0.7)
    p["awide"]["inputs"]["image"] = ["22", 0]
    _samplers(p, "wide", wide, ksampler=False)
    lat, _ = _run(server, p)
    assert _diff(lat["stwo"], lat["ssingle"]) <= 1e-4
    assert _diff(lat["swide"], lat["ssingle"]) <= 1e-5


def test_bad_inputs_fail_clearly_and_the_server_keeps_serving(server):
    p = _graph()
    _samplers(p, "novae", _apply(p, "novae", 0.7, vae=False), ksampler=False)
    err = server.error(p)
    assert "connect Sana to VAE's VAE" in err["exception_message"], err
    p = _graph(cn="flux_controlnet.safetensors")
    _samplers(p, "flux", _apply(p, "flux", 0.7), ksampler=False)
    err = server.error(p)
    assert err["node_type"] == "SanaLoadControlNet" and "this is a Flux ControlNet" in err["exception_message"]
    p = _graph(cn="wider_controlnet")
    _samplers(p, "wide", _apply(p, "wide", 0.7), ksampler=False)
    err = server.error(p)
    assert "128 wide" in err["exception_message"] and "hidden size is 16" in err["exception_message"], err
    p = _graph()
    _samplers(p, "after", _apply(p, "after", 0.7), ksampler=False)
    assert _run(server, p)[0]["safter"].std() > 0.1
