"""LoRA inside a real ComfyUI: the pack's loaders and ComfyUI's own LoraLoaderModelOnly on SanaToModel give
diffusers' image; every layout the same latent; strength 0, stacking and removal; LoHa, LoKr and DoRA through the
host's adapters; a Gemma part on the text encoder; 8-bit storage; bad files stop with one clear error."""


import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.comfy_server import ComfyServer
from support.inprocess import point_models
from support.lora import (
    LAYOUTS,
    dense_lora,
    diffusers_lora_image,
    dora_lora,
    foreign_lora,
    gemma_lora,
    loha_lora,
    lokr_lora,
    mismatched_lora,
    peft_lora,
    save_layout,
    save_lora,
)
from support.pipeline import wide_transformer

pytestmark = pytest.mark.host
NAME = "Sana_600M_1024px_diffusers"
WIDE = "Sana_wide_int8_diffusers"  # wide enough that int8 storage takes the LoRA'd layers
ALPHA, STEPS, SEED, SIZE, TEXT = 8.0, 4, 5, 256, "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def server(host_base, tiny_repo):
    import diffusers

    base = host_base("lorahost")
    models = base / "models"
    pipe = diffusers.SanaPipeline.from_pretrained(tiny_repo, torch_dtype=torch.float32)
    net = pipe.transformer
    loras = models / "loras"
    loras.mkdir(exist_ok=True)
    sd = peft_lora(net, rank=4, seed=2)
    for layout in LAYOUTS:
        save_layout(sd, loras / f"tiny_{layout}.safetensors", layout, alpha=ALPHA)
    for kind, make in (("loha", loha_lora), ("lokr", lokr_lora), ("dora", dora_lora)):
        adapter, deltas = make(net, seed=3)
        save_lora(adapter, loras / f"tiny_{kind}.safetensors")
        dense_lora(deltas, loras / f"tiny_{kind}_dense.safetensors")
    save_lora({**sd, **gemma_lora(pipe.text_encoder, seed=4)}, loras / "tiny_with_te.safetensors")
    save_lora(foreign_lora("sdxl"), loras / "sdxl_style.safetensors")
    save_lora(mismatched_lora(), loras / "bigger_sana.safetensors")
    save_lora({**load_file(loras / "tiny_onetrainer.safetensors"), **foreign_lora("flux")},
              loras / "partly_sana.safetensors")
    (loras / "truncated.safetensors").write_bytes((loras / "tiny_kohya.safetensors").read_bytes()[:-64])
    # a wider transformer for 8-bit storage (layers ≥ 4096 weights), with its own LoRA
    wide = wide_transformer()
    wide.save_pretrained(models / "diffusion_models" / WIDE)
    save_layout(peft_lora(wide, rank=4, seed=8), loras / "wide_peft.safetensors", "peft", alpha=ALPHA)
    with ComfyServer(base) as srv:
        yield srv


def _graph(loader=NAME, dtype="auto"):
    enc = lambda text, chi: {"class_type": "SanaEncodePrompt", "inputs": {  # noqa: E731
        "text_encoder": ["1", 1], "text": text, "use_chi": chi, "max_length": 300}}
    return {
        "1": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": loader, "weight_dtype": dtype}},
        "2": enc(TEXT, True),
        "3": enc("", False),
        "4": {"class_type": "SanaEmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                           "resolution_binning": False, "model": ["1", 0]}},
        "10": {"class_type": "SanaToModel", "inputs": {"model": ["1", 0]}},
    }


def _sana(p, tag, model, positive=("2", 0), pag_layers="4", image=False):
    """SanaSample on ``model`` saved as latent ``tag`` (and decoded, saved as image ``tag``)."""
    p[f"s{tag}"] = {"class_type": "SanaSample", "inputs": {
        "model": list(model), "positive": list(positive), "negative": ["3", 0], "latent": ["4", 0], "seed": SEED,
        "steps": STEPS, "cfg": 4.5, "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": 0.0,
        "pag_adaptive_scale": 0.0, "pag_layers": pag_layers, "denoise": 1.0}}
    _outputs(p, tag, image)


def _ksampler(p, tag, model, image=False):
    p[f"s{tag}"] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "seed": SEED, "steps": STEPS, "cfg": 4.5, "sampler_name": "sana_flow_dpm_solver",
        "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}}
    _outputs(p, tag, image)


def _outputs(p, tag, image):
    p[f"{tag}_lat"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"s{tag}", 0],
                                                               "filename_prefix": f"lora/{tag}"}}
    if image:
        p[f"{tag}_dec"] = {"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": [f"s{tag}", 0],
                                                                   "tiling": "off"}}
        p[f"{tag}_img"] = {"class_type": "SaveImage", "inputs": {"images": [f"{tag}_dec", 0],
                                                                  "filename_prefix": f"lora/{tag}"}}


def _only(p, name, strength=0.6, model=("1", 0)):
    node = f"l_{name}_{strength}_{model[0]}"
    p[node] = {"class_type": "SanaLoraLoaderModelOnly", "inputs": {"model": list(model), "lora_name": name,
                                                                     "strength_model": strength}}
    return node, 0


def _host_only(p, name, strength=0.6):
    node = f"h_{name}_{strength}"
    p[node] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": name,
                                                                 "strength_model": strength}}
    return node, 0


def _run(server, p) -> tuple[dict, dict]:
    return server.results(server.run(p, timeout=600))


def _diff(a, b) -> float:
    return (a - b).abs().max().item()


def test_loras_equal_diffusers_through_both_samplers_and_every_layout(server, tiny_repo):
    """SanaLoraLoaderModelOnly → SanaSample and ComfyUI's LoraLoaderModelOnly on SanaToModel → KSampler give
    diffusers' image at the same strength (2/255); every layout gives the same latent."""
    p = _graph()
    _sana(p, "plain", ("1", 0), image=True)
    _sana(p, "peft", _only(p, "tiny_peft.safetensors"), image=True)
    _ksampler(p, "host", _host_only(p, "tiny_onetrainer.safetensors"), image=True)  # alpha as a key: host reads it
    for layout in LAYOUTS[1:]:
        _sana(p, layout, _only(p, f"tiny_{layout}.safetensors"))
    p["spatched"] = {"class_type": "SanaSample", "inputs": {  # ComfyUI's loader reaching SanaSample
        **p["speft"]["inputs"], "model": ["1", 0], "patched_model": list(_host_only(p, "tiny_kohya.safetensors"))}}
    _outputs(p, "patched", False)
    lat, img = _run(server, p)
    want = diffusers_lora_image(tiny_repo, server.base / "models" / "loras" / "tiny_peft.safetensors", 0.6,
                                prompt=TEXT, negative_prompt="", seed=SEED, num_inference_steps=STEPS,
                                guidance_scale=4.5, height=SIZE, width=SIZE)
    want = np.clip(want.reshape(SIZE, SIZE, 3).numpy() * 255.0, 0, 255).astype(np.uint8).astype(int)
    for tag in ("peft", "host"):
        assert np.abs(img[tag] - want).max() <= 2, tag
    assert np.abs(img["plain"] - want).max() > 4  # the LoRA shows
    print("LoRA latents, max |Δ| to the PEFT file's:", {t: f"{_diff(lat[t], lat['peft']):.1e}" for t in lat})
    for tag in (*LAYOUTS[1:], "host", "patched"):
        assert _diff(lat[tag], lat["peft"]) <= 1e-4, tag


def test_strength_zero_stacking_and_removal(server):
    """Strength 0 is the plain latent bit for bit; two loaders at s/2 equal one at s; after LoRA runs the shared
    weights are restored: the plain model gives its first latent again, bit for bit."""
    p = _graph()
    _sana(p, "before", ("1", 0))
    lat0, _ = _run(server, p)
    p = _graph()
    _sana(p, "zero", _only(p, "tiny_peft.safetensors", 0.0))
    _sana(p, "one", _only(p, "tiny_peft.safetensors", 0.6))
    _sana(p, "two", _only(p, "tiny_kohya.safetensors", 0.3, model=_only(p, "tiny_peft.safetensors", 0.3)))
    _ksampler(p, "hzero", _host_only(p, "tiny_kohya.safetensors", 0.0))
    lat, _ = _run(server, p)
    assert torch.equal(lat["zero"], lat0["before"])
    assert _diff(lat["one"], lat["two"]) <= 1e-4 and _diff(lat["one"], lat0["before"]) > 1e-2
    p = _graph()
    _sana(p, "after", ("1", 0), pag_layers="3")  # unused with PAG off: a new cache key, the same model and result
    lat2, _ = _run(server, p)
    assert torch.equal(lat2["after"], lat0["before"])


def test_loha_lokr_dora_through_the_hosts_adapters(server):
    p = _graph()
    for kind in ("loha", "lokr", "dora"):
        _sana(p, kind, _only(p, f"tiny_{kind}.safetensors", 1.0))
        _sana(p, f"{kind}_dense", _only(p, f"tiny_{kind}_dense.safetensors", 1.0))
    _ksampler(p, "host_loha", _host_only(p, "tiny_loha.safetensors", 1.0))
    _sana(p, "plain", ("1", 0))
    lat, _ = _run(server, p)
    for kind in ("loha", "lokr", "dora"):
        assert _diff(lat[kind], lat[f"{kind}_dense"]) <= 1e-4, kind
        assert _diff(lat[kind], lat["plain"]) > 1e-2, kind
    assert _diff(lat["host_loha"], lat["loha"]) <= 1e-4


def test_text_encoder_part_and_int8_match_the_packs_own_path(server, monkeypatch):
    """SanaLoraLoader puts a file's Gemma part on the text encoder (the conditioning changes), and 8-bit weights take
    a LoRA through ComfyUI's patcher: each latent of the server equals the same nodes called in-process on the same
    files; after them the 8-bit base comes back bit for bit."""
    from sana_comfy.nodes import NODES as N

    p = _graph()
    p["both"] = {"class_type": "SanaLoraLoader", "inputs": {"model": ["1", 0], "text_encoder": ["1", 1],
                                                            "lora_name": "tiny_with_te.safetensors",
                                                            "strength_model": 0.6, "strength_text_encoder": 1.0}}
    p["2"]["inputs"]["text_encoder"] = ["both", 1]
    _sana(p, "te", ("both", 0))
    lat, _ = _run(server, p)
    q = _graph(dtype="fp32")
    q["t"] = {"class_type": "SanaLoadTransformer", "inputs": {"model_name": WIDE, "weight_dtype": "int8"}}
    q["4"]["inputs"]["model"] = ["t", 0]
    _sana(q, "int8_plain", ("t", 0))
    _sana(q, "int8", _only(q, "wide_peft.safetensors", 0.8, model=("t", 0)))
    lat8, _ = _run(server, q)
    q = _graph(dtype="fp32")
    q["t"] = {"class_type": "SanaLoadTransformer", "inputs": {"model_name": WIDE, "weight_dtype": "int8"}}
    _sana(q, "int8_after", ("t", 0), pag_layers="3")
    lat8b, _ = _run(server, q)
    assert torch.equal(lat8b["int8_after"], lat8["int8_plain"])

    point_models(monkeypatch, server.base / "models")
    model, te, _, _ = N["SanaLoadPipeline"].execute(NAME, "auto").result

    def sample(m, enc):
        pos = N["SanaEncodePrompt"].execute(enc, TEXT, True, 300)[0]
        neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
        latent = N["SanaEmptyLatent"].execute(SIZE, SIZE, 1, False, m)[0]
        return N["SanaSample"].execute(m, pos, neg, latent, SEED, STEPS, 4.5, "flow_dpm_solver", 0.0, 0.0, 0.0,
                                        "4", 1.0)[0]["samples"]

    m2, te2 = N["SanaLoraLoader"].execute(model, te, "tiny_with_te.safetensors", 0.6, 1.0)
    assert te2 is not te
    own = sample(m2, te2)
    assert _diff(own, lat["te"]) <= 1e-4
    assert _diff(own, sample(m2, te)) > 1e-3  # the text encoder's part changed the conditioning
    (wide,) = N["SanaLoadTransformer"].execute(WIDE, "int8").result
    (wide_lora,) = N["SanaLoraLoaderModelOnly"].execute(wide, "wide_peft.safetensors", 0.8)
    own8 = sample(wide_lora, te)
    assert _diff(own8, lat8["int8"]) <= 1e-4
    assert _diff(lat8["int8"], lat8["int8_plain"]) > 1e-2


def test_bad_loras_fail_clearly_and_the_server_keeps_serving(server):
    cases = {
        "sdxl_style.safetensors": ("0 of its", "SDXL"),
        "bigger_sana.safetensors": ("does not fit this Sana model", "is for a ("),
        "truncated.safetensors": ("truncated.safetensors", "truncated"),
    }
    for name, words in cases.items():
        p = _graph()
        _sana(p, "bad", _only(p, name))
        err = server.error(p)
        assert err["node_type"] == "SanaLoraLoaderModelOnly", err
        for w in words:
            assert w in err["exception_message"], (name, err["exception_message"])
    p = _graph()
    _sana(p, "partly", _only(p, "partly_sana.safetensors"))
    _sana(p, "whole", _only(p, "tiny_onetrainer.safetensors"))
    lat, _ = _run(server, p)
    assert torch.equal(lat["partly"], lat["whole"])  # the Sana part applied, the rest skipped with a warning
    assert "name no layer of this Sana model and were skipped" in server.log()
